package cluster

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Supervision: a panicking grain is restarted (its Producer runs again and
// the new actor reloads its state on *actor.Started); the message that made
// it panic is not redelivered, so its caller times out and retries with the
// same idempotency key. Repeated failures within restartWindow back off
// exponentially so a poison message or a store outage cannot spin a core.
//
// Proto.Actor's own ExponentialBackoffStrategy is linear with nanoseconds of
// jitter, and the default OneForOne stops the grain after 10 failures, so
// Courier uses this one as every kind's guardian.

const (
	restartInitialBackoff = 10 * time.Millisecond
	restartMaxBackoff     = 2 * time.Second
	restartWindow         = 30 * time.Second
)

type backoffStrategy struct {
	kind string
	log  *slog.Logger
}

func newBackoffStrategy(kind string, log *slog.Logger) *backoffStrategy {
	return &backoffStrategy{kind: kind, log: log}
}

// restartDelay is 0 for the first failure in the window, then 10 ms, 20 ms,
// 40 ms ... capped at 2 s, each with ±25 % jitter so grains that failed
// together (a store outage) do not restart together.
func restartDelay(failures int) time.Duration {
	if failures <= 1 {
		return 0
	}
	d := restartMaxBackoff
	if shift := failures - 2; shift < 16 {
		d = min(restartInitialBackoff<<shift, restartMaxBackoff)
	}
	return d*3/4 + rand.N(d/2+1)
}

func (s *backoffStrategy) HandleFailure(system *actor.ActorSystem, supervisor actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason interface{}, message interface{}) {
	if rs.NumberOfFailures(restartWindow) == 0 {
		rs.Reset()
	}
	rs.Fail()
	failures := rs.FailureCount()
	delay := restartDelay(failures)
	s.log.Warn("grain failed, restarting",
		"kind", s.kind, "grain", child.GetId(), "reason", fmt.Sprint(reason),
		"message_type", fmt.Sprintf("%T", actor.UnwrapEnvelopeMessage(message)),
		"failures_in_window", failures, "restart_in", delay)
	system.EventStream.Publish(&actor.SupervisorEvent{Child: child, Reason: reason, Directive: actor.RestartDirective})
	if delay <= 0 {
		supervisor.RestartChildren(child)
		return
	}
	// The mailbox stays suspended (messages queue, none are lost) until the
	// restart. The timer is bounded by restartMaxBackoff.
	time.AfterFunc(delay, func() { supervisor.RestartChildren(child) })
}
