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

// FanoutConfig describes a group run: Groups groups of Members users each;
// the first Senders members of every group send Messages numbered messages
// to it, and every other member checks it gets each one once, in order.
type FanoutConfig struct {
	Target
	// Groups is how many groups run side by side (default 1).
	Groups int
	// Members per group, the creator included (default 100, at most 1,024).
	Members int
	// Senders per group (default 4, at most Members).
	Senders int
	// Messages each sender sends (default 50).
	Messages int
	// Window is each sender's sends in flight in closed loop (default 4).
	Window int
	// Rate, when positive, is open loop: the senders together send Rate
	// group messages a second.
	Rate float64
	Traffic
}

func (c FanoutConfig) withDefaults() (FanoutConfig, error) {
	var err error
	if c.Target, err = c.Target.withDefaults(); err != nil {
		return c, err
	}
	if c.Traffic, err = c.Traffic.withDefaults(); err != nil {
		return c, err
	}
	c.Groups = orDefault(c.Groups, 1)
	c.Members = orDefault(c.Members, 100)
	c.Senders = orDefault(c.Senders, 4)
	c.Messages = orDefault(c.Messages, 50)
	c.Window = orDefault(c.Window, 4)
	switch {
	case c.Groups < 0 || c.Messages < 0 || c.Window < 0 || c.Concurrency < 0 || c.Rate < 0:
		return c, errors.New("bench: groups, messages, window, rate and concurrency must be positive")
	case c.Members < 2 || c.Members > client.MaxGroupMembers:
		return c, fmt.Errorf("bench: members must be 2..%d", client.MaxGroupMembers)
	case c.Senders < 1 || c.Senders > c.Members:
		return c, errors.New("bench: senders must be 1..members")
	}
	return c, nil
}

// Fanout runs the group scenario. User g*Members+j is member j of group g;
// member 0 creates the group.
func Fanout(ctx context.Context, cfg FanoutConfig) (*Report, error) {
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
	users := cfg.Groups * cfg.Members
	creds, err := f.register(run.ctx, users)
	if err != nil {
		return nil, run.setupErr(err)
	}
	clients, err := f.dial(run.ctx, creds, 0)
	if err != nil {
		return nil, run.setupErr(err)
	}
	defer closeAll(clients, f.conc)
	groupIDs, err := createGroups(run.ctx, con, clients, cfg.Groups, f.conc, func(g int) []int {
		return span(g*cfg.Members, cfg.Members)
	})
	if err != nil {
		return nil, run.setupErr(err)
	}
	setup := time.Since(setupStart)

	userIndex := indexUsers(creds)
	receivers := func(k streamKey) []int {
		g := int(^k.conv)
		out := make([]int, 0, cfg.Members-1)
		for _, u := range span(g*cfg.Members, cfg.Members) {
			if u != int(k.from) {
				out = append(out, u)
			}
		}
		return out
	}
	inboxes := make([]*inbox, users)
	start := time.Now()
	cpu := startCPU(cfg.ServerPIDs)
	rec := newRecorder(start)
	var receipts atomic.Int64
	var readers sync.WaitGroup
	for u := range users {
		g := u / cfg.Members
		in := newInbox()
		inboxes[u] = in
		classify := func(e client.Entry, h header) (streamKey, bool) {
			from, known := userIndex[e.FromUserID]
			ok := known && e.IsGroupMessage() && e.GroupID == groupIDs[g] && int(h.stream) == from &&
				from/cfg.Members == g && from%cfg.Members < cfg.Senders && int(h.seq) < cfg.Messages
			return streamKey{from: int32(from), conv: groupConv(g)}, ok
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			receive(clients[u], in, classify, latencyTo(rec, u), func(e client.Entry) {
				if e.IsGroupDelivered() {
					receipts.Add(int64(len(e.ReceiptFor)))
				}
			})
		}()
	}

	window, mode := cfg.Window, "closed-loop"
	if cfg.Rate > 0 {
		window, mode = 0, "open-loop"
	}
	nSenders := cfg.Groups * cfg.Senders
	total := int64(nSenders * cfg.Messages * (cfg.Members - 1))
	con.say("sending %d group messages (%d groups x %d senders x %d, %s) = %d deliveries", nSenders*cfg.Messages, cfg.Groups, cfg.Senders, cfg.Messages, mode, total)
	ackers := make([]*acker, 0, nSenders)
	var senders sync.WaitGroup
	for g := range cfg.Groups {
		for s := range cfg.Senders {
			u := g*cfg.Members + s
			a := newAcker(window)
			p := openLoop(start, cfg.Rate, len(ackers), nSenders)
			ackers = append(ackers, a)
			c, gid := clients[u], groupIDs[g]
			senders.Add(1)
			go func() {
				defer senders.Done()
				ctx, cancel := context.WithCancel(run.ctx)
				defer cancel()
				sendStream(ctx, a, p, streamKey{from: int32(u), conv: groupConv(g)}, uint32(u), cfg.Messages, cfg.PayloadSize,
					func(ctx context.Context, b []byte) *client.PendingSend { return c.SendGroupAsync(ctx, gid, b) })
				a.close()
			}()
		}
	}
	m := con.track("sending", func() status {
		sent, _ := sentOf(ackers)
		return status{Done: sumDistinct(inboxes), Total: total, Unit: "deliveries", Extra: fmt.Sprintf("%d group msgs acked", sent)}
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
		sleep(run.ctx, lateDuplicates)
	}
	reconnects := reconnectsOf(clients)
	con.say("closing %d clients", users)
	closeAll(clients, f.conc)
	readers.Wait()

	r := &Report{Scenario: "fanout", Messages: cfg.Messages, Window: window, Mode: mode, Rate: cfg.Rate, Gateways: f.bases,
		Reconnects: reconnects, DeliveredReceipts: receipts.Load(), LatencyOf: latencyOf(mode) + " (each member)",
		Fanout: &FanoutFigures{Groups: cfg.Groups, Members: cfg.Members, Senders: cfg.Senders}}
	r.Sent, r.SendErrors = sentOf(ackers)
	if err := lastErrOf(ackers); err != nil {
		r.LastSendError = err.Error()
	}
	r.setTally(account(allStreams(ackers), receivers, inboxes))
	r.SetupSec = setup.Seconds()
	r.setElapsed(end.Sub(start), r.Sent)
	r.setCost(cpu, r.Sent)
	h, tl := rec.result()
	r.setLatency(h)
	r.setTimeline("deliveries", tl)
	run.finish(r, caughtUp)
	return r, nil
}

// span is [from, from+n).
func span(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

func indexUsers(creds []client.Credentials) map[string]int {
	m := make(map[string]int, len(creds))
	for i, c := range creds {
		m[c.UserID] = i
	}
	return m
}

// createGroups creates n groups; members(g) lists group g's users, the
// first of them its creator. It returns the group ids.
func createGroups(ctx context.Context, con *console, clients []*client.Client, n, conc int, members func(g int) []int) ([]string, error) {
	con.say("creating %d groups", n)
	ids := make([]string, n)
	err := forEach(ctx, n, conc, func(ctx context.Context, g int) error {
		us := members(g)
		others := make([]string, 0, len(us)-1)
		for _, u := range us[1:] {
			others = append(others, clients[u].UserID())
		}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		info, err := clients[us[0]].CreateGroup(ctx, fmt.Sprintf("bench %d", g), others)
		ids[g] = info.ID
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: create groups: %w", err)
	}
	return ids, nil
}
