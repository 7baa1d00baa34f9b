package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Continuation is the second half of an actor's asynchronous step (a store
// call, a request to a grain), posted back to the actor as an ordinary user
// message so that it runs on the actor's goroutine, serialised with its
// other messages.
//
// It replaces Proto.Actor's Future + ReenterAfter on the hot path: that pair
// costs a future (a process-registry entry, a sync.Cond), often a timer, and
// a system message per step, and a 1:1 message takes seven such steps.
//
// A grain's continuations are run by its activation, which also counts them
// so that an idle sweep never passivates a grain that still waits for one.
// Any other actor that calls RunAsync or RequestAsync (sessions do) must call
// Run when it receives one.
type Continuation struct{ run func() }

// Run runs the continuation on the calling actor's goroutine.
func (k *Continuation) Run() { k.run() }

// IgnoreDeadLetterLogging: an actor that stopped before its continuation
// came back drops it; that is expected, not worth a log line.
func (*Continuation) IgnoreDeadLetterLogging() {}

// continueOn returns how to post a continuation back to the actor behind
// ctx. It must be called on that actor's goroutine.
func continueOn(ctx actor.Context) func(func()) {
	system, self := ctx.ActorSystem(), ctx.Self()
	if a, ok := ctx.Actor().(*activation); ok {
		a.awaiting++
	}
	return func(f func()) { system.Root.Send(self, &Continuation{run: f}) }
}

// RunAsync runs work on a pooled goroutine, so a slow store never blocks the
// actor's mailbox, and then cont on the actor (see Continuation). work gets
// a context whose deadline is at most timeout away (see sharedDeadline); it
// does not start once stop is done. cont always runs, unless the actor has
// stopped by then.
func RunAsync(ctx actor.Context, stop context.Context, timeout time.Duration, work func(context.Context) (any, error), cont func(any, error)) {
	post := continueOn(ctx)
	workers.Go(func() {
		var v any
		err := stop.Err()
		if err == nil {
			v, err = work(sharedDeadline(timeout))
		}
		post(func() { cont(v, err) })
	})
}

// deadlineGrain is how far apart the deadlines of two calls that share one
// context may be.
const deadlineGrain = 10 * time.Millisecond

var deadlines struct {
	sync.Mutex
	byTimeout map[time.Duration]*deadlineCtx
}

type deadlineCtx struct {
	ctx    context.Context
	cancel context.CancelFunc // never called: the context ends at its deadline
	made   time.Time
}

// sharedDeadline returns a context that ends at most timeout from now,
// shared by every call for the same timeout that starts within
// deadlineGrain of it. A context per call (context.WithTimeout under the
// grain's stop context) cost a timer, a child registration and ~25
// allocations per 1:1 message; a store call gains nothing from a deadline
// that is exact to the nanosecond. It deliberately does not derive from the
// grain's stop context: a grain awaiting a continuation is not passivated
// (activation.awaiting), so stop only matters before work starts.
func sharedDeadline(timeout time.Duration) context.Context {
	now := time.Now()
	deadlines.Lock()
	defer deadlines.Unlock()
	d := deadlines.byTimeout[timeout]
	if d == nil || now.Sub(d.made) >= deadlineGrain {
		if deadlines.byTimeout == nil {
			deadlines.byTimeout = make(map[time.Duration]*deadlineCtx)
		}
		d = &deadlineCtx{made: now}
		d.ctx, d.cancel = context.WithDeadline(context.Background(), now.Add(timeout))
		deadlines.byTimeout[timeout] = d
	}
	return d.ctx
}

// Go runs f on a pooled goroutine (see workerPool): for blocking work an
// actor hands off and does not wait for, such as a retried request.
func Go(f func()) { workers.Go(f) }

// Dispatcher runs actor mailboxes on the same warm goroutines. Proto.Actor's
// default starts a goroutine each time an idle mailbox gets a message, and
// a 1:1 message wakes about sixteen mailboxes: each start allocates, and
// each new goroutine grows its stack again through the same deep calls.
// Grains and sessions use it.
var Dispatcher actor.Dispatcher = poolDispatcher{}

type poolDispatcher struct{}

func (poolDispatcher) Schedule(fn func()) { workers.Go(fn) }

// Throughput is Proto.Actor's default: messages per mailbox run before it
// yields.
func (poolDispatcher) Throughput() int { return 300 }

// workers runs the actors' store calls. Store calls are deep (Pebble's read
// and commit paths), so a fresh goroutine per call spends a large part of
// its time growing its stack; reusing warm goroutines avoids that.
var workers = &workerPool{idle: 10 * time.Second}

// workerPool hands work to an idle goroutine or starts one. It never queues
// and never caps: a call that waits on another grain (a receipt) must not
// wait for a worker held by a call waiting on it. Idle workers exit after
// idle, so the pool owns no goroutine longer than that.
type workerPool struct {
	idle time.Duration
	jobs chan func()
	once sync.Once
}

func (p *workerPool) Go(f func()) {
	p.once.Do(func() { p.jobs = make(chan func()) })
	select {
	case p.jobs <- f: // an idle worker took it
	default:
		go p.work(f)
	}
}

func (p *workerPool) work(f func()) {
	f()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		select {
		case f := <-p.jobs:
			f()
			t.Reset(p.idle)
		case <-t.C:
			return
		}
	}
}
