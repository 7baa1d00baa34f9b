package actors

import (
	"context"
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
	go func() {
		wctx, cancel := context.WithTimeout(stop, timeout)
		defer cancel()
		v, err := work(wctx)
		system.Root.Send(pid, asyncResult{value: v, err: err})
	}()
	ctx.ReenterAfter(f, func(res any, err error) {
		if err != nil {
			cont(nil, err)
			return
		}
		r := res.(asyncResult)
		cont(r.value, r.err)
	})
}
