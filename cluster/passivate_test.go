package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/protos/courierpb"
)

// fleetingGrain answers and then asks to passivate at once, like the
// grain of an id that does not exist; with onStart it asks before the
// first message is handled.
type fleetingGrain struct {
	started *atomic.Int64
	onStart bool
}

func (g *fleetingGrain) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		g.started.Add(1)
		if g.onStart {
			Passivate(ctx)
		}
	case *courierpb.Ping:
		ctx.Respond(&courierpb.Pong{})
		Passivate(ctx)
	}
}

// A grain that passivates itself leaves at once (not after PassivateAfter),
// and requests that race its passivation, from many callers without
// retries, are all answered by the next activation.
func TestPassivateLeavesAtOnceAndLosesNoRequest(t *testing.T) {
	for _, onStart := range []bool{false, true} {
		t.Run(fmt.Sprintf("onStart=%v", onStart), func(t *testing.T) {
			var started atomic.Int64
			c := startNode(t, Config{RequestRetries: -1}, Kind{
				Name:           "fleeting",
				Producer:       func(string) actor.Actor { return &fleetingGrain{started: &started, onStart: onStart} },
				PassivateAfter: time.Hour,
			})
			const callers, perCaller = 8, 100
			var wg sync.WaitGroup
			for i := range callers {
				wg.Go(func() {
					for j := range perCaller {
						// Half the ids are shared, so requests land while
						// their grain is passivating.
						id := GrainID{Kind: "fleeting", Identity: fmt.Sprintf("id-%d", (i*perCaller+j)%16)}
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						_, err := c.Request(ctx, id, &courierpb.Ping{}, "")
						cancel()
						if err != nil {
							t.Errorf("request %d/%d: %v", i, j, err)
						}
					}
				})
			}
			wg.Wait()
			eventually(t, time.Second, "every fleeting grain to leave", func() bool { return c.Activations()["fleeting"] == 0 })
			if got := started.Load(); got < 16 {
				t.Errorf("%d activations for 16 ids", got)
			}
		})
	}
}

// Passivate from a grain waiting for a continuation takes effect when the
// continuation has run, not before (the continuation needs its grain).
func TestPassivateWaitsForContinuations(t *testing.T) {
	release := make(chan struct{})
	var ran atomic.Bool
	c := startNode(t, Config{}, Kind{
		Name: "waiting",
		Producer: func(string) actor.Actor {
			return actor.ReceiveFunc(func(ctx actor.Context) {
				if _, ok := ctx.Message().(*courierpb.Ping); !ok {
					return
				}
				RunAsync(ctx, context.Background(), 10*time.Second,
					func(context.Context) (any, error) { <-release; return nil, nil },
					func(any, error) { ran.Store(true) })
				ctx.Respond(&courierpb.Pong{})
				Passivate(ctx)
			})
		},
		PassivateAfter: time.Hour,
	})
	ping(t, c, GrainID{Kind: "waiting", Identity: "w"}, 1)
	time.Sleep(50 * time.Millisecond)
	if got := c.Activations()["waiting"]; got != 1 {
		t.Fatalf("grain left with a continuation outstanding (%d activations)", got)
	}
	close(release)
	eventually(t, time.Second, "the grain to leave after its continuation", func() bool { return c.Activations()["waiting"] == 0 })
	if !ran.Load() {
		t.Fatal("the continuation never ran")
	}
}

// A request queued behind a passivation that starts async work is answered:
// the grain stops only once that work's continuation has run.
func TestWorkQueuedBehindAPassivationFinishes(t *testing.T) {
	c := startNode(t, Config{RequestRetries: -1}, Kind{
		Name: "mixed",
		Producer: func(string) actor.Actor {
			return actor.ReceiveFunc(func(ctx actor.Context) {
				m, ok := ctx.Message().(*courierpb.Ping)
				if !ok {
					return
				}
				if m.ClientTimeMs == 0 {
					ctx.Respond(&courierpb.Pong{})
					Passivate(ctx)
					return
				}
				sender := ctx.Sender()
				RunAsync(ctx, context.Background(), 10*time.Second,
					func(context.Context) (any, error) { time.Sleep(time.Millisecond); return nil, nil },
					func(any, error) { ctx.Send(sender, &courierpb.Pong{ClientTimeMs: 1}) })
			})
		},
		PassivateAfter: time.Hour,
	})
	id := GrainID{Kind: "mixed", Identity: "m"}
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Request(ctx, id, &courierpb.Ping{ClientTimeMs: int64(i % 2)}, ""); err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	// The last activation may have seen only async work: ask it to leave.
	ping(t, c, id, 0)
	eventually(t, time.Second, "the grain to leave", func() bool { return c.Activations()["mixed"] == 0 })
}

// Shutdown does not wait for the continuation of a grain that passivated
// itself: it stops it, as it stops every other grain.
func TestShutdownStopsAGrainWaitingToPassivate(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	c := startNode(t, Config{}, Kind{
		Name: "stuck",
		Producer: func(string) actor.Actor {
			return actor.ReceiveFunc(func(ctx actor.Context) {
				if _, ok := ctx.Message().(*courierpb.Ping); !ok {
					return
				}
				RunAsync(ctx, context.Background(), time.Minute,
					func(context.Context) (any, error) { <-release; return nil, nil },
					func(any, error) {})
				ctx.Respond(&courierpb.Pong{})
				Passivate(ctx)
			})
		},
		PassivateAfter: time.Hour,
	})
	ping(t, c, GrainID{Kind: "stuck", Identity: "s"}, 1)
	time.Sleep(20 * time.Millisecond) // the stop marker is handled
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Shutdown took %v waiting for a continuation", d)
	}
}
