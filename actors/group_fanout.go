package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// The fan-out of a group's log to its members' User grains.
//
// Every member has a cursor: every log entry for it up to the cursor is in
// its inboxes. A member with entries to get is queued; up to
// FanoutConcurrency members at a time get one request each (a batch of up
// to FanoutBatch entries, in group_seq order), asynchronously, so the
// grain's mailbox never waits. One request per member at a time keeps each
// member's entries in order; a member whose grain fails or is slow is
// retried with backoff while the others go on. Entries come from the
// in-memory tail of the log, or from the store for a member further behind.
//
// The store keeps the lowest cursor (AdvanceFanout): after a crash the
// group resumes from there, re-sending to every member what may not have
// reached it, and User grains drop what they already have, so nobody gets
// an entry twice and nobody misses one that was acknowledged.

// maxFanoutBytes caps the ciphertext one fan-out request carries.
const maxFanoutBytes = 1 << 20

// fanout is a group's fan-out state.
type fanout struct {
	// tail holds every stored entry numbered above tailFrom, ascending.
	tail     []*courierpb.GroupLogEntry
	tailFrom uint64
	// last is the highest group_seq stored; durable the cursor stored.
	last, durable uint64

	ready    []*gmember
	inflight int

	advancing bool
	advTimer  *time.Timer
	retry     *time.Timer
	retryAt   time.Time
}

type tickKind int

const (
	tickRetry tickKind = iota
	tickAdvance
)

// fanoutTick is a timer's message to its grain.
type fanoutTick struct {
	gen  int
	kind tickKind
}

func (f *fanout) stopTimers() {
	if f.advTimer != nil {
		f.advTimer.Stop()
		f.advTimer = nil
	}
	if f.retry != nil {
		f.retry.Stop()
		f.retry = nil
	}
}

// append takes newly stored entries (ascending, above last) into the tail.
func (f *fanout) append(entries []*courierpb.GroupLogEntry, limit int) {
	f.tail = append(f.tail, entries...)
	f.last = max(f.last, entries[len(entries)-1].GroupSeq)
	// Trim in chunks, so a long tail is not copied on every append.
	if over := len(f.tail) - limit; over > limit/4 {
		f.tailFrom = f.tail[over-1].GroupSeq
		f.tail = slices.Delete(f.tail, 0, over)
	}
}

// trim forgets entries every member has.
func (f *fanout) trim(through uint64) {
	n := sort.Search(len(f.tail), func(i int) bool { return f.tail[i].GroupSeq > through })
	if n > 0 {
		f.tail = slices.Delete(f.tail, 0, n)
	}
	f.tailFrom = max(f.tailFrom, through)
}

// loadTail reads the log above cursor: the newest limit entries, the
// group_seq above which every stored entry is among them, and the highest
// group_seq stored.
func loadTail(ctx context.Context, store persistence.GroupStore, groupID string, cursor uint64, limit int) (tail []*courierpb.GroupLogEntry, from, last uint64, err error) {
	const page = 512
	after := cursor
	from, last = cursor, cursor
	for {
		entries, err := store.GroupLog(ctx, groupID, after, page)
		if err != nil {
			return nil, 0, 0, err
		}
		tail = append(tail, entries...)
		if over := len(tail) - limit; over > 0 {
			from = tail[over-1].GroupSeq
			tail = slices.Delete(tail, 0, over)
		}
		if len(entries) > 0 {
			after = entries[len(entries)-1].GroupSeq
			last = after
		}
		if len(entries) < page {
			return tail, from, last, nil
		}
	}
}

// wakeAll queues every member with entries to get and starts sending.
func (g *groupGrain) wakeAll(ctx actor.Context) {
	now := time.Now()
	for _, m := range g.members {
		g.queue(m, now)
	}
	g.pump(ctx)
}

func (g *groupGrain) queue(m *gmember, now time.Time) {
	if m.queued || m.inflight || m.cursor >= g.fan.last || now.Before(m.retryAt) {
		return
	}
	m.queued = true
	g.fan.ready = append(g.fan.ready, m)
}

// pump starts requests for queued members while there is room.
func (g *groupGrain) pump(ctx actor.Context) {
	for g.fan.inflight < g.cfg.FanoutConcurrency && len(g.fan.ready) > 0 {
		m := g.fan.ready[0]
		g.fan.ready[0] = nil
		g.fan.ready = g.fan.ready[1:]
		m.queued = false
		if g.members[m.st.UserId] != m || m.inflight || m.cursor >= g.fan.last {
			continue
		}
		g.deliverTo(ctx, m)
	}
	if len(g.fan.ready) == 0 {
		g.fan.ready = nil // give a burst's memory back
	}
	g.scheduleAdvance()
}

// deliverTo sends a member its next batch.
func (g *groupGrain) deliverTo(ctx actor.Context, m *gmember) {
	if m.cursor >= g.fan.tailFrom {
		batch, through := g.batchFor(m, g.fan.tail, g.fan.last)
		g.sendBatch(ctx, m, batch, through)
		return
	}
	// Behind the in-memory tail: read its next entries from the store.
	m.inflight = true
	g.fan.inflight++
	gen, after, limit := g.gen, m.cursor, g.cfg.FanoutBatch*4
	// Only entries stored before the read are surely in it.
	bound := g.fan.last
	groups, id := g.deps.Groups, g.id
	cluster.RunAsync(ctx, g.stop, g.deps.Config.StoreTimeout, func(c context.Context) (any, error) {
		return groups.GroupLog(c, id, after, limit)
	}, func(res any, err error) {
		if gen != g.gen {
			return
		}
		m.inflight = false
		g.fan.inflight--
		if err != nil {
			g.fanoutFailed(ctx, m, err)
			return
		}
		page := res.([]*courierpb.GroupLogEntry)
		through := bound
		if len(page) == limit {
			through = min(through, page[len(page)-1].GroupSeq)
		}
		batch, scanned := g.batchFor(m, page, through)
		g.sendBatch(ctx, m, batch, scanned)
	})
}

// batchFor picks, from src (which holds every stored entry in
// (m.cursor, through]), the next entries for m. scanned is how far it
// looked: every entry for m up to scanned is in batch.
func (g *groupGrain) batchFor(m *gmember, src []*courierpb.GroupLogEntry, through uint64) (batch []*courierpb.GroupLogEntry, scanned uint64) {
	i := sort.Search(len(src), func(i int) bool { return src[i].GroupSeq > m.cursor })
	scanned = m.cursor
	size := 0
	for ; i < len(src); i++ {
		e := src[i]
		if e.GroupSeq > through {
			break
		}
		if len(batch) == g.cfg.FanoutBatch || (len(batch) > 0 && size+len(e.GetEntry().GetCiphertext()) > maxFanoutBytes) {
			return batch, scanned
		}
		scanned = e.GroupSeq
		if !m.covers(e.GroupSeq) {
			continue
		}
		batch = append(batch, forMember(e, m.st.UserId))
		size += len(e.GetEntry().GetCiphertext())
	}
	return batch, max(scanned, through)
}

// forMember drops other members' per-device ciphertexts from an entry.
func forMember(e *courierpb.GroupLogEntry, userID string) *courierpb.GroupLogEntry {
	if len(e.PerDevice) == 0 {
		return e
	}
	out := &courierpb.GroupLogEntry{GroupSeq: e.GroupSeq, Entry: e.Entry}
	for _, dc := range e.PerDevice {
		if dc.UserId == userID {
			out.PerDevice = append(out.PerDevice, dc)
		}
	}
	return out
}

// sendBatch delivers batch to m's User grain; scanned becomes m's cursor
// once it is stored.
func (g *groupGrain) sendBatch(ctx actor.Context, m *gmember, batch []*courierpb.GroupLogEntry, scanned uint64) {
	if len(batch) == 0 {
		m.cursor = max(m.cursor, scanned)
		g.memberDone(ctx, m)
		return
	}
	m.inflight = true
	g.fan.inflight++
	user := m.st.UserId
	key := fmt.Sprintf("fanout/%s/%d-%d", g.id, batch[0].GroupSeq, scanned)
	gen := g.gen
	g.deps.Cluster.RequestAsync(ctx, UserGrainID(user), &courierpb.DeliverGroupEntries{GroupId: g.id, Entries: batch}, key, g.deps.Config.RequestTimeout, func(reply proto.Message, err error) {
		if gen != g.gen {
			return
		}
		m.inflight = false
		g.fan.inflight--
		if err == nil {
			if r, ok := reply.(*courierpb.DeliverGroupEntriesReply); ok && r.Error != nil {
				if r.Error.Code == courierpb.ErrorCode_NOT_FOUND {
					// The account is gone: nobody to deliver to.
					g.log.Info("group member has no account; skipping its fan-out", "user_id", user)
				} else {
					err = fmt.Errorf("%s: %s", r.Error.Code, r.Error.Message)
				}
			}
		}
		if err != nil {
			g.fanoutFailed(ctx, m, err)
			return
		}
		m.failures = 0
		m.retryAt = time.Time{}
		m.cursor = max(m.cursor, scanned)
		g.memberDone(ctx, m)
	})
}

// memberDone queues m again if it has more to get, or drops an ex-member
// that has everything.
func (g *groupGrain) memberDone(ctx actor.Context, m *gmember) {
	g.drained(m)
	if g.members[m.st.UserId] == m {
		g.queue(m, time.Now())
	}
	g.pump(ctx)
}

// fanoutFailed retries m after a growing, jittered pause; the others go on.
func (g *groupGrain) fanoutFailed(ctx actor.Context, m *gmember, err error) {
	m.failures++
	d := min(100*time.Millisecond<<min(m.failures-1, 16), g.cfg.FanoutMaxBackoff)
	d = d/2 + rand.N(d/2+1)
	m.retryAt = time.Now().Add(d)
	level := slog.LevelDebug
	if m.failures == 3 || m.failures%20 == 0 {
		level = slog.LevelWarn
	}
	g.log.Log(context.Background(), level, "group fan-out to a member failed; retrying", "user_id", m.st.UserId, "failures", m.failures, "retry_in", d, "err", err)
	g.armRetry(m.retryAt)
	g.pump(ctx)
}

func (g *groupGrain) armRetry(at time.Time) {
	if g.fan.retry != nil && !g.fan.retryAt.After(at) {
		return // an earlier tick will come and re-arm for the rest
	}
	if g.fan.retry != nil {
		g.fan.retry.Stop()
	}
	g.fan.retryAt = at
	root, self, tick := g.system.Root, g.self, fanoutTick{gen: g.gen, kind: tickRetry}
	g.fan.retry = time.AfterFunc(time.Until(at), func() { root.Send(self, tick) })
}

func (g *groupGrain) onTick(ctx actor.Context, t fanoutTick) {
	if t.gen != g.gen {
		return
	}
	switch t.kind {
	case tickRetry:
		g.fan.retry = nil
		now := time.Now()
		var next time.Time
		for _, m := range g.members {
			if now.Before(m.retryAt) {
				if next.IsZero() || m.retryAt.Before(next) {
					next = m.retryAt
				}
				continue
			}
			g.queue(m, now)
		}
		if !next.IsZero() {
			g.armRetry(next)
		}
		g.pump(ctx)
	case tickAdvance:
		g.fan.advTimer = nil
		g.advance(ctx)
	}
}

// scheduleAdvance arranges for the stored cursor to catch up soon. The
// lowest cursor is computed at most every advanceEvery, not per reply.
const advanceEvery = 50 * time.Millisecond

func (g *groupGrain) scheduleAdvance() {
	if g.fan.advTimer != nil || g.fan.advancing || g.fan.durable >= g.fan.last || g.system == nil {
		return
	}
	root, self, tick := g.system.Root, g.self, fanoutTick{gen: g.gen, kind: tickAdvance}
	g.fan.advTimer = time.AfterFunc(advanceEvery, func() { root.Send(self, tick) })
}

// lowCursor is the group_seq through which every member has everything.
func (g *groupGrain) lowCursor() uint64 {
	low := g.fan.last
	for _, m := range g.members {
		if m.cursor < m.lastSeq() {
			low = min(low, m.cursor)
		}
	}
	return low
}

// saveCursor stores the cursor before the grain passivates, so its next
// activation (or a restart) does not send members what they have. It runs
// on the mailbox: the grain is stopping anyway.
func (g *groupGrain) saveCursor() {
	if !g.loaded || g.deps.Groups == nil || g.fan.advancing {
		return
	}
	low := g.lowCursor()
	if low <= g.fan.durable {
		return
	}
	c, cancel := context.WithTimeout(context.Background(), g.deps.Config.StoreTimeout)
	defer cancel()
	if err := g.deps.Groups.AdvanceFanout(c, g.id, low); err != nil {
		g.log.Warn("storing the group fan-out cursor on stop failed", "through", low, "err", err)
		return
	}
	g.fan.durable = low
}

// advance stores the lowest member cursor, so a restart resumes from there,
// and drops from memory what every member has.
func (g *groupGrain) advance(ctx actor.Context) {
	low := g.lowCursor()
	if low <= g.fan.durable {
		return // pump schedules the next look
	}
	g.fan.advancing = true
	gen, groups, id := g.gen, g.deps.Groups, g.id
	cluster.RunAsync(ctx, g.stop, g.deps.Config.StoreTimeout, func(c context.Context) (any, error) {
		return nil, groups.AdvanceFanout(c, id, low)
	}, func(_ any, err error) {
		if gen != g.gen {
			return
		}
		g.fan.advancing = false
		if err != nil {
			g.log.Warn("storing the group fan-out cursor failed", "through", low, "err", err)
		} else {
			g.fan.durable = max(g.fan.durable, low)
			g.fan.trim(g.fan.durable)
		}
		g.scheduleAdvance()
	})
}

// ResumeFanouts wakes the groups whose fan-out a crash (or a passivation
// before the cursor was stored) left unfinished: once now, then every
// interval, until ctx ends. A node runs it from start-up; waking a group
// that is already active costs one request.
func ResumeFanouts(ctx context.Context, cl *cluster.Cluster, groups persistence.GroupStore, interval time.Duration, log *slog.Logger) {
	if interval <= 0 {
		interval = time.Minute
	}
	for {
		if n, err := resumeFanouts(ctx, cl, groups); err != nil && ctx.Err() == nil {
			log.Warn("resuming group fan-outs failed", "err", err)
		} else if n > 0 {
			log.Info("woke groups with an unfinished fan-out", "groups", n)
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func resumeFanouts(ctx context.Context, cl *cluster.Cluster, groups persistence.GroupStore) (int, error) {
	ids, err := groups.PendingFanout(ctx, 100_000)
	if err != nil {
		return 0, err
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := cl.Request(ctx, GroupGrainID(id), &courierpb.WakeGroup{GroupId: id}, "wake/"+id); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return len(ids), errors.Join(errs...)
}
