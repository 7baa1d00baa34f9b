package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/courier-im/courier/client"
)

// DirectConfig describes a direct-messaging run: Pairs senders each send
// Messages messages to their own receiver.
type DirectConfig struct {
	// URL of the server: ws://, wss://, http:// or https://. Several
	// gateways of one cluster may be given, separated by commas: clients are
	// spread over them and fail over to the others.
	URL string
	// Pairs of users (default 100); 2*Pairs clients connect.
	Pairs int
	// Messages each sender sends (default 100).
	Messages int
	// Window is how many sends each sender keeps in flight (default 8).
	Window int
	// PayloadSize is the ciphertext size in bytes (default 64, at least 16).
	PayloadSize int
	// DurationLimit bounds the whole run (0: no bound but ctx).
	DurationLimit time.Duration
	// Concurrency bounds registrations and connects in flight (default 64).
	Concurrency int
	// CAFile trusts a private CA for https/wss.
	CAFile string
	// JSON makes the clients use the json subprotocol.
	JSON bool
	// AckInterval is the SDK's ack batching interval (0: SDK default).
	AckInterval time.Duration
	// Logger receives SDK logs (default: discard).
	Logger *slog.Logger
	// Progress receives one line per phase (nil: quiet).
	Progress io.Writer
}

func (c DirectConfig) withDefaults() (DirectConfig, error) {
	if c.URL == "" {
		return c, errors.New("bench: a server URL is required")
	}
	if c.Pairs == 0 {
		c.Pairs = 100
	}
	if c.Messages == 0 {
		c.Messages = 100
	}
	if c.Window == 0 {
		c.Window = 8
	}
	if c.PayloadSize == 0 {
		c.PayloadSize = 64
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	switch {
	case c.Pairs < 0 || c.Messages < 0 || c.Window < 0 || c.Concurrency < 0:
		return c, errors.New("bench: pairs, messages, window and concurrency must be positive")
	case c.PayloadSize < payloadHeader:
		return c, fmt.Errorf("bench: payload size must be at least %d bytes", payloadHeader)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// The payload starts with the send time (unix ns), the sender's sequence
// number and the pair index; the rest is filler.
const payloadHeader = 16

// pair is one sender and its receiver, and what each observed. Sender
// fields belong to the sender goroutine, receiver fields to the receiver
// goroutine, until the run joins them.
type pair struct {
	index    int
	senderID string

	// Sender side.
	acked    []bool
	sent     int64
	sendErrs int64
	sentDone atomic.Int64 // sent, published when the sender is done (-1 before)

	// Receiver side.
	got       []bool
	ids       map[string]struct{}
	latUS     []int64
	maxSeq    int
	dups      int64
	reordered int64
	foreign   int64
	count     atomic.Int64 // distinct messages received
	lastAt    atomic.Int64 // unix ns of the last one

	receipts atomic.Int64 // delivered receipts the sender saw (message ids)
}

// Direct runs the direct-messaging scenario and reports what was delivered.
// It returns an error only when the run could not be set up; delivery
// problems are in the report (see Report.OK).
func Direct(ctx context.Context, cfg DirectConfig) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.DurationLimit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.DurationLimit)
		defer cancel()
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "bench: "+format+"\n", args...)
		}
	}
	var bases []string
	for _, u := range strings.Split(cfg.URL, ",") {
		base, err := client.BaseURL(u)
		if err != nil {
			return nil, err
		}
		bases = append(bases, base)
	}
	var tlsConf *tls.Config
	if cfg.CAFile != "" {
		if tlsConf, err = client.TLSConfigWithCA(cfg.CAFile); err != nil {
			return nil, err
		}
	}
	hc := client.NewHTTPClient(tlsConf, cfg.Concurrency)
	defer hc.CloseIdleConnections()
	opts := []client.Option{client.WithHTTPClient(hc), client.WithLogger(cfg.Logger)}
	if tlsConf != nil {
		opts = append(opts, client.WithTLSConfig(tlsConf))
	}
	if cfg.JSON {
		opts = append(opts, client.WithJSON())
	}
	if cfg.AckInterval > 0 {
		opts = append(opts, client.WithAckInterval(cfg.AckInterval))
	}

	setupStart := time.Now()
	users := 2 * cfg.Pairs
	runID := make([]byte, 4)
	_, _ = rand.Read(runID)
	prefix := "bench-" + hex.EncodeToString(runID)
	progress("registering %d users at %s", users, strings.Join(bases, ", "))
	creds := make([]client.Credentials, users)
	err = forEach(ctx, users, cfg.Concurrency, func(ctx context.Context, i int) error {
		var err error
		for attempt := range 5 {
			creds[i], err = client.Register(ctx, bases[i%len(bases)], fmt.Sprintf("%s-%d", prefix, i), opts...)
			if err == nil || !retryable(err) {
				return err
			}
			sleep(ctx, time.Duration(50<<attempt)*time.Millisecond)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: register: %w", err)
	}
	// Client i starts on the gateway it registered at (i mod n; its
	// BaseURL); the others are its fail-overs.
	dialOpts := append(slices.Clip(opts), client.WithServers(bases...))
	progress("connecting %d clients", users)
	clients := make([]*client.Client, users)
	defer closeAll(clients, cfg.Concurrency)
	err = forEach(ctx, users, cfg.Concurrency, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var err error
		clients[i], err = client.Dial(dctx, creds[i], dialOpts...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: connect: %w", err)
	}
	setup := time.Since(setupStart)

	pairs := make([]*pair, cfg.Pairs)
	for i := range pairs {
		p := &pair{
			index:    i,
			senderID: creds[2*i].UserID,
			acked:    make([]bool, cfg.Messages),
			got:      make([]bool, cfg.Messages),
			ids:      make(map[string]struct{}, cfg.Messages),
			latUS:    make([]int64, 0, cfg.Messages),
			maxSeq:   -1,
		}
		p.sentDone.Store(-1)
		pairs[i] = p
	}
	var readers sync.WaitGroup
	for i, p := range pairs {
		readers.Add(2)
		go func() { defer readers.Done(); p.receive(clients[2*i+1], cfg.Messages) }()
		go func() { defer readers.Done(); p.countReceipts(clients[2*i]) }()
	}

	progress("sending %d messages (%d pairs x %d, window %d)", cfg.Pairs*cfg.Messages, cfg.Pairs, cfg.Messages, cfg.Window)
	start := time.Now()
	var senders sync.WaitGroup
	for i, p := range pairs {
		senders.Add(1)
		go func() {
			defer senders.Done()
			p.send(ctx, clients[2*i], creds[2*i+1].UserID, cfg)
		}()
	}
	senders.Wait()
	timedOut := !waitDelivered(ctx, pairs)
	end := time.Now()
	if last := lastReceipt(pairs); !last.IsZero() && !timedOut {
		end = last
	}
	// Late duplicates would show up now.
	sleep(context.Background(), 200*time.Millisecond)

	var reconnects int64
	for _, c := range clients {
		reconnects += c.Reconnects()
	}
	progress("closing %d clients", users)
	closeAll(clients, cfg.Concurrency)
	readers.Wait()

	r := &Report{Scenario: "direct", Pairs: cfg.Pairs, Messages: cfg.Messages, Window: cfg.Window, TimedOut: timedOut, Reconnects: reconnects}
	h := hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
	for _, p := range pairs {
		r.Sent += p.sent
		r.SendErrors += p.sendErrs
		r.Duplicates += p.dups
		r.Reordered += p.reordered
		r.Foreign += p.foreign
		r.DeliveredReceipts += p.receipts.Load()
		for seq, ok := range p.got {
			if ok {
				r.Delivered++
			} else if p.acked[seq] {
				r.Lost++
			}
		}
		for _, us := range p.latUS {
			_ = h.RecordValue(max(us, 1))
		}
	}
	r.SetupSec = setup.Seconds()
	r.ElapsedSec = end.Sub(start).Seconds()
	if r.ElapsedSec > 0 {
		r.MsgsPerSec = float64(r.Delivered) / r.ElapsedSec
	}
	r.setLatency(h)
	return r, nil
}

// send sends the pair's messages in order, keeping up to Window in flight.
func (p *pair) send(ctx context.Context, c *client.Client, to string, cfg DirectConfig) {
	// A context per sender keeps the SDK's per-send cancellation hooks off
	// one shared, contended parent.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type slot struct {
		ps  *client.PendingSend
		seq int
	}
	ring := make([]slot, cfg.Window)
	head, n := 0, 0
	wait := func() {
		s := ring[head]
		if _, err := s.ps.Result(); err == nil {
			p.acked[s.seq] = true
			p.sent++
		} else {
			p.sendErrs++
		}
		ring[head] = slot{}
		head = (head + 1) % len(ring)
		n--
	}
	for i := 0; i < cfg.Messages; i++ {
		if ctx.Err() != nil {
			p.sendErrs += int64(cfg.Messages - i)
			break
		}
		if n == len(ring) {
			wait()
		}
		buf := make([]byte, cfg.PayloadSize)
		binary.LittleEndian.PutUint32(buf[8:], uint32(i))
		binary.LittleEndian.PutUint32(buf[12:], uint32(p.index))
		binary.LittleEndian.PutUint64(buf[0:], uint64(time.Now().UnixNano()))
		ring[(head+n)%len(ring)] = slot{ps: c.SendAsync(ctx, to, buf), seq: i}
		n++
	}
	for n > 0 {
		wait()
	}
	p.sentDone.Store(p.sent)
}

// receive checks every message the receiver gets until its client closes.
func (p *pair) receive(c *client.Client, messages int) {
	for e := range c.Entries() {
		if !e.IsMessage() {
			continue
		}
		now := time.Now().UnixNano()
		ct := e.Ciphertext
		if len(ct) < payloadHeader || e.FromUserID != p.senderID || int(binary.LittleEndian.Uint32(ct[12:])) != p.index {
			p.foreign++
			continue
		}
		seq := int(binary.LittleEndian.Uint32(ct[8:]))
		if seq >= messages {
			p.foreign++
			continue
		}
		if _, dup := p.ids[e.ClientMsgID]; dup || p.got[seq] {
			p.dups++
			continue
		}
		p.ids[e.ClientMsgID] = struct{}{}
		p.got[seq] = true
		if seq < p.maxSeq {
			p.reordered++
		} else {
			p.maxSeq = seq
		}
		p.latUS = append(p.latUS, (now-int64(binary.LittleEndian.Uint64(ct)))/1000)
		p.count.Add(1)
		p.lastAt.Store(now)
	}
}

// countReceipts drains the sender's inbox (delivered receipts), which it
// must read anyway so the SDK acknowledges them.
func (p *pair) countReceipts(c *client.Client) {
	for e := range c.Entries() {
		if e.IsDelivered() {
			p.receipts.Add(int64(len(e.ReceiptFor)))
		}
	}
}

// waitDelivered waits until every receiver has every message its sender
// got acknowledged; false when ctx ended first.
func waitDelivered(ctx context.Context, pairs []*pair) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	next := 0
	for {
		for next < len(pairs) {
			p := pairs[next]
			sent := p.sentDone.Load()
			if sent < 0 || p.count.Load() < sent {
				break
			}
			next++
		}
		if next == len(pairs) {
			return true
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
}

func lastReceipt(pairs []*pair) time.Time {
	var last int64
	for _, p := range pairs {
		last = max(last, p.lastAt.Load())
	}
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}

// forEach runs fn for 0..n-1 with at most limit at once and stops at the
// first error.
func forEach(ctx context.Context, n, limit int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				cancel(fmt.Errorf("#%d: %w", i, err))
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

func closeAll(clients []*client.Client, limit int) {
	_ = forEach(context.Background(), len(clients), limit, func(_ context.Context, i int) error {
		if clients[i] != nil {
			_ = clients[i].Close()
		}
		return nil
	})
}

func retryable(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Retryable
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
