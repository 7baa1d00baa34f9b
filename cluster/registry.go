package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// The activation registry is the O(1) map from GrainID to the live actor,
// split into shards so that activations, passivations and deliveries of
// different grains never queue behind one lock or one actor. (Proto.Actor's
// disthash routes every activation through one placement actor and scans all
// grains on every termination; 100 k passivations then stall activations
// for seconds.)
//
// Every delivery happens under the grain's shard lock, and a grain is marked
// "passivating" under the same lock before its PoisonPill (for an idle or
// self-requested passivation, its stopWhenIdle marker) is sent. So a
// message is either in the mailbox before the PoisonPill (the grain handles it before stopping) or it
// is buffered in the activation and handed to a fresh activation when the
// old one reports *actor.Stopped. Nothing is sent to a stopping actor, so
// nothing is silently dropped.

const shardCount = 256

type shard struct {
	mu     sync.Mutex
	grains map[GrainID]*activation
	counts []int // live activations per kind index
	_      [24]byte
}

func (c *Cluster) shardFor(h uint64) *shard { return &c.shards[mix64(h)%shardCount] }

type kindState struct {
	c              *Cluster
	name           string
	index          int
	producer       func(identity string) actor.Actor
	passivateAfter time.Duration
	guardian       actor.SupervisorStrategy
}

func newKindState(c *Cluster, k Kind, index int) *kindState {
	pa := k.PassivateAfter
	if pa == 0 {
		pa = c.cfg.PassivateAfter
	}
	return &kindState{
		c:              c,
		name:           k.Name,
		index:          index,
		producer:       k.Producer,
		passivateAfter: pa,
		guardian:       newBackoffStrategy(k.Name, c.log),
	}
}

// activation is one live grain. It is also the actor Proto.Actor runs: it
// wraps the kind's actor to own passivation, so grains need no cluster code.
type activation struct {
	kind *kindState
	id   GrainID
	hash uint64
	sh   *shard

	// Guarded by sh.mu.
	pid         *actor.PID
	passivating bool
	pending     []*actor.MessageEnvelope

	// Owned by the grain's mailbox (one goroutine at a time).
	inner actor.Actor
	self  *actor.PID
	// awaiting counts continuations (RunAsync, RequestAsync) still to come
	// back: a grain waiting for one is not idle, whatever its clock says.
	awaiting int
	// passivateWhenDone: the grain asked to passivate (Passivate) while
	// continuations were still to come back; the last one passivates it.
	passivateWhenDone bool
	// stopWhenIdle: the grain is passivating and stops when its last
	// continuation has run.
	stopWhenIdle bool
	// drainWait: stopWhenIdle, with continuations outstanding; read by
	// Shutdown, which stops such grains without waiting for them.
	drainWait atomic.Bool
	// lastActive is when the grain last handled a message (clock); the
	// idle sweep (sweepIdle) reads it from its own goroutine.
	lastActive atomic.Int64
}

// passivationTick is the idle sweep's message to a grain it found idle. It
// is a user message so it queues behind real work, and never reaches the
// kind's actor.
type passivationTick struct{}

func (*passivationTick) IgnoreDeadLetterLogging()    {}
func (*passivationTick) NotInfluenceReceiveTimeout() {}

var tick = &passivationTick{}

var clockBase = time.Now()

// clock is monotonic time since process start (cheap to compare and store).
func clock() time.Duration { return time.Since(clockBase) }

// produce is the Props producer: called on activation and on every
// supervisor restart, so each restart gets a fresh kind actor.
func (a *activation) produce(*actor.ActorSystem) actor.Actor {
	inner := a.kind.producer(a.id.Identity)
	if inner == nil {
		panic(fmt.Sprintf("cluster: producer of kind %q returned nil for %q", a.kind.name, a.id.Identity))
	}
	a.inner = inner
	return a
}

// Receive passes everything to the kind's actor except the idle tick.
//
// Passivation uses the cluster's own idle sweep instead of
// ctx.SetReceiveTimeout: Proto.Actor's receive-timeout timer touches the
// actor context from the timer goroutine (a data race, #1139) and is reset on
// every message. The sweep only reads lastActive and sends a tick, so the
// grain may still use SetReceiveTimeout for its own purposes:
// *actor.ReceiveTimeout is passed through untouched and ticks do not reset
// it.
func (a *activation) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *passivationTick:
		a.onIdleTick(ctx)
		return
	case *Continuation:
		a.awaiting--
		a.lastActive.Store(int64(clock()))
		m.Run()
		if a.awaiting == 0 {
			switch {
			case a.stopWhenIdle:
				ctx.Stop(ctx.Self())
			case a.passivateWhenDone:
				a.passivate(ctx)
			}
		}
		return
	case *stopWhenIdleMsg:
		// Nothing but continuations reaches a marked grain now.
		a.stopWhenIdle = true
		if a.awaiting == 0 || a.kind.c.closing.Load() {
			ctx.Stop(ctx.Self())
			return
		}
		// Shutdown does not wait for continuations (a request may take
		// its whole timeout): it stops the grains waiting here (drainWait),
		// and one that starts waiting after Shutdown looked sees closing.
		a.drainWait.Store(true)
		if a.kind.c.closing.Load() {
			ctx.Stop(ctx.Self())
		}
		return
	case *actor.Started:
		a.self = ctx.Self()
	case *actor.Stopping:
		// Passivation already set this; a grain that stopped itself (or a
		// supervisor decision) gets new messages buffered from here on.
		a.sh.mu.Lock()
		a.passivating = true
		a.sh.mu.Unlock()
	case *actor.Stopped:
		defer a.kind.c.onStopped(a)
	}
	a.lastActive.Store(int64(clock()))
	a.inner.Receive(ctx)
}

// idleFor is how long the grain has handled no message.
func (a *activation) idleFor() time.Duration {
	return clock() - time.Duration(a.lastActive.Load())
}

func (a *activation) onIdleTick(ctx actor.Context) {
	if a.idleFor() < a.kind.passivateAfter || a.awaiting > 0 {
		return // busy since the sweep looked; a later sweep looks again
	}
	a.passivate(ctx)
}

// Passivate lets a grain leave memory as soon as the messages already in
// its mailbox are handled, without waiting for its kind's PassivateAfter:
// for an activation that holds nothing worth keeping, such as the grain of
// an id that does not exist, whose every request is answered NOT_FOUND
// (otherwise ids made up by a client would each hold an activation for
// minutes). It is the idle tick's path: deliveries from now on are
// buffered and handed to a fresh activation, so nothing is lost, and the
// next request activates the grain again. Call it only from the grain's
// Receive, with its ctx; it does nothing for an actor the cluster does not
// host. While continuations (RunAsync, RequestAsync) are still to come
// back, it waits for the last of them.
func Passivate(ctx actor.Context) {
	a, ok := ctx.Actor().(*activation)
	if !ok {
		return
	}
	if a.awaiting > 0 {
		a.passivateWhenDone = true
		return
	}
	a.passivate(ctx)
}

// passivate marks the activation passivating and queues stopWhenIdle
// behind everything in its mailbox, once. Runs on the grain's goroutine.
func (a *activation) passivate(ctx actor.Context) {
	a.sh.mu.Lock()
	start := !a.passivating
	a.passivating = true // from here on, deliveries are buffered in a.pending
	a.sh.mu.Unlock()
	if start {
		ctx.Send(ctx.Self(), stopWhenIdle)
	}
}

// stopWhenIdleMsg is the last delivery a passivating grain's mailbox gets.
// A PoisonPill in its place would stop the grain even if a message
// queued ahead of it had started work whose continuation is still to
// come back (a group create checking its members), and that continuation
// would be lost; this marker stops it once none is outstanding.
type stopWhenIdleMsg struct{}

func (*stopWhenIdleMsg) IgnoreDeadLetterLogging()    {}
func (*stopWhenIdleMsg) NotInfluenceReceiveTimeout() {}

var stopWhenIdle = &stopWhenIdleMsg{}

// deliverLocal routes env to the local activation of id, activating it if
// this node owns it. It never blocks beyond the shard lock.
func (c *Cluster) deliverLocal(id GrainID, h uint64, env *actor.MessageEnvelope) error {
	ks := c.kinds[id.Kind]
	if ks == nil {
		return fmt.Errorf("%w: %q is not hosted on %s", ErrUnknownKind, id.Kind, c.selfKey)
	}
	sh := c.shardFor(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.closing.Load() {
		return errStopping
	}
	a := sh.grains[id]
	if a == nil {
		if err := c.mayActivate(id, h); err != nil {
			return err
		}
		var err error
		if a, err = c.spawnLocked(ks, id, h, sh); err != nil {
			return err
		}
		sh.counts[ks.index]++
		c.live.Add(1)
	}
	if a.passivating {
		a.pending = append(a.pending, env)
		c.buffered.Add(1)
		return nil
	}
	// A local Send is a non-blocking mailbox push, so holding the lock here
	// is cheap, and it is what keeps passivation from racing this message.
	c.system.Root.Send(a.pid, env)
	return nil
}

// mayActivate checks, under the shard lock, that this node may start id.
func (c *Cluster) mayActivate(id GrainID, h uint64) error {
	if c.closing.Load() {
		return errStopping
	}
	v := c.view.Load()
	if v == nil {
		return errNotStarted
	}
	if cd := v.owner(id.Kind, h); cd == nil || !cd.self {
		return errWrongOwner
	}
	return nil
}

// spawnLocked starts the actor for id and records it in sh (locked by the
// caller). Counts are the caller's business: a re-activation replaces an
// entry without changing them.
func (c *Cluster) spawnLocked(ks *kindState, id GrainID, h uint64, sh *shard) (a *activation, err error) {
	a = &activation{kind: ks, id: id, hash: h, sh: sh}
	a.lastActive.Store(int64(clock()))
	// The lock-free mailbox starts with one 32-byte node where the default
	// one allocates a 10-slot ring: 200 bytes less on every grain, and most
	// grains are idle users' with an empty mailbox.
	props := actor.PropsFromProducerWithActorSystem(a.produce, actor.WithGuardian(ks.guardian), actor.WithMailbox(actor.UnboundedLockfree()), actor.WithDispatcher(Dispatcher))
	defer func() {
		// The producer runs inside SpawnNamed; a panicking producer must not
		// take the caller (and the shard lock) down with it.
		if r := recover(); r != nil {
			a, err = nil, fmt.Errorf("%w: activate %s: producer panicked: %v", ErrUnavailable, id, r)
		}
	}()
	pid, err := c.system.Root.SpawnNamed(props, "grain/"+id.Kind+"/"+id.Identity)
	if err != nil {
		return nil, fmt.Errorf("%w: activate %s: %v", ErrUnavailable, id, err)
	}
	a.pid = pid
	sh.grains[id] = a
	return a, nil
}

// onStopped runs on the grain's goroutine after *actor.Stopped. Proto.Actor
// has already removed the PID from its process registry, so a fresh
// activation may reuse the name.
func (c *Cluster) onStopped(a *activation) {
	refused, reason := c.retire(a)
	for _, env := range refused {
		c.refuse(env.Sender, reason)
	}
}

// retire removes a from the registry, or, if messages arrived while it was
// stopping, replaces it by a fresh activation and delivers them in order. It
// returns the messages that cannot be delivered here (the node no longer
// owns the grain, or is shutting down); their senders get a retryable error.
func (c *Cluster) retire(a *activation) ([]*actor.MessageEnvelope, error) {
	sh := a.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.grains[a.id] != a {
		return nil, nil
	}
	pending := a.pending
	a.pending = nil
	if len(pending) > 0 {
		err := c.mayActivate(a.id, a.hash)
		if err == nil {
			var fresh *activation
			if fresh, err = c.spawnLocked(a.kind, a.id, a.hash, sh); err == nil {
				for _, env := range pending {
					c.system.Root.Send(fresh.pid, env)
				}
				return nil, nil
			}
		}
		c.removeLocked(a)
		return pending, err
	}
	c.removeLocked(a)
	return nil, nil
}

func (c *Cluster) removeLocked(a *activation) {
	delete(a.sh.grains, a.id)
	a.sh.counts[a.kind.index]--
	if c.live.Add(-1) == 0 && c.closing.Load() {
		c.drainOnce.Do(func() { close(c.drained) })
	}
}

// passivateWhere starts passivating every activation matching pred and
// returns how many it started. It is how membership changes move grains and
// how Shutdown drains: the same path as an idle timeout.
//
// Marking happens under the shard lock (from then on deliveries buffer);
// the PoisonPills are sent after unlocking, which is just as safe (nothing
// is sent to a marked grain, so the pill still lands after everything in its
// mailbox) and keeps the lock short: each send may start a goroutine, and a
// lock holder preempted among 100 k runnable goroutines would stall every
// activation on its shard.
func (c *Cluster) passivateWhere(pred func(*activation) bool) int {
	return c.walkShards(func(a *activation) bool {
		if a.passivating || !pred(a) {
			return false
		}
		a.passivating = true
		return true
	}, c.system.Root.Poison)
}

// walkShards visits every activation, one shard at a time under its lock,
// and calls act, after that shard's lock is released, with the PID of each
// one pick accepted (pick runs under the lock and may update the
// activation). It returns how many were picked.
func (c *Cluster) walkShards(pick func(*activation) bool, act func(*actor.PID)) int {
	n := 0
	var pids []*actor.PID
	for i := range c.shards {
		sh := &c.shards[i]
		pids = pids[:0]
		sh.mu.Lock()
		for _, a := range sh.grains {
			if pick(a) {
				pids = append(pids, a.pid)
			}
		}
		sh.mu.Unlock()
		for _, pid := range pids {
			act(pid)
		}
		n += len(pids)
	}
	return n
}

// sweepIdle sends a passivation tick to every grain idle for its kind's
// PassivateAfter, every quarter of the shortest PassivateAfter (at most a
// minute): a grain leaves between 1 and 1.25 PassivateAfter after its last
// message. One sweep for the node replaces a timer per activation, about
// 140 bytes on every grain, most of which are idle users'. It runs until
// stop is closed.
func (c *Cluster) sweepIdle(stop <-chan struct{}) {
	period := time.Duration(0)
	for _, ks := range c.kinds {
		if pa := ks.passivateAfter; pa > 0 && (period == 0 || pa/4 < period) {
			period = pa / 4
		}
	}
	if period == 0 {
		return // no kind passivates
	}
	t := time.NewTicker(min(max(period, time.Millisecond), time.Minute))
	defer t.Stop()
	idle := func(a *activation) bool {
		pa := a.kind.passivateAfter
		return pa > 0 && !a.passivating && a.idleFor() >= pa
	}
	sendTick := func(pid *actor.PID) { c.system.Root.Send(pid, tick) }
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.walkShards(idle, sendTick)
		}
	}
}

// Activations returns the number of live activations per hosted kind.
// It costs one lock per shard, never a walk over grains.
func (c *Cluster) Activations() map[string]int {
	sums := make([]int, len(c.kindNames))
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for k, n := range sh.counts {
			sums[k] += n
		}
		sh.mu.Unlock()
	}
	out := make(map[string]int, len(sums))
	for k, n := range sums {
		out[c.kindNames[k]] = n
	}
	return out
}
