package actors

import (
	"context"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

type asyncResult struct {
	value any
	err   error
}

// runAsync runs work on its own goroutine, so a slow store never blocks the
// grain's mailbox, and runs cont back on the grain (serialised with its
// messages) when work is done. work gets a context bounded by timeout and
// cancelled by stop; cont always runs unless the grain has stopped.
func runAsync(ctx actor.Context, stop context.Context, timeout time.Duration, work func(context.Context) (any, error), cont func(any, error)) {
	system := ctx.ActorSystem()
	// The future outlives work's own deadline a little so the result, not a
	// future timeout, reaches cont in the common case.
	f := actor.NewFuture(system, timeout+time.Second)
	pid := f.PID()
	workers.Go(func() {
		wctx, cancel := context.WithTimeout(stop, timeout)
		defer cancel()
		v, err := work(wctx)
		system.Root.Send(pid, asyncResult{value: v, err: err})
	})
	ctx.ReenterAfter(f, func(res any, err error) {
		if err != nil {
			cont(nil, err)
			return
		}
		r := res.(asyncResult)
		cont(r.value, r.err)
	})
}

// workers runs the grains' store calls. Store calls are deep (Pebble's
// read and commit paths), so a fresh goroutine per call spends a large part
// of its time growing its stack; reusing warm goroutines avoids that.
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
