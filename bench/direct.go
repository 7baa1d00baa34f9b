package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// DirectConfig describes a direct-messaging run: Pairs senders each send
// Messages messages to their own receiver.
type DirectConfig struct {
	Target
	// Pairs of users (default 100); 2*Pairs clients connect.
	Pairs int
	// E2EE makes every client end-to-end encrypted (Signal protocol, key
	// files in a temporary directory): the server's work is the same, the
	// clients encrypt and decrypt every message.
	E2EE    bool
	e2eeDir string
	// Messages each sender sends (default 100).
	Messages int
	// Window is how many sends each sender keeps in flight in closed loop
	// (default 8).
	Window int
	// Rate, when positive, switches to open loop: the senders together send
	// Rate messages a second on a fixed schedule, whatever the server's
	// answers, and latency counts from the scheduled send time.
	Rate float64
	// Warmup, when positive, first runs the scenario once unmeasured:
	// closed loop, Warmup messages per sender, on users of its own. A store
	// on the JVM (Cassandra) runs its first few hundred thousand writes
	// several times slower, until the JIT has compiled its hot paths; a
	// benchmarker comparing stores wants the steady state of both.
	Warmup int
	Traffic
}

func (c DirectConfig) withDefaults() (DirectConfig, error) {
	var err error
	if c.Target, err = c.Target.withDefaults(); err != nil {
		return c, err
	}
	if c.Traffic, err = c.Traffic.withDefaults(); err != nil {
		return c, err
	}
	c.Pairs = orDefault(c.Pairs, 100)
	c.Messages = orDefault(c.Messages, 100)
	c.Window = orDefault(c.Window, 8)
	switch {
	case c.Pairs < 0 || c.Messages < 0 || c.Window < 0 || c.Concurrency < 0 || c.Rate < 0 || c.Warmup < 0:
		return c, errors.New("bench: pairs, messages, window, rate, warmup and concurrency must be positive")
	}
	return c, nil
}

func (c DirectConfig) net() netConfig {
	return netConfig{Target: c.Target, E2EEDir: c.e2eeDir}
}

func orDefault[T int | float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// Direct runs the direct-messaging scenario and reports what was delivered.
// It returns an error only when the run could not be set up; delivery
// problems are in the report (see Report.OK). When ctx ends during the
// run, the report holds what was measured until then (Interrupted).
func Direct(ctx context.Context, cfg DirectConfig) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.E2EE {
		if cfg.e2eeDir, err = os.MkdirTemp("", "courier-bench-keys"); err != nil {
			return nil, fmt.Errorf("bench: key directory: %w", err)
		}
		defer os.RemoveAll(cfg.e2eeDir)
	}
	if cfg.Warmup > 0 {
		if err := warmUpDirect(ctx, cfg); err != nil {
			return nil, err
		}
	}
	run, con, f, stop, err := startFleet(ctx, cfg.Target, cfg.net())
	if err != nil {
		return nil, err
	}
	defer stop()

	setupStart := time.Now()
	users := 2 * cfg.Pairs
	creds, err := f.register(run.ctx, users)
	if err != nil {
		return nil, run.setupErr(err)
	}
	clients, err := f.dial(run.ctx, creds, 0)
	if err != nil {
		return nil, run.setupErr(err)
	}
	defer closeAll(clients, f.conc)
	setup := time.Since(setupStart)

	// User 2i sends to user 2i+1 on stream i.
	receivers := func(k streamKey) []int { return []int{int(k.conv)} }
	inboxes := make([]*inbox, users)
	start := time.Now()
	cpu := startCPU(cfg.ServerPIDs)
	rec := newRecorder(start)
	var receipts atomic.Int64
	var readers sync.WaitGroup
	for i := range cfg.Pairs {
		in := newInbox()
		inboxes[2*i+1] = in
		from := creds[2*i].UserID
		classify := func(e client.Entry, h header) (streamKey, bool) {
			ok := e.IsMessage() && e.FromUserID == from && int(h.stream) == i && int(h.seq) < cfg.Messages
			return streamKey{from: int32(2 * i), conv: directConv(2*i + 1)}, ok
		}
		readers.Add(2)
		go func() { defer readers.Done(); receive(clients[2*i+1], in, classify, latencyTo(rec, i), nil) }()
		go func() { defer readers.Done(); countReceipts(clients[2*i], &receipts) }()
	}

	window, mode := cfg.Window, "closed-loop"
	if cfg.Rate > 0 {
		window, mode = 0, "open-loop"
	}
	con.say("sending %d messages (%d pairs x %d, %s)", cfg.Pairs*cfg.Messages, cfg.Pairs, cfg.Messages, mode)
	ackers := make([]*acker, cfg.Pairs)
	var senders sync.WaitGroup
	for i := range cfg.Pairs {
		a := newAcker(window)
		ackers[i] = a
		c, to := clients[2*i], creds[2*i+1].UserID
		p := openLoop(start, cfg.Rate, i, cfg.Pairs)
		senders.Add(1)
		go func() {
			defer senders.Done()
			// A context per sender keeps the SDK's per-send cancellation
			// hooks off one shared, contended parent.
			ctx, cancel := context.WithCancel(run.ctx)
			defer cancel()
			sendStream(ctx, a, p, streamKey{from: int32(2 * i), conv: directConv(2*i + 1)}, uint32(i), cfg.Messages, cfg.PayloadSize,
				func(ctx context.Context, b []byte) *client.PendingSend { return c.SendAsync(ctx, to, b) })
			a.close()
		}()
	}
	total := int64(cfg.Pairs * cfg.Messages)
	m := con.track("sending", func() status {
		sent, _ := sentOf(ackers)
		return status{Done: sumDistinct(inboxes), Total: total, Unit: "msgs delivered", Extra: fmt.Sprintf("%d acked", sent)}
	})
	senders.Wait()
	caughtUp := run.settle(inboxes, expectedPer(allStreams(ackers), receivers, users), cfg.stall())
	m.Stop()
	end := time.Now()
	cpu.stop()
	if last := lastArrival(inboxes); !last.IsZero() && caughtUp {
		end = last
	}
	if caughtUp {
		sleep(run.ctx, lateDuplicates) // late duplicates would show up now
	}
	reconnects := reconnectsOf(clients)
	con.say("closing %d clients", users)
	closeAll(clients, f.conc)
	readers.Wait()

	r := &Report{Scenario: "direct", Pairs: cfg.Pairs, Messages: cfg.Messages, WarmupMessages: cfg.Warmup, Window: window, Mode: mode, Rate: cfg.Rate,
		Gateways: f.bases, Reconnects: reconnects, DeliveredReceipts: receipts.Load(), LatencyOf: latencyOf(mode)}
	r.Sent, r.SendErrors = sentOf(ackers)
	if err := lastErrOf(ackers); err != nil {
		r.LastSendError = err.Error()
	}
	r.setTally(account(allStreams(ackers), receivers, inboxes))
	r.SetupSec = setup.Seconds()
	r.setElapsed(end.Sub(start), r.Delivered)
	r.setCost(cpu, r.Delivered)
	h, tl := rec.result()
	r.setLatency(h)
	r.setTimeline("deliveries", tl)
	run.finish(r, caughtUp)
	return r, nil
}

// warmUpDirect is the unmeasured run of DirectConfig.Warmup. Its figures
// are dropped, its problems are not: a warm-up that loses a message ends
// the run with an error.
func warmUpDirect(ctx context.Context, cfg DirectConfig) error {
	w := cfg
	w.Messages, w.Warmup, w.Rate, w.ServerPIDs = cfg.Warmup, 0, 0, nil
	if w.Progress != nil {
		fmt.Fprintf(w.Progress, "bench: warming up: %d pairs x %d messages, not measured\n", w.Pairs, w.Messages)
	}
	r, err := Direct(ctx, w)
	if err != nil {
		return fmt.Errorf("bench: warm-up: %w", err)
	}
	if !r.OK() {
		return fmt.Errorf("bench: warm-up run failed, nothing measured: %s", r.Problem())
	}
	return nil
}

// lateDuplicates is how long a run listens on after the last delivery.
const lateDuplicates = 200 * time.Millisecond

func latencyOf(mode string) string {
	if mode == "open-loop" {
		return "scheduled send to receive"
	}
	return "send to receive"
}

// countReceipts drains a sender's inbox (delivered receipts), which it
// must read anyway so the SDK acknowledges them.
func countReceipts(c *client.Client, n *atomic.Int64) {
	for e := range c.Entries() {
		if e.IsDelivered() {
			n.Add(int64(len(e.ReceiptFor)))
		}
	}
}

// sentOf sums what the ackers counted so far.
func sentOf(ackers []*acker) (sent, errs int64) {
	for _, a := range ackers {
		if a != nil {
			sent += a.sent.Load()
			errs += a.errs.Load()
		}
	}
	return sent, errs
}

func (r *Report) setTally(t tally) {
	r.Expected, r.Delivered, r.Lost = t.expected, t.delivered, t.lost
	r.Duplicates, r.Reordered, r.Foreign = t.dups, t.reordered, t.foreign
}

// setElapsed sets the run time and the per-second rates: msgs is what
// msgs_per_sec counts.
func (r *Report) setElapsed(d time.Duration, msgs int64) {
	r.ElapsedSec = d.Seconds()
	if r.ElapsedSec > 0 {
		r.MsgsPerSec = float64(msgs) / r.ElapsedSec
		r.DeliveriesPerSec = float64(r.Delivered) / r.ElapsedSec
	}
}
