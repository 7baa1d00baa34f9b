package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// StormConfig describes a reconnect storm: Clients users are online once,
// go offline, get Messages messages each while offline, and then all
// reconnect at once and resume their inboxes.
type StormConfig struct {
	Target
	// Clients that reconnect at once (default 1000).
	Clients int
	// Senders fill the inboxes while the clients are offline (default
	// Clients/50, at least 1); sender s writes to clients s, s+Senders, ...
	Senders int
	// Messages pending in each client's inbox (default 10).
	Messages int
	// Window is each sender's sends in flight while filling (default 16).
	Window int
	// StormConcurrency bounds the reconnects in flight (0: all at once).
	StormConcurrency int
	Traffic
}

func (c StormConfig) withDefaults() (StormConfig, error) {
	var err error
	if c.Target, err = c.Target.withDefaults(); err != nil {
		return c, err
	}
	if c.Traffic, err = c.Traffic.withDefaults(); err != nil {
		return c, err
	}
	c.Clients = orDefault(c.Clients, 1000)
	c.Senders = orDefault(c.Senders, max(1, c.Clients/50))
	c.Messages = orDefault(c.Messages, 10)
	c.Window = orDefault(c.Window, 16)
	if c.Clients < 0 || c.Senders < 0 || c.Messages < 0 || c.Window < 0 || c.Concurrency < 0 || c.StormConcurrency < 0 {
		return c, errors.New("bench: clients, senders, messages, window and concurrency must be positive")
	}
	return c, nil
}

// Storm runs the reconnect storm. Users 0..Clients-1 are the clients, the
// rest the senders. Latency percentiles are each client's catch-up time:
// from the storm's start until its inbox was complete.
func Storm(ctx context.Context, cfg StormConfig) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	run, con, f, stop, err := startFleet(ctx, cfg.Target, cfg.net())
	if err != nil {
		return nil, err
	}
	defer stop()

	setupStart := time.Now()
	creds, err := f.register(run.ctx, cfg.Clients+cfg.Senders)
	if err != nil {
		return nil, run.setupErr(err)
	}
	// Online once, so every device has had a session, then offline.
	first, err := f.dial(run.ctx, creds[:cfg.Clients], 0)
	if err != nil {
		return nil, run.setupErr(err)
	}
	closeAll(first, f.conc)
	senders, err := f.dial(run.ctx, creds[cfg.Clients:], 0)
	if err != nil {
		return nil, run.setupErr(err)
	}
	defer closeAll(senders, f.conc)
	var receipts atomic.Int64
	var readers sync.WaitGroup
	for _, c := range senders {
		readers.Add(1)
		go func() { defer readers.Done(); countReceipts(c, &receipts) }()
	}
	defer readers.Wait()
	defer closeAll(senders, f.conc) // before readers.Wait

	ackers, err := fillInboxes(run.ctx, con, cfg, creds, senders)
	if err != nil {
		return nil, run.setupErr(err)
	}
	setup := time.Since(setupStart)

	userIndex := indexUsers(creds)
	receivers := func(k streamKey) []int { return []int{int(k.conv)} }
	need := expectedPer(allStreams(ackers), receivers, cfg.Clients)
	inboxes := make([]*inbox, cfg.Clients)
	for i := range inboxes {
		inboxes[i] = newInbox()
	}
	start := time.Now()
	cpu := startCPU(cfg.ServerPIDs)
	rec := newRecorder(start)   // entries replayed over time
	catch := newRecorder(start) // each client's catch-up time
	var caught atomic.Int64
	for i, n := range need {
		if n == 0 {
			caught.Add(1)
			catch.record(i, start, 0)
		}
	}
	con.say("storm: %d clients reconnect at once to fetch %d pending messages", cfg.Clients, sumOf(need))
	m := con.track("storm", func() status {
		return status{Done: sumDistinct(inboxes), Total: sumOf(need), Unit: "msgs replayed", Extra: fmt.Sprintf("%d/%d clients caught up", caught.Load(), cfg.Clients)}
	})
	clients := make([]*client.Client, cfg.Clients)
	var dialFailed atomic.Int64
	var lastConnected atomic.Int64
	var dialers sync.WaitGroup
	conc := cfg.StormConcurrency
	if conc <= 0 {
		conc = cfg.Clients
	}
	sem := make(chan struct{}, conc)
	var clientsMu sync.Mutex // guards clients against the final close
	for i := range cfg.Clients {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			select {
			case sem <- struct{}{}:
			case <-run.ctx.Done():
				dialFailed.Add(1)
				return
			}
			defer func() { <-sem }()
			c, err := f.dialOne(run.ctx, creds[i])
			if err != nil {
				dialFailed.Add(1)
				return
			}
			lastConnected.Store(time.Now().UnixNano())
			clientsMu.Lock()
			clients[i] = c
			clientsMu.Unlock()
			in, want := inboxes[i], need[i]
			classify := func(e client.Entry, h header) (streamKey, bool) {
				from, known := userIndex[e.FromUserID]
				ok := known && e.IsMessage() && from >= cfg.Clients && int(h.stream) == from && int(h.seq) < cfg.Messages
				return streamKey{from: int32(from), conv: directConv(i)}, ok
			}
			readers.Add(1)
			go func() {
				defer readers.Done()
				receive(c, in, classify, func(now time.Time, _ header, _ client.Entry) {
					rec.record(i, now, -1)
					if in.distinct.Load() == want {
						caught.Add(1)
						catch.record(i, now, now.Sub(start))
					}
				}, nil)
			}()
		}()
	}
	dialers.Wait()
	connected := time.Duration(0)
	if last := lastConnected.Load(); last != 0 {
		connected = time.Unix(0, last).Sub(start)
	}
	caughtUp := run.settle(inboxes, need, cfg.stall())
	m.Stop()
	end := time.Now()
	cpu.stop()
	if last := lastArrival(inboxes); !last.IsZero() && caughtUp {
		end = last
	}
	if caughtUp {
		sleep(run.ctx, lateDuplicates)
	}
	clientsMu.Lock()
	reconnects := reconnectsOf(clients) + reconnectsOf(senders)
	clientsMu.Unlock()
	con.say("closing %d clients", cfg.Clients+cfg.Senders)
	closeAll(clients, f.conc)
	closeAll(senders, f.conc)
	readers.Wait()

	r := &Report{Scenario: "storm", Messages: cfg.Messages, Window: cfg.Window, Mode: "closed-loop", Gateways: f.bases,
		Reconnects: reconnects, DeliveredReceipts: receipts.Load(), LatencyOf: "catch-up time of each client from the storm's start",
		Storm: &StormFigures{Clients: cfg.Clients, Senders: cfg.Senders, PendingPerClient: cfg.Messages,
			CaughtUp: int(caught.Load()), ConnectedSec: connected.Seconds(), ConnectFailures: dialFailed.Load()}}
	r.Sent, r.SendErrors = sentOf(ackers)
	if err := lastErrOf(ackers); err != nil {
		r.LastSendError = err.Error()
	}
	r.setTally(account(allStreams(ackers), receivers, inboxes))
	r.SetupSec = setup.Seconds()
	r.setElapsed(end.Sub(start), r.Delivered)
	r.setCost(cpu, r.Delivered)
	if caughtUp {
		r.Storm.CatchUpSec = r.ElapsedSec
	}
	h, _ := catch.result()
	r.setLatency(h)
	_, tl := rec.result()
	r.setTimeline("deliveries", tl)
	run.finish(r, caughtUp)
	return r, nil
}

// fillInboxes has every sender send cfg.Messages messages to each of its
// clients (sender s: clients s, s+Senders, ...) and waits for the acks.
func fillInboxes(ctx context.Context, con *console, cfg StormConfig, creds []client.Credentials, senders []*client.Client) ([]*acker, error) {
	total := int64(cfg.Clients * cfg.Messages)
	con.say("filling %d inboxes with %d messages each while their clients are offline", cfg.Clients, cfg.Messages)
	ackers := make([]*acker, len(senders))
	var wg sync.WaitGroup
	for s, c := range senders {
		a := newAcker(cfg.Window)
		ackers[s] = a
		from := cfg.Clients + s
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.close()
			for to := s; to < cfg.Clients; to += len(senders) {
				id := creds[to].UserID
				sendStream(ctx, a, pacer{}, streamKey{from: int32(from), conv: directConv(to)}, uint32(from), cfg.Messages, cfg.PayloadSize,
					func(ctx context.Context, b []byte) *client.PendingSend { return c.SendAsync(ctx, id, b) })
			}
		}()
	}
	m := con.track("filling", func() status {
		sent, _ := sentOf(ackers)
		return status{Done: sent, Total: total, Unit: "msgs stored"}
	})
	wg.Wait()
	m.Stop()
	if sent, errs := sentOf(ackers); errs > 0 {
		return nil, fmt.Errorf("bench: filling the inboxes: %d of %d sends failed (last: %v)", errs, sent+errs, lastErrOf(ackers))
	}
	return ackers, nil
}

func lastErrOf(ackers []*acker) error {
	for _, a := range ackers {
		if e := a.lastErr.Load(); e != nil {
			return *e
		}
	}
	return nil
}

func sumOf(xs []int64) int64 {
	var n int64
	for _, x := range xs {
		n += x
	}
	return n
}
