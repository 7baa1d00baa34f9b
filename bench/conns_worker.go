package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/courier-im/courier/client"
)

// ConnsProcess is one worker's share of a conns run.
type ConnsProcess struct {
	Index          int      `json:"index"`
	PID            int      `json:"pid"`
	Count          int      `json:"count"`
	Connected      int64    `json:"connected"`
	Failed         int64    `json:"failed"`
	Held           int64    `json:"held"`
	Dropped        int64    `json:"dropped"`
	ConnectSec     float64  `json:"connect_sec"`
	ConnectsPerSec float64  `json:"connects_per_sec"`
	RSSBytes       uint64   `json:"rss_bytes"` // the worker's own memory
	Errors         []string `json:"errors,omitempty"`
}

// openFilesMargin is what a worker keeps free of its open-files limit for
// the HTTP client, the executable and the standard files.
const openFilesMargin = 100

// maxErrors is how many distinct errors a worker reports.
const maxErrors = 5

// ConnsWorker runs one worker of a conns run (see Conns): it reads its
// configuration and commands from in and writes events to out, one JSON
// object a line. `courier bench conns-worker` runs it on its standard
// input and output; it ends when the coordinator releases it, closes in,
// or ctx ends.
func ConnsWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	lw := newLineWriter(out)
	sc := newLineScanner(in)
	if !sc.Scan() {
		return fmt.Errorf("bench: conns worker: no configuration on input: %v", sc.Err())
	}
	var cfg workerConfig
	if err := json.Unmarshal(sc.Bytes(), &cfg); err != nil {
		return fmt.Errorf("bench: conns worker: bad configuration: %w", err)
	}
	// Commands arrive on their own goroutine, which ends with in (the
	// coordinator closes it, or this process exits) or with this function.
	// A release, or in ending, cancels ctx: whatever the worker is doing,
	// it stops, closes its connections and reports.
	ctx, release := context.WithCancel(ctx)
	defer release()
	done := make(chan struct{})
	defer close(done)
	cmds := make(chan string, 4)
	go func() {
		defer release()
		for sc.Scan() {
			var c workerCmd
			if json.Unmarshal(sc.Bytes(), &c) != nil {
				continue
			}
			if c.Cmd == cmdRelease {
				return
			}
			select {
			case cmds <- c.Cmd:
			case <-done:
				return
			}
		}
	}()
	w := &worker{cfg: cfg, out: lw, proc: ConnsProcess{Index: cfg.Index, PID: os.Getpid(), Count: cfg.Count}}
	err := w.run(ctx, cmds)
	if err != nil {
		_ = lw.send(workerEvent{Type: evFailed, Error: err.Error()})
	}
	return err
}

type worker struct {
	cfg  workerConfig
	out  *lineWriter
	proc ConnsProcess
	tls  *tls.Config

	registered, connected, failed, open, dropped atomic.Int64

	errMu  sync.Mutex
	errSet map[string]bool
}

func (w *worker) noteErr(err error) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.errSet == nil {
		w.errSet = make(map[string]bool)
	}
	if s := err.Error(); !w.errSet[s] && len(w.proc.Errors) < maxErrors {
		w.errSet[s] = true
		w.proc.Errors = append(w.proc.Errors, s)
	}
}

func (w *worker) event(typ string) workerEvent {
	return workerEvent{Type: typ, Registered: w.registered.Load(), Connected: w.connected.Load(), Failed: w.failed.Load(),
		Open: w.open.Load(), Dropped: w.dropped.Load()}
}

// waitCmd waits for want; false when ctx ended first (a release).
func waitCmd(ctx context.Context, cmds <-chan string, want string) bool {
	for {
		select {
		case c := <-cmds:
			if c == want {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

func (w *worker) run(ctx context.Context, cmds <-chan string) error {
	cfg := w.cfg
	if limit, ok := openFilesLimit(); ok && uint64(cfg.Count+openFilesMargin) > limit {
		return fmt.Errorf("bench: worker %d: %d connections need more than this process's open-files limit of %d; use more --procs", cfg.Index, cfg.Count, limit)
	}
	gws := make([]gateway, len(cfg.Bases))
	for i, b := range cfg.Bases {
		var err error
		if gws[i], err = gatewayOf(b); err != nil {
			return err
		}
	}
	if cfg.CAFile != "" {
		var err error
		if w.tls, err = client.TLSConfigWithCA(cfg.CAFile); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	conc := max(cfg.Concurrency, 1)
	hc := newHTTPClient(w.tls, conc)
	defer hc.CloseIdleConnections()

	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				_ = w.out.send(w.event(evProgress))
			}
		}
	}()
	defer func() { close(stopProgress); <-progressDone }()

	creds, tokens, err := w.prepare(ctx, hc, gws, conc)
	if err != nil {
		return err
	}
	if err := w.out.send(w.event(evPrepared)); err != nil {
		return err
	}
	var conns []*held
	var readers sync.WaitGroup
	start := time.Now()
	rec := newRecorder(start)
	if waitCmd(ctx, cmds, cmdGo) {
		start = time.Now()
		rec = newRecorder(start)
		conns = w.connect(ctx, hc, gws, creds, tokens, conc, rec, &readers)
		w.proc.ConnectSec = time.Since(start).Seconds()
		if err := w.out.send(w.event(evReady)); err != nil {
			w.closeAll(conns, conc, &readers)
			return err
		}
		<-ctx.Done() // released
		w.proc.Held = w.open.Load()
		w.closeAll(conns, conc, &readers)
	}
	w.proc.Connected, w.proc.Failed, w.proc.Dropped = w.connected.Load(), w.failed.Load(), w.dropped.Load()
	if w.proc.ConnectSec > 0 {
		w.proc.ConnectsPerSec = float64(w.proc.Connected) / w.proc.ConnectSec
	}
	w.proc.RSSBytes, _ = procRSS("self")
	h, tl := rec.result()
	res := workerResult{Process: w.proc, Histogram: h.Export(), Timeline: tl, StartUnixNano: start.UnixNano()}
	return w.out.send(workerEvent{Type: evResult, Result: &res})
}

// prepare registers the worker's users and fetches their tokens.
func (w *worker) prepare(ctx context.Context, hc *http.Client, gws []gateway, conc int) ([]client.Credentials, []string, error) {
	cfg := w.cfg
	creds := make([]client.Credentials, cfg.Count)
	tokens := make([]string, cfg.Count)
	err := forEach(ctx, cfg.Count, conc, func(ctx context.Context, j int) error {
		gw := gws[(cfg.First+j)%len(gws)]
		var err error
		for attempt := range 5 {
			creds[j], err = client.Register(ctx, gw.base, fmt.Sprintf("%s-w%d-%d", cfg.Prefix, cfg.Index, j), client.WithHTTPClient(hc))
			if err == nil || !retryable(err) {
				break
			}
			sleep(ctx, time.Duration(50<<attempt)*time.Millisecond)
		}
		if err != nil {
			return err
		}
		tokens[j], err = fetchToken(ctx, hc, gw.base, creds[j])
		if err == nil {
			w.registered.Add(1)
		}
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: worker %d: register: %w", cfg.Index, err)
	}
	return creds, tokens, nil
}

// connect opens the connections at the configured rate, at most conc
// handshakes at once, and starts a reader for each one that opened.
func (w *worker) connect(ctx context.Context, hc *http.Client, gws []gateway, creds []client.Credentials, tokens []string,
	conc int, rec *recorder, readers *sync.WaitGroup) []*held {
	cfg := w.cfg
	ds := newDialers(w.tls, cfg.SourceIPs)
	out := make([]*held, cfg.Count)
	p := pacer{start: rec.start}
	if cfg.Rate > 0 {
		p.interval = max(time.Duration(float64(time.Second)/cfg.Rate), time.Nanosecond)
	}
	sem := make(chan struct{}, conc)
	var dials sync.WaitGroup
	for j := range cfg.Count {
		if _, ok := p.wait(ctx, j); !ok {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		dials.Add(1)
		go func() {
			defer func() { <-sem; dials.Done() }()
			g := cfg.First + j
			gw := gws[g%len(gws)]
			began := time.Now()
			h, err := w.dialOne(ctx, hc, ds.forConn(gw, g), gw, creds[j], &tokens[j])
			if err != nil && ctx.Err() != nil {
				return // released while connecting: not the server's failure
			}
			if err != nil {
				w.failed.Add(1)
				w.noteErr(err)
				return
			}
			now := time.Now()
			rec.record(j, now, now.Sub(began))
			out[j] = h
			h.keepAlive(pingEvery(cfg.Ping), pingFrame())
			w.connected.Add(1)
			w.open.Add(1)
			readers.Add(1)
			go func() { defer readers.Done(); w.drain(h) }()
		}()
	}
	dials.Wait()
	return out
}

func (w *worker) dialOne(ctx context.Context, hc *http.Client, d *websocket.Dialer, gw gateway, cr client.Credentials, token *string) (*held, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ws, err := openConn(ctx, d, gw, *token)
	if errors.Is(err, errUnauthorized) {
		// The token expired while the worker waited to dial: one more try.
		if *token, err = fetchToken(ctx, hc, gw.base, cr); err != nil {
			return nil, err
		}
		ws, err = openConn(ctx, d, gw, *token)
	}
	if err != nil {
		return nil, err
	}
	return &held{ws: ws}, nil
}

// drain reads (and discards) what the server sends until the socket
// closes; a close the worker did not ask for is a drop.
func (w *worker) drain(h *held) {
	for {
		if _, _, err := h.ws.NextReader(); err != nil {
			break
		}
	}
	w.open.Add(-1)
	if !h.isClosed() {
		w.dropped.Add(1)
		w.noteErr(errors.New("connection dropped while held"))
	}
}

// pingEvery is the keep-alive interval (default 25 s: the server drops
// sockets silent for 60 s).
func pingEvery(d time.Duration) time.Duration {
	if d <= 0 {
		return 25 * time.Second
	}
	return d
}

// closeAll closes the connections, conc at once, and waits for their
// readers.
func (w *worker) closeAll(conns []*held, conc int, readers *sync.WaitGroup) {
	_ = forEach(context.Background(), len(conns), conc, func(_ context.Context, i int) error {
		if conns[i] != nil {
			conns[i].close()
		}
		return nil
	})
	readers.Wait()
}
