package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// errTimeBound ends a run that reached its --duration-limit.
var errTimeBound = errors.New("bench: the time bound ended the run")

// run bounds a scenario: ctx ends at the time bound or when the caller's
// context ends (Ctrl-C). Afterwards the run tells which of the two it was,
// so the report says whether it is complete, cut by the bound, or
// interrupted.
type run struct {
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
}

func newRun(parent context.Context, limit time.Duration) *run {
	r := &run{parent: parent}
	if limit > 0 {
		r.ctx, r.cancel = context.WithTimeoutCause(parent, limit, errTimeBound)
	} else {
		r.ctx, r.cancel = context.WithCancel(parent)
	}
	return r
}

// interrupted: the caller's context ended (a signal), not the time bound.
func (r *run) interrupted() bool { return r.parent.Err() != nil }

// timedOut: the time bound ended the run.
func (r *run) timedOut() bool {
	return !r.interrupted() && errors.Is(context.Cause(r.ctx), errTimeBound)
}

// setupErr wraps an error of the setup phase with why the run was cut.
func (r *run) setupErr(err error) error {
	switch {
	case r.interrupted():
		return fmt.Errorf("interrupted during setup (nothing measured yet): %w", err)
	case r.timedOut():
		return fmt.Errorf("the time bound ended the run during setup: %w", err)
	}
	return err
}

// finish stamps the report with how the run ended: caughtUp is whether
// every receiver got what it should.
func (r *run) finish(rep *Report, caughtUp bool) {
	rep.Interrupted = r.interrupted()
	if caughtUp || rep.Interrupted {
		return
	}
	if r.ctx.Err() != nil {
		rep.TimedOut = true
	} else {
		rep.Stalled = true
	}
}

// interruptGrace is how long an interrupted run still waits for messages
// already acknowledged, so they are not reported lost.
const interruptGrace = 2 * time.Second

// settle waits until every receiver has what it should: false when the
// time bound, a stall (no delivery for stall) or an interrupt came first.
// After an interrupt, deliveries in flight get a short grace.
func (r *run) settle(inboxes []*inbox, need []int64, stall time.Duration) bool {
	if waitCaughtUp(r.ctx, inboxes, need, stall) {
		return true
	}
	if !r.interrupted() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), interruptGrace)
	defer cancel()
	waitCaughtUp(ctx, inboxes, need, stall)
	return false
}
