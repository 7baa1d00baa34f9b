package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// MixedConfig describes a realistic mix: Users users, Groups groups of
// GroupMin..GroupMax random members, messages at Rate a second in all for
// Duration (a GroupShare of them to groups, the rest 1:1 to a random
// peer), receivers marking a ReadShare of their 1:1 messages read, and
// ReconnectRate connections a second dropped as a flaky network would; a
// TypingShare of messages are preceded by a typing indicator, and every
// user watches the presence of PresenceSubs peers.
type MixedConfig struct {
	Target
	// Users (default 200).
	Users int
	// Groups (default 10) and their sizes (default 5..200, at most Users
	// and 1,024).
	Groups, GroupMin, GroupMax int
	// Rate is messages a second over all users (default 200); the mix
	// always runs open loop.
	Rate float64
	// Duration is how long messages are sent (default 10s).
	Duration time.Duration
	// GroupShare is the share of messages sent to groups (0..1).
	GroupShare float64
	// ReadShare is the share of received 1:1 messages marked read (0..1).
	ReadShare float64
	// ReconnectRate is connections dropped a second (0: none).
	ReconnectRate float64
	// TypingShare is the share of messages preceded by a typing indicator
	// (0..1).
	TypingShare float64
	// PresenceSubs is how many peers' presence each user subscribes to.
	PresenceSubs int
	// Seed makes the mix reproducible (group members, peers, shares).
	Seed uint64
	Traffic
}

func (c MixedConfig) withDefaults() (MixedConfig, error) {
	var err error
	if c.Target, err = c.Target.withDefaults(); err != nil {
		return c, err
	}
	if c.Traffic, err = c.Traffic.withDefaults(); err != nil {
		return c, err
	}
	c.Users = orDefault(c.Users, 200)
	c.Groups = orDefault(c.Groups, 10)
	c.GroupMin = orDefault(c.GroupMin, 5)
	c.GroupMax = min(orDefault(c.GroupMax, 200), c.Users, client.MaxGroupMembers)
	c.GroupMin = min(c.GroupMin, c.GroupMax)
	c.Rate = orDefault(c.Rate, 200)
	c.Duration = orDefault(c.Duration, 10*time.Second)
	switch {
	case c.Users < 2:
		return c, errors.New("bench: the mix needs at least 2 users")
	case c.Groups < 0 || c.GroupMin < 2 || c.Rate < 0 || c.Duration < 0 || c.Concurrency < 0 || c.ReconnectRate < 0:
		return c, errors.New("bench: groups, rate, duration and concurrency must be positive, and groups have at least 2 members")
	case c.GroupShare < 0 || c.GroupShare > 1 || c.ReadShare < 0 || c.ReadShare > 1 || c.TypingShare < 0 || c.TypingShare > 1 || c.PresenceSubs < 0:
		return c, errors.New("bench: shares are between 0 and 1")
	}
	return c, nil
}

// mixPlan is who is in which group.
type mixPlan struct {
	members  [][]int        // per group, the creator first
	isMember []map[int]bool // per group
	groupsOf [][]int        // per user
}

func planMix(cfg MixedConfig) mixPlan {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0))
	p := mixPlan{members: make([][]int, cfg.Groups), isMember: make([]map[int]bool, cfg.Groups), groupsOf: make([][]int, cfg.Users)}
	for g := range cfg.Groups {
		size := cfg.GroupMin + rng.IntN(cfg.GroupMax-cfg.GroupMin+1)
		p.members[g] = rng.Perm(cfg.Users)[:size]
		p.isMember[g] = make(map[int]bool, size)
		for _, u := range p.members[g] {
			p.isMember[g][u] = true
			p.groupsOf[u] = append(p.groupsOf[u], g)
		}
	}
	return p
}

// maxMixSeq bounds the sequence numbers a receiver accepts (garbage
// headers must not grow its bitsets without bound).
const maxMixSeq = 1 << 22

type readReq struct{ peer, id string }

// Mixed runs the mix.
func Mixed(ctx context.Context, cfg MixedConfig) (*Report, error) {
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
	creds, err := f.register(run.ctx, cfg.Users)
	if err != nil {
		return nil, run.setupErr(err)
	}
	clients, err := f.dial(run.ctx, creds, 0)
	if err != nil {
		return nil, run.setupErr(err)
	}
	defer closeAll(clients, f.conc)
	plan := planMix(cfg)
	groupIDs, err := createGroups(run.ctx, con, clients, cfg.Groups, f.conc, func(g int) []int { return plan.members[g] })
	if err != nil {
		return nil, run.setupErr(err)
	}
	var social socialCounts
	stopSocial := make(chan struct{})
	socialDone := countSocial(clients, &social, stopSocial)
	defer func() {
		select {
		case <-stopSocial:
		default:
			close(stopSocial)
		}
		socialDone.Wait()
	}()
	if err := subscribePresence(run.ctx, con, cfg, clients, f.conc, &social); err != nil {
		return nil, run.setupErr(err)
	}
	setup := time.Since(setupStart)

	userIndex := indexUsers(creds)
	groupIndex := make(map[string]int, len(groupIDs))
	for g, id := range groupIDs {
		groupIndex[id] = g
	}
	receivers := func(k streamKey) []int {
		if k.conv >= 0 {
			return []int{int(k.conv)}
		}
		out := make([]int, 0, len(plan.members[^k.conv]))
		for _, u := range plan.members[^k.conv] {
			if u != int(k.from) {
				out = append(out, u)
			}
		}
		return out
	}

	start := time.Now()
	cpu := startCPU(cfg.ServerPIDs)
	rec := newRecorder(start)
	var marks readMarks
	var directGot, groupGot, receipts atomic.Int64
	inboxes := make([]*inbox, cfg.Users)
	readQs := make([]chan readReq, cfg.Users)
	var readers, markers sync.WaitGroup
	for u := range cfg.Users {
		in := newInbox()
		inboxes[u] = in
		classify := func(e client.Entry, h header) (streamKey, bool) {
			from, known := userIndex[e.FromUserID]
			if !known || int(h.stream) != from || h.seq >= maxMixSeq || from == u {
				return streamKey{}, false
			}
			if e.IsMessage() {
				return streamKey{from: int32(from), conv: directConv(u)}, true
			}
			g, known := groupIndex[e.GroupID]
			ok := known && plan.isMember[g][u] && plan.isMember[g][from]
			return streamKey{from: int32(from), conv: groupConv(g)}, ok
		}
		q := make(chan readReq, 1024)
		readQs[u] = q
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(u)+1<<32))
		fresh := func(now time.Time, h header, e client.Entry) {
			rec.record(u, now, h.latency(now))
			if e.IsGroupMessage() {
				groupGot.Add(1)
				return
			}
			directGot.Add(1)
			if rng.Float64() < cfg.ReadShare {
				// Noted first: the receipt may come back before the send
				// below returns.
				marks.note(e.ClientMsgID)
				select {
				case q <- readReq{peer: e.FromUserID, id: e.ClientMsgID}:
				default: // the marker is behind: this one stays unread
					marks.forget(e.ClientMsgID)
				}
			}
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			receive(clients[u], in, classify, fresh, func(e client.Entry) {
				switch {
				case e.IsRead():
					marks.receipt(e.ReceiptFor)
				case e.IsDelivered():
					receipts.Add(int64(len(e.ReceiptFor)))
				}
			})
		}()
		markers.Add(1)
		go func() { defer markers.Done(); markRead(run.ctx, clients[u], q, &marks) }()
	}

	expectMsgs := int64(cfg.Rate * cfg.Duration.Seconds())
	con.say("sending about %d messages over %v (%.0f/s, %.0f%% to groups, %.0f%% after typing, %.0f%% of 1:1 marked read, %.1f drops/s)",
		expectMsgs, cfg.Duration, cfg.Rate, 100*cfg.GroupShare, 100*cfg.TypingShare, 100*cfg.ReadShare, cfg.ReconnectRate)
	ackers := make([]*acker, cfg.Users)
	var directSent, groupSent atomic.Int64
	var senders sync.WaitGroup
	sendEnd := start.Add(cfg.Duration)
	for u := range cfg.Users {
		a := newAcker(0)
		ackers[u] = a
		p := openLoop(start, cfg.Rate, u, cfg.Users)
		senders.Add(1)
		go func() {
			defer senders.Done()
			ctx, cancel := context.WithCancel(run.ctx)
			defer cancel()
			mixSender(ctx, cfg, plan, u, a, p, sendEnd, clients, groupIDs, &directSent, &groupSent, &social)
			a.close() // before cancel: the last sends are still waiting for their acks
		}()
	}
	stopDrops := make(chan struct{})
	var drops atomic.Int64
	var dropper sync.WaitGroup
	dropper.Add(1)
	go func() { defer dropper.Done(); dropConnections(cfg, clients, stopDrops, &drops) }()

	m := con.track("sending", func() status {
		sent, _ := sentOf(ackers)
		return status{Done: sumDistinct(inboxes), Unit: "deliveries", Extra: fmt.Sprintf("%d/%d msgs acked, %d reads back", sent, expectMsgs, marks.received.Load())}
	})
	senders.Wait()
	close(stopDrops)
	dropper.Wait()
	caughtUp := run.settle(inboxes, expectedPer(allStreams(ackers), receivers, cfg.Users), cfg.stall())
	end := time.Now()
	cpu.stop()
	if last := lastArrival(inboxes); !last.IsZero() && caughtUp {
		end = last
	}
	// Read receipts trail the messages they are about.
	readsBack := caughtUp && waitZero(run.ctx, &marks.outstanding, cfg.stall())
	m.Stop()
	if caughtUp {
		sleep(run.ctx, lateDuplicates)
	}
	reconnects := reconnectsOf(clients)
	close(stopSocial)
	socialDone.Wait()
	con.say("closing %d clients", cfg.Users)
	closeAll(clients, f.conc)
	readers.Wait()
	for _, q := range readQs {
		close(q)
	}
	markers.Wait()

	r := &Report{Scenario: "mixed", Mode: "open-loop", Rate: cfg.Rate, Gateways: f.bases, Reconnects: reconnects,
		DeliveredReceipts: receipts.Load(), LatencyOf: latencyOf("open-loop") + " (1:1 and group members)",
		Mixed: &MixedFigures{Users: cfg.Users, Groups: cfg.Groups, GroupMin: cfg.GroupMin, GroupMax: cfg.GroupMax,
			GroupShare: cfg.GroupShare, ReadShare: cfg.ReadShare, DirectSent: directSent.Load(), GroupSent: groupSent.Load(),
			DirectDelivered: directGot.Load(), GroupDelivered: groupGot.Load(), ReadsSent: marks.sent.Load(),
			ReadsReceived: marks.received.Load(), ReadsRepeated: marks.unexpected.Load(), ForcedReconnects: drops.Load(),
			TypingShare: cfg.TypingShare, TypingSent: social.typingSent.Load(), TypingFailed: social.typingFailed.Load(),
			TypingReceived: social.typingGot.Load(), PresenceSubscriptions: social.subscriptions.Load(), PresenceEvents: social.presenceGot.Load()}}
	if !readsBack {
		r.Mixed.ReadsMissing = marks.outstanding.Load()
	}
	r.Messages = int(r.Mixed.DirectSent + r.Mixed.GroupSent)
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

// mixSender is user u's open-loop sender: each tick it sends one message,
// to one of its groups (GroupShare) or to a random peer.
func mixSender(ctx context.Context, cfg MixedConfig, plan mixPlan, u int, a *acker, p pacer, end time.Time,
	clients []*client.Client, groupIDs []string, directSent, groupSent *atomic.Int64, social *socialCounts) {
	rng := rand.New(rand.NewPCG(cfg.Seed, uint64(u)))
	next := make(map[streamKey]int)
	c := clients[u]
	for k := 0; ; k++ {
		at, ok := p.wait(ctx, k)
		if !ok || at.After(end) {
			return
		}
		var key streamKey
		var send func(b []byte) *client.PendingSend
		if mine := plan.groupsOf[u]; len(mine) > 0 && rng.Float64() < cfg.GroupShare {
			g := mine[rng.IntN(len(mine))]
			key = streamKey{from: int32(u), conv: groupConv(g)}
			if rng.Float64() < cfg.TypingShare {
				typeFirst(c, "", groupIDs[g], social)
			}
			send = func(b []byte) *client.PendingSend { return c.SendGroupAsync(ctx, groupIDs[g], b) }
			groupSent.Add(1)
		} else {
			peer := rng.IntN(cfg.Users - 1)
			if peer >= u {
				peer++
			}
			key = streamKey{from: int32(u), conv: directConv(peer)}
			to := clients[peer].UserID()
			if rng.Float64() < cfg.TypingShare {
				typeFirst(c, to, "", social)
			}
			send = func(b []byte) *client.PendingSend { return c.SendAsync(ctx, to, b) }
			directSent.Add(1)
		}
		seq := next[key]
		next[key] = seq + 1
		a.push(pending{ps: send(newPayload(cfg.PayloadSize, at, uint32(seq), uint32(u))), key: key, seq: seq})
	}
}
