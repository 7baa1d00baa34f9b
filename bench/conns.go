package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// ConnsConfig describes a connection run: Count authenticated idle
// connections opened at Rate a second, spread over Procs worker processes
// and over the gateways of URL, held for Hold, then closed.
type ConnsConfig struct {
	URL string
	// Count of connections (default 1000).
	Count int
	// Hold is how long the connections stay open once all are (default 10s).
	Hold time.Duration
	// Rate is connections opened a second over all workers (0: as fast as
	// Concurrency handshakes at a time allow).
	Rate float64
	// Procs is how many worker processes share the connections (default
	// 1). One process may hold at most its open-files limit (20,000 on the
	// project's machines) less a margin.
	Procs int
	// Concurrency is each worker's handshakes (and registrations) in
	// flight (default 64).
	Concurrency int
	// SourceIPs is how many loopback source addresses the connections to a
	// loopback gateway are spread over (default 64; -1: the OS picks).
	SourceIPs int
	// Ping is how often each connection pings (default 25s; the server
	// drops a socket silent for 60s).
	Ping time.Duration
	// AdminToken reads every gateway's /v1/admin/stats (memory,
	// goroutines, sessions); without it, ServerPIDs are read from /proc.
	AdminToken string
	ServerPIDs []int
	CAFile     string
	// DurationLimit bounds the whole run (0: no bound but ctx).
	DurationLimit time.Duration
	// Exec runs one worker process, e.g. {"/usr/bin/courier", "bench",
	// "conns-worker"}; it speaks ConnsWorker's protocol on its standard
	// input and output. Nil runs the workers as goroutines of this process.
	Exec []string
	// ExecEnv is added to the worker processes' environment.
	ExecEnv []string
	// WorkerStderr receives the worker processes' standard error (default:
	// Progress).
	WorkerStderr io.Writer
	// Progress and ProgressInterval: see Target.
	Progress         io.Writer
	ProgressInterval time.Duration
}

// ConnsFigures describe a conns run; Report.Held and Report.RSSPerConnKiB
// hold its headline figures.
type ConnsFigures struct {
	Count     int     `json:"count"`
	Procs     int     `json:"procs"`
	Rate      float64 `json:"rate"`
	SourceIPs int     `json:"source_ips"`
	HoldSec   float64 `json:"hold_sec"`
	Connected int64   `json:"connected"`
	Failed    int64   `json:"failed"`
	// Dropped counts connections the server (or the network) closed while
	// they were held.
	Dropped int64 `json:"dropped"`
	// ConnectSec is from the first connect to the last; ConnectsPerSec is
	// Connected over it.
	ConnectSec     float64 `json:"connect_sec"`
	ConnectsPerSec float64 `json:"connects_per_sec"`
	// GoroutinesPerConn is the servers' goroutine growth per held
	// connection (admin API only).
	GoroutinesPerConn float64         `json:"goroutines_per_conn"`
	Servers           []ServerFigures `json:"servers,omitempty"`
	// ServerNote says why server figures are missing, if they are.
	ServerNote string         `json:"server_note,omitempty"`
	Processes  []ConnsProcess `json:"processes"`
	Errors     []string       `json:"errors,omitempty"`
}

func (c ConnsConfig) withDefaults() (ConnsConfig, error) {
	if c.URL == "" {
		return c, errors.New("bench: a server URL is required")
	}
	c.Count = orDefault(c.Count, 1000)
	c.Hold = orDefault(c.Hold, 10*time.Second)
	c.Procs = orDefault(c.Procs, 1)
	c.Concurrency = orDefault(c.Concurrency, 64)
	c.SourceIPs = orDefault(c.SourceIPs, 64)
	c.Ping = orDefault(c.Ping, 25*time.Second)
	switch {
	case c.Count < 0 || c.Hold < 0 || c.Rate < 0 || c.Procs < 0 || c.Concurrency < 0:
		return c, errors.New("bench: count, hold, rate, procs and concurrency must be positive")
	case c.Procs > c.Count:
		return c, errors.New("bench: more worker processes than connections")
	case c.SourceIPs > maxSourceIPs:
		return c, fmt.Errorf("bench: at most %d source addresses", maxSourceIPs)
	}
	if c.SourceIPs < 0 {
		c.SourceIPs = 0
	}
	if c.WorkerStderr == nil {
		c.WorkerStderr = c.Progress
	}
	return c, nil
}

// checkOpenFiles refuses a plan that would exceed a process's open-files
// limit, and says how many workers it needs.
func (c ConnsConfig) checkOpenFiles() error {
	limit, ok := openFilesLimit()
	if !ok {
		return nil
	}
	perProc, procs := (c.Count+c.Procs-1)/c.Procs, c.Procs
	if c.Exec == nil {
		perProc, procs = c.Count, 1 // every worker lives in this process
	}
	if uint64(perProc+openFilesMargin) <= limit {
		return nil
	}
	need := (c.Count + int(limit) - openFilesMargin - 1) / (int(limit) - openFilesMargin)
	if procs == 1 && c.Exec == nil && c.Procs > 1 {
		return fmt.Errorf("bench: %d connections exceed this process's open-files limit of %d, and workers run in this process (no worker command)", c.Count, limit)
	}
	return fmt.Errorf("bench: %d connections per process exceed the open-files limit of %d: use --procs %d or more", perProc, limit, need)
}

// Conns runs the connection scenario. Each worker registers its users and
// fetches their tokens; then all workers connect at once, the connections
// are held, the servers are measured, and the workers close and report.
func Conns(ctx context.Context, cfg ConnsConfig) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.checkOpenFiles(); err != nil {
		return nil, err
	}
	bases, err := parseURLs(cfg.URL)
	if err != nil {
		return nil, err
	}
	run := newRun(ctx, cfg.DurationLimit)
	defer run.cancel()
	con := newConsole(cfg.Progress, cfg.ProgressInterval)
	probe := newServerProbe(bases, cfg.AdminToken, cfg.ServerPIDs)

	pool := newWorkerPool(cfg.Procs)
	// Workers get a context of their own: the coordinator, not a signal,
	// decides when they close, so the servers are measured first.
	wctx, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	prefix := runPrefix()
	first := 0
	for i := range cfg.Procs {
		n := cfg.Count / cfg.Procs
		if i < cfg.Count%cfg.Procs {
			n++
		}
		wc := workerConfig{Index: i, Bases: bases, First: first, Count: n, Rate: cfg.Rate / float64(cfg.Procs),
			Concurrency: cfg.Concurrency, SourceIPs: cfg.SourceIPs, Prefix: prefix, CAFile: cfg.CAFile, Ping: cfg.Ping}
		first += n
		if err := pool.start(wctx, cfg, wc); err != nil {
			pool.shutdown(con)
			return nil, err
		}
	}
	defer pool.shutdown(con)
	con.say("%d workers register %d users and fetch their tokens at %s", cfg.Procs, cfg.Count, strings.Join(bases, ", "))

	setupStart := time.Now()
	m := con.track("preparing", func() status {
		s := pool.sum()
		return status{Done: s.Registered, Total: int64(cfg.Count), Unit: "users"}
	})
	prepared := pool.until(run.ctx, func(w *workerState) bool { return w.prepared || w.exited })
	m.Stop()
	if !prepared || pool.anyFailed() {
		return nil, run.setupErr(fmt.Errorf("bench: conns workers could not prepare: %s", pool.failures()))
	}
	setup := time.Since(setupStart)
	before, beforeErrs := probe.sample(run.ctx)

	con.say("opening %d connections over %d workers (%s)", cfg.Count, cfg.Procs, rateText(cfg.Rate))
	pool.command(cmdGo)
	start := time.Now()
	m = con.track("connecting", func() status {
		s := pool.sum()
		return status{Done: s.Connected + s.Failed, Total: int64(cfg.Count), Unit: "conns", Extra: fmt.Sprintf("%d open, %d failed", s.Open, s.Failed)}
	})
	pool.until(run.ctx, func(w *workerState) bool { return w.ready || w.exited })
	m.Stop()
	connectEnd := time.Now()

	held := run.ctx.Err() == nil
	if held {
		con.say("holding %d connections for %v", pool.sum().Open, cfg.Hold)
		m = con.track("holding", func() status {
			s := pool.sum()
			return status{Done: s.Open, Total: int64(cfg.Count), Unit: "open", Extra: fmt.Sprintf("%d dropped", s.Dropped), NoRate: true}
		})
		hctx, cancel := context.WithTimeout(run.ctx, cfg.Hold)
		pool.until(hctx, func(*workerState) bool { return false })
		cancel()
		m.Stop()
		held = run.ctx.Err() == nil
	}
	// Measure the servers while the connections are still open.
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	after, afterErrs := probe.sample(sctx)
	cancel()
	end := time.Now()
	con.say("closing the connections")
	results := pool.release(con)

	r := &Report{Scenario: "conns", Mode: "connections", Rate: cfg.Rate, Gateways: bases, SetupSec: setup.Seconds(),
		ElapsedSec: end.Sub(start).Seconds(), LatencyOf: "connect: TCP + WebSocket handshake + attach",
		Conns: &ConnsFigures{Count: cfg.Count, Procs: cfg.Procs, Rate: cfg.Rate, SourceIPs: cfg.SourceIPs, HoldSec: cfg.Hold.Seconds()}}
	c := r.Conns
	h := newHistogram()
	var timeline []int64
	for _, res := range results {
		p := res.Process
		c.Processes = append(c.Processes, p)
		c.Connected += p.Connected
		c.Failed += p.Failed
		c.Dropped += p.Dropped
		r.Held += p.Held
		for _, e := range p.Errors {
			c.Errors = appendUnique(c.Errors, fmt.Sprintf("worker %d: %s", p.Index, e), 2*maxErrors)
		}
		if res.Histogram != nil {
			h.Merge(hdrhistogram.Import(res.Histogram))
		}
		timeline = mergeTimeline(timeline, res.Timeline, time.Unix(0, res.StartUnixNano).Sub(start))
	}
	for _, f := range pool.failureList() {
		c.Errors = appendUnique(c.Errors, f, 2*maxErrors)
	}
	c.ConnectSec = connectEnd.Sub(start).Seconds()
	if c.ConnectSec > 0 {
		c.ConnectsPerSec = float64(c.Connected) / c.ConnectSec
	}
	c.Servers, c.ServerNote = serverFigures(probe, before, beforeErrs, after, afterErrs)
	if r.Held > 0 && c.ServerNote == "" {
		var rss, gor int64
		for _, s := range c.Servers {
			rss += int64(s.After.RSSBytes) - int64(s.Before.RSSBytes)
			gor += s.After.Goroutines - s.Before.Goroutines
		}
		r.RSSPerConnKiB = float64(rss) / 1024 / float64(r.Held)
		c.GoroutinesPerConn = float64(gor) / float64(r.Held)
	}
	r.setLatency(h)
	r.setTimeline("connections", timeline)
	run.finish(r, held)
	return r, nil
}

func rateText(rate float64) string {
	if rate <= 0 {
		return "as fast as they open"
	}
	return fmt.Sprintf("%.0f a second", rate)
}

// serverFigures pairs the readings; a note says why they are missing.
func serverFigures(p *serverProbe, before []ServerSample, beforeErrs []error, after []ServerSample, afterErrs []error) ([]ServerFigures, string) {
	if len(p.names) == 0 {
		return nil, "not measured: give --admin-token (or --server-pid for a server on this machine)"
	}
	var out []ServerFigures
	var bad []string
	for i, name := range p.names {
		f := ServerFigures{Name: name, Before: before[i], After: after[i]}
		if err := errors.Join(beforeErrs[i], afterErrs[i]); err != nil {
			f.Error = err.Error()
			bad = append(bad, name+": "+f.Error)
		}
		out = append(out, f)
	}
	if len(bad) > 0 {
		return out, "not measured: " + strings.Join(bad, "; ")
	}
	return out, ""
}

// mergeTimeline adds counts that started offset after the run's start.
func mergeTimeline(into, counts []int64, offset time.Duration) []int64 {
	shift := max(int(offset/TimelineStep), 0)
	if need := shift + len(counts); need > len(into) {
		into = append(into, make([]int64, need-len(into))...)
	}
	for i, n := range counts {
		into[shift+i] += n
	}
	return into
}

func appendUnique(list []string, s string, limit int) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	if len(list) >= limit {
		return list
	}
	return append(list, s)
}
