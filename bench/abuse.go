package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/client/e2ee"
	"github.com/courier-im/courier/protos/courierpb"
)

// AbuseKinds are the hostile clients Abuse can run, each at full speed
// from one client address (issue #20's classes): "none" is the baseline.
var AbuseKinds = []string{"none", "receipts", "identity", "unknown-ids", "slow-readers", "idle-http", "bundles", "register", "send-flood", "bad-frames"}

// AbuseConfig describes a run of Abuse.
type AbuseConfig struct {
	// URL of one gateway (http:// or ws://).
	URL string
	// Kinds run one after another (default AbuseKinds).
	Kinds []string
	// Duration of each kind (default 15s).
	Duration time.Duration
	// VictimRate is the victim pair's messages per second (default 50).
	VictimRate float64
	// Workers is the abuser's connections or request loops (default 8).
	Workers int
	// AbuserAddr is the local address the abuser connects from (default
	// 127.0.0.2): a server run with --limit-loopback limits it as the
	// client it is, apart from the victims on 127.0.0.1. Its accounts are
	// registered from 127.0.1.x, one per address, so the abuse starts with
	// the address's registration budget untouched.
	AbuserAddr string
	// ServerPIDs are local server processes whose VmRSS is sampled.
	ServerPIDs []int
	// RSSBudget is the most the servers may hold (default 1 GiB).
	RSSBudget uint64
	Logger    *slog.Logger
}

// AbuseRow is one kind's outcome: the victim's delivery latency under it,
// what the abuser's requests got, and the servers' peak memory.
type AbuseRow struct {
	Kind string `json:"kind"`
	// VictimSent and VictimDelivered count the victim's messages sent
	// during the kind and delivered (send → receiver's SDK).
	VictimSent      int64   `json:"victim_sent"`
	VictimDelivered int64   `json:"victim_delivered"`
	P50Ms           float64 `json:"p50_ms"`
	P99Ms           float64 `json:"p99_ms"`
	MaxMs           float64 `json:"max_ms"`
	// P99Ratio is P99Ms over the "none" row's (0 without one).
	P99Ratio float64 `json:"p99_ratio"`
	// Abuser requests: made, answered as asked, refused (rate limits,
	// errors, closes), and failed at the transport.
	Requests int64 `json:"requests"`
	Served   int64 `json:"served"`
	Refused  int64 `json:"refused"`
	Failed   int64 `json:"failed"`
	// PeakRSSBytes is the servers' highest VmRSS sampled during the kind.
	PeakRSSBytes uint64 `json:"peak_rss_bytes"`
	// ServerCPUPct is the servers' CPU time over the kind's wall time, in
	// percent of one core: what the abuse cost the server, apart from what
	// the abuser itself takes of a machine it shares.
	ServerCPUPct float64 `json:"server_cpu_pct"`
	Note         string  `json:"note,omitempty"`
}

// AbuseReport is every kind's row.
type AbuseReport struct {
	VictimRate     float64    `json:"victim_rate"`
	DurationSec    float64    `json:"duration_sec"`
	Workers        int        `json:"workers"`
	RSSBudgetBytes uint64     `json:"rss_budget_bytes"`
	Rows           []AbuseRow `json:"rows"`
}

// OK reports whether every kind kept the victim's p99 within 2x the
// baseline and the servers within the RSS budget.
func (r *AbuseReport) OK() bool { return r.Problem() == "" }

// Problem names the first kind that broke a target.
func (r *AbuseReport) Problem() string {
	for _, row := range r.Rows {
		switch {
		case row.VictimDelivered < row.VictimSent:
			return fmt.Sprintf("%s: the victim got %d of %d messages", row.Kind, row.VictimDelivered, row.VictimSent)
		case row.P99Ratio > 2:
			return fmt.Sprintf("%s: victim p99 %.1f ms is %.1fx the baseline", row.Kind, row.P99Ms, row.P99Ratio)
		case r.RSSBudgetBytes > 0 && row.PeakRSSBytes > r.RSSBudgetBytes:
			return fmt.Sprintf("%s: server RSS %d MiB over the %d MiB budget", row.Kind, row.PeakRSSBytes>>20, r.RSSBudgetBytes>>20)
		}
	}
	return ""
}

// WriteText prints the table.
func (r *AbuseReport) WriteText(w io.Writer) {
	fmt.Fprintf(w, "victim: 1:1 pair at %.0f msg/s; abuser: %d workers from one address, %.0fs per kind; RSS budget %d MiB\n",
		r.VictimRate, r.Workers, r.DurationSec, r.RSSBudgetBytes>>20)
	fmt.Fprintf(w, "%-13s %8s %8s %8s %7s %9s %8s %9s %7s %8s %8s  %s\n", "abuse", "p50 ms", "p99 ms", "max ms", "p99 x", "requests", "served", "refused", "failed", "RSS MiB", "srv CPU", "note")
	for _, row := range r.Rows {
		fmt.Fprintf(w, "%-13s %8.2f %8.2f %8.2f %7.2f %9d %8d %9d %7d %8d %7.0f%%  %s\n", row.Kind, row.P50Ms, row.P99Ms, row.MaxMs, row.P99Ratio,
			row.Requests, row.Served, row.Refused, row.Failed, row.PeakRSSBytes>>20, row.ServerCPUPct, row.Note)
	}
	if p := r.Problem(); p != "" {
		fmt.Fprintf(w, "NOT OK: %s\n", p)
	}
}

func (c AbuseConfig) withDefaults() (AbuseConfig, error) {
	if c.URL == "" {
		return c, errors.New("bench abuse: a server URL is required")
	}
	if len(c.Kinds) == 0 {
		c.Kinds = AbuseKinds
	}
	for _, k := range c.Kinds {
		if !isAbuseKind(k) {
			return c, fmt.Errorf("bench abuse: unknown kind %q (kinds: %s)", k, strings.Join(AbuseKinds, ", "))
		}
	}
	c.Duration = orDefault(c.Duration, 15*time.Second)
	c.VictimRate = orDefault(c.VictimRate, 50)
	c.Workers = orDefault(c.Workers, 8)
	if c.AbuserAddr == "" {
		c.AbuserAddr = "127.0.0.2"
	}
	if c.RSSBudget == 0 {
		c.RSSBudget = 1 << 30
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

func isAbuseKind(k string) bool {
	for _, a := range AbuseKinds {
		if a == k {
			return true
		}
	}
	return false
}

// Abuse runs a victim pair (alice sends to bob at VictimRate over the SDK,
// from 127.0.0.1) through each kind of abuse in turn and reports the
// victim's latency, the abuser's answers and the servers' peak RSS.
func Abuse(ctx context.Context, cfg AbuseConfig) (*AbuseReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	base, err := client.BaseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("bench abuse: %w", err)
	}
	v, err := startVictims(ctx, base, cfg.Logger)
	if err != nil {
		return nil, err
	}
	defer v.close()
	ab := &abuser{cfg: cfg, base: base, victim: v.bob.UserID(), hc: httpFrom(cfg.AbuserAddr, cfg.Workers*2)}
	defer ab.hc.CloseIdleConnections()
	rep := &AbuseReport{VictimRate: cfg.VictimRate, DurationSec: cfg.Duration.Seconds(), Workers: cfg.Workers, RSSBudgetBytes: cfg.RSSBudget}
	var baseline float64
	for _, kind := range cfg.Kinds {
		row, err := ab.runKind(ctx, v, kind)
		if err != nil {
			return rep, fmt.Errorf("bench abuse %s: %w", kind, err)
		}
		if kind == "none" {
			baseline = row.P99Ms
		}
		if baseline > 0 {
			row.P99Ratio = row.P99Ms / baseline
		}
		rep.Rows = append(rep.Rows, row)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

// victims are alice and bob: alice sends stamped messages, bob's SDK
// records how long each took.
type victims struct {
	alice, bob *client.Client
	mu         sync.Mutex
	hist       *hdrhistogram.Histogram
	delivered  int64
	epoch      uint32 // messages of older kinds are not counted
	stop       context.CancelFunc
	done       chan struct{}
}

func startVictims(ctx context.Context, base string, log *slog.Logger) (*victims, error) {
	prefix := runPrefix()
	opts := []client.Option{client.WithLogger(log)}
	ac, err := client.Register(ctx, base, prefix+"-alice", opts...)
	if err != nil {
		return nil, fmt.Errorf("bench abuse: register the victims: %w", err)
	}
	bc, err := client.Register(ctx, base, prefix+"-bob", opts...)
	if err != nil {
		return nil, fmt.Errorf("bench abuse: register the victims: %w", err)
	}
	v := &victims{hist: newHistogram(), done: make(chan struct{})}
	if v.alice, err = client.Dial(ctx, ac, opts...); err != nil {
		return nil, fmt.Errorf("bench abuse: connect alice: %w", err)
	}
	if v.bob, err = client.Dial(ctx, bc, opts...); err != nil {
		_ = v.alice.Close()
		return nil, fmt.Errorf("bench abuse: connect bob: %w", err)
	}
	rctx, stop := context.WithCancel(ctx)
	v.stop = stop
	go v.receive(rctx, ac.UserID)
	return v, nil
}

func (v *victims) receive(ctx context.Context, aliceID string) {
	defer close(v.done)
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-v.bob.Entries():
			if !ok {
				return
			}
			if !e.IsMessage() || e.FromUserID != aliceID || len(e.Ciphertext) < 12 {
				continue
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(e.Ciphertext)))
			epoch := binary.BigEndian.Uint32(e.Ciphertext[8:])
			v.mu.Lock()
			if epoch == v.epoch {
				_ = v.hist.RecordValue(time.Since(sent).Microseconds())
				v.delivered++
			}
			v.mu.Unlock()
		}
	}
}

func (v *victims) close() {
	v.stop()
	<-v.done
	_ = v.alice.Close()
	_ = v.bob.Close()
}

// sendFor sends at rate until ctx ends and returns how many it sent.
func (v *victims) sendFor(ctx context.Context, rate float64, epoch uint32) int64 {
	var sent int64
	pace := openLoop(time.Now(), rate, 0, 1)
	var wg sync.WaitGroup
	for k := 0; ; k++ {
		if _, ok := pace.wait(ctx, k); !ok {
			break
		}
		msg := make([]byte, 64)
		binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint32(msg[8:], epoch)
		p := v.alice.SendAsync(context.Background(), v.bob.UserID(), msg)
		sent++
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = p.Result() }()
	}
	wg.Wait()
	return sent
}

// abuser is one hostile client: its HTTP requests and sockets come from
// AbuserAddr.
type abuser struct {
	cfg    AbuseConfig
	base   string
	victim string
	hc     *http.Client
	regSeq atomic.Int64

	requests, served, refused, failed atomic.Int64
}

func (ab *abuser) runKind(ctx context.Context, v *victims, kind string) (AbuseRow, error) {
	row := AbuseRow{Kind: kind}
	prep, err := ab.prepare(ctx, kind)
	if err != nil {
		return row, err
	}
	defer prep.close()
	ab.requests.Store(0)
	ab.served.Store(0)
	ab.refused.Store(0)
	ab.failed.Store(0)
	v.mu.Lock()
	v.epoch++
	epoch := v.epoch
	v.hist = newHistogram()
	v.delivered = 0
	v.mu.Unlock()
	ab.settle(ctx)
	rss := startRSSSampler(ab.cfg.ServerPIDs, 100*time.Millisecond)
	cpu0, _ := serversCPU(ab.cfg.ServerPIDs)
	start := time.Now()
	kctx, cancel := context.WithTimeout(ctx, ab.cfg.Duration)
	var wg sync.WaitGroup
	if kind != "none" {
		for w := range ab.cfg.Workers {
			wg.Add(1)
			go func() { defer wg.Done(); prep.work(kctx, w) }()
		}
	}
	row.VictimSent = v.sendFor(kctx, ab.cfg.VictimRate, epoch)
	cancel()
	wg.Wait()
	if cpu1, err := serversCPU(ab.cfg.ServerPIDs); err == nil && len(ab.cfg.ServerPIDs) > 0 {
		row.ServerCPUPct = 100 * (cpu1 - cpu0).Seconds() / time.Since(start).Seconds()
	}
	// The last messages' delivery, then the figures.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		d := v.delivered
		v.mu.Unlock()
		if d >= row.VictimSent {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	peak := rss.stop()
	v.mu.Lock()
	row.VictimDelivered = v.delivered
	row.P50Ms = float64(v.hist.ValueAtQuantile(50)) / 1000
	row.P99Ms = float64(v.hist.ValueAtQuantile(99)) / 1000
	row.MaxMs = float64(v.hist.Max()) / 1000
	v.mu.Unlock()
	if peak != nil {
		row.PeakRSSBytes = peak.PeakBytes
	}
	row.Requests, row.Served, row.Refused, row.Failed = ab.requests.Load(), ab.served.Load(), ab.refused.Load(), ab.failed.Load()
	row.Note = prep.note
	return row, nil
}

// settle waits (up to 30 s) until the servers are nearly idle, so a kind
// does not inherit the work the previous one left (a store compacting
// what a flood wrote).
func (ab *abuser) settle(ctx context.Context) {
	if len(ab.cfg.ServerPIDs) == 0 {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		a, err := serversCPU(ab.cfg.ServerPIDs)
		sleep(ctx, 500*time.Millisecond)
		b, err2 := serversCPU(ab.cfg.ServerPIDs)
		if err != nil || err2 != nil || b-a < 50*time.Millisecond {
			return
		}
	}
}

// prepared is a kind ready to run: work is one worker's loop, close
// releases what the kind set up.
type prepared struct {
	work  func(ctx context.Context, worker int)
	close func()
	note  string
}

func (ab *abuser) prepare(ctx context.Context, kind string) (*prepared, error) {
	nop := func() {}
	switch kind {
	case "none":
		return &prepared{work: func(context.Context, int) {}, close: nop}, nil
	case "receipts":
		// A stranger marks made-up messages of the victim read.
		return ab.socketKind(ctx, 1, func(reqID uint64, _ int) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{
				PeerUserId: ab.victim, ClientMsgIds: []string{randHex(8)}}}}
		}, "read receipts for made-up messages, from a stranger")
	case "unknown-ids":
		return ab.socketKind(ctx, 1, func(reqID uint64, _ int) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
				ClientMsgId: randHex(8), ToUserId: randUUID(), Ciphertext: []byte("x")}}}
		}, "sends to random user ids")
	case "send-flood":
		// To a third user: spam into the victim's own inbox delays its
		// messages by however much of it the limits let through (the
		// per-user burst), which measures the policy, not the server.
		target, _, err := ab.accountWithID(ctx)
		if err != nil {
			return nil, err
		}
		return ab.socketKind(ctx, 1, func(reqID uint64, _ int) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
				ClientMsgId: randHex(8), ToUserId: target, Ciphertext: []byte("spam")}}}
		}, "messages to a third user from one account")
	case "slow-readers":
		return ab.slowReaders(ctx)
	case "identity":
		return ab.identity(ctx)
	case "idle-http":
		return ab.idleHTTP(ctx)
	case "bundles":
		tok, err := ab.account(ctx)
		if err != nil {
			return nil, err
		}
		return &prepared{close: nop, note: "GET /v1/keys/{victim} by a stranger", work: func(ctx context.Context, _ int) {
			for ctx.Err() == nil {
				ab.httpCall(ctx, http.MethodGet, "/v1/keys/"+ab.victim, tok, nil)
			}
		}}, nil
	case "register":
		return &prepared{close: nop, note: "POST /v1/register, fresh handles", work: func(ctx context.Context, _ int) {
			for ctx.Err() == nil {
				ab.httpCall(ctx, http.MethodPost, "/v1/register", "", map[string]string{"handle": "flood-" + randHex(6)})
			}
		}}, nil
	case "bad-frames":
		return ab.badFrames(ctx)
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

// socketKind runs, on each worker's own socket of one account, frames
// made by frame as fast as the server takes them; a reader counts the
// answers. Each worker keeps its socket; a closed one is reopened.
func (ab *abuser) socketKind(ctx context.Context, accounts int, frame func(reqID uint64, worker int) *courierpb.ClientFrame, note string) (*prepared, error) {
	toks := make([]string, accounts)
	for i := range toks {
		var err error
		if toks[i], err = ab.account(ctx); err != nil {
			return nil, err
		}
	}
	return &prepared{close: func() {}, note: note, work: func(ctx context.Context, w int) {
		tok := toks[w%len(toks)]
		for ctx.Err() == nil {
			c, err := ab.dialWS(ctx, tok)
			if err != nil {
				ab.failed.Add(1)
				sleep(ctx, 50*time.Millisecond)
				continue
			}
			stop := context.AfterFunc(ctx, func() { _ = c.Close() })
			done := make(chan struct{})
			go func() { defer close(done); ab.countAnswers(c) }()
			for reqID := uint64(1); ctx.Err() == nil; reqID++ {
				b, _ := proto.Marshal(frame(reqID, w))
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := c.WriteMessage(websocket.BinaryMessage, b); err != nil {
					break
				}
				ab.requests.Add(1)
			}
			_ = c.Close()
			stop()
			<-done
		}
	}}, nil
}

// countAnswers reads c until it closes: an Error frame is a refusal,
// anything else an answer served.
func (ab *abuser) countAnswers(c *websocket.Conn) {
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				ab.refused.Add(1)
			}
			return
		}
		var f courierpb.ServerFrame
		if proto.Unmarshal(b, &f) != nil || f.ReqId == 0 {
			continue
		}
		if f.GetError() != nil {
			ab.refused.Add(1)
		} else {
			ab.served.Add(1)
		}
	}
}

// slowReaders: 20 accounts connect and never read while the workers flood
// them with 64 KiB messages.
func (ab *abuser) slowReaders(ctx context.Context) (*prepared, error) {
	const readers = 20
	var ids []string
	var conns []*websocket.Conn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}
	for range readers {
		id, tok, err := ab.accountWithID(ctx)
		if err != nil {
			closeAll()
			return nil, err
		}
		c, err := ab.dialWS(ctx, tok)
		if err != nil {
			closeAll()
			return nil, err
		}
		ids, conns = append(ids, id), append(conns, c)
	}
	payload := make([]byte, 64<<10)
	p, err := ab.socketKind(ctx, 4, func(reqID uint64, w int) *courierpb.ClientFrame {
		return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
			ClientMsgId: randHex(8), ToUserId: ids[int(reqID+uint64(w))%readers], Ciphertext: payload}}}
	}, "64 KiB messages to 20 accounts that never read")
	if err != nil {
		closeAll()
		return nil, err
	}
	p.close = closeAll
	return p, nil
}

// identity: a stranger adds the victim as a contact and uploads new
// identity keys over and over.
func (ab *abuser) identity(ctx context.Context) (*prepared, error) {
	tok, err := ab.account(ctx)
	if err != nil {
		return nil, err
	}
	c, err := ab.dialWS(ctx, tok)
	if err != nil {
		return nil, err
	}
	b, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: []string{ab.victim}}}})
	_ = c.WriteMessage(websocket.BinaryMessage, b)
	uploads, err := keyUploads(16)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return &prepared{close: func() { _ = c.Close() }, note: "PUT /v1/keys with new identity keys, victim added as a contact", work: func(ctx context.Context, w int) {
		for i := w; ctx.Err() == nil; i++ {
			ab.httpCall(ctx, http.MethodPut, "/v1/keys", tok, uploads[i%len(uploads)])
		}
	}}, nil
}

// idleHTTP opens keep-alive connections, one request each, and keeps them
// silent: as many as the server lets one address hold (up to 1,000).
func (ab *abuser) idleHTTP(ctx context.Context) (*prepared, error) {
	var mu sync.Mutex
	var conns []net.Conn
	u, _ := url.Parse(ab.base)
	return &prepared{note: "silent keep-alive connections (up to 1,000)", close: func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}, work: func(ctx context.Context, w int) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ab.cfg.AbuserAddr)}, Timeout: 2 * time.Second}
		for i := w; i < 1000 && ctx.Err() == nil; i += ab.cfg.Workers {
			ab.requests.Add(1)
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				ab.failed.Add(1)
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: courier\r\n\r\n")
			buf := make([]byte, 512)
			if _, rerr := c.Read(buf); err != nil || rerr != nil {
				ab.refused.Add(1)
				_ = c.Close()
				continue
			}
			ab.served.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		<-ctx.Done()
	}}, nil
}

// badFrames: sockets that send garbage until the server closes them, then
// open another.
func (ab *abuser) badFrames(ctx context.Context) (*prepared, error) {
	tok, err := ab.account(ctx)
	if err != nil {
		return nil, err
	}
	return &prepared{close: func() {}, note: "garbage frames; a new socket each time one is closed", work: func(ctx context.Context, _ int) {
		junk := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
		for ctx.Err() == nil {
			c, err := ab.dialWS(ctx, tok)
			if err != nil {
				ab.failed.Add(1)
				sleep(ctx, 20*time.Millisecond)
				continue
			}
			done := make(chan struct{})
			go func() { defer close(done); ab.countAnswers(c) }()
			for ctx.Err() == nil {
				_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if c.WriteMessage(websocket.BinaryMessage, junk) != nil {
					break
				}
				ab.requests.Add(1)
			}
			_ = c.Close()
			<-done
		}
	}}, nil
}

// account registers a user from an address of its own (127.0.1.x) and
// returns an access token for its device.
func (ab *abuser) account(ctx context.Context) (string, error) {
	_, tok, err := ab.accountWithID(ctx)
	return tok, err
}

func (ab *abuser) accountWithID(ctx context.Context) (string, string, error) {
	n := ab.regSeq.Add(1)
	hc := httpFrom(fmt.Sprintf("127.0.1.%d", 1+n%250), 1)
	defer hc.CloseIdleConnections()
	cr, err := client.Register(ctx, ab.base, "abuser-"+randHex(6), client.WithHTTPClient(hc))
	if err != nil {
		return "", "", fmt.Errorf("register an abuser account: %w", err)
	}
	body, _ := json.Marshal(map[string]any{"user_id": cr.UserID, "device_id": cr.DeviceID, "device_secret": cr.DeviceSecret})
	resp, err := hc.Post(ab.base+"/v1/token", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", "", fmt.Errorf("abuser token: %w", err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.AccessToken == "" {
		return "", "", fmt.Errorf("abuser token: %s", resp.Status)
	}
	return cr.UserID, tr.AccessToken, nil
}

func (ab *abuser) dialWS(ctx context.Context, token string) (*websocket.Conn, error) {
	u, _ := url.Parse(ab.base)
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	u.Path = "/v1/ws"
	u.RawQuery = url.Values{"token": {token}}.Encode()
	d := websocket.Dialer{
		NetDialContext:   (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ab.cfg.AbuserAddr)}, Timeout: 5 * time.Second}).DialContext,
		HandshakeTimeout: 5 * time.Second,
	}
	c, _, err := d.DialContext(ctx, u.String(), nil)
	return c, err
}

// httpCall makes one API request from the abuser's address and counts its
// answer: 2xx served, 4xx refused, anything else failed.
func (ab *abuser) httpCall(ctx context.Context, method, path, token string, body any) {
	var rd io.Reader
	if body != nil {
		var b []byte
		if m, ok := body.(proto.Message); ok {
			b, _ = protojsonOf(m)
		} else {
			b, _ = json.Marshal(body)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, ab.base+path, rd)
	if err != nil {
		return
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	ab.requests.Add(1)
	resp, err := ab.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			ab.failed.Add(1)
		}
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		ab.served.Add(1)
	case resp.StatusCode < 500:
		ab.refused.Add(1)
	default:
		ab.failed.Add(1)
	}
}

// httpFrom is an HTTP client whose connections come from local address ip.
func httpFrom(ip string, conns int) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randUUID() string {
	h := randHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// keyUploads makes n uploads, each with a fresh identity key, as n devices
// would: valid (the server checks the signed prekey's signature), and each
// one a change of identity for whoever had the previous.
func keyUploads(n int) ([]*courierpb.KeyUpload, error) {
	dir, err := os.MkdirTemp("", "courier-abuse-keys-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := make([]*courierpb.KeyUpload, n)
	for i := range out {
		d, err := e2ee.Open(filepath.Join(dir, fmt.Sprintf("%d.keys", i)), "abuser", 1)
		if err != nil {
			return nil, fmt.Errorf("abuser keys: %w", err)
		}
		out[i], err = d.KeyUpload(1)
		_ = d.Close()
		if err != nil {
			return nil, fmt.Errorf("abuser keys: %w", err)
		}
	}
	return out, nil
}

func protojsonOf(m proto.Message) ([]byte, error) { return protojson.Marshal(m) }
