package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/courier-im/courier/protos/courierpb"
	"google.golang.org/protobuf/proto"
)

func TestWorkerPoolReusesIdleWorkersAndRunsEverything(t *testing.T) {
	p := &workerPool{idle: time.Second}
	var wg sync.WaitGroup
	var ran atomic.Int64
	for range 1000 {
		wg.Add(1)
		p.Go(func() { ran.Add(1); wg.Done() })
	}
	wg.Wait()
	if ran.Load() != 1000 {
		t.Fatalf("ran %d of 1000", ran.Load())
	}
	// Work that blocks on other work must not deadlock: the pool never caps.
	release := make(chan struct{})
	done := make(chan struct{})
	p.Go(func() { <-release; close(done) })
	p.Go(func() { close(release) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("blocked work starved the work it waited for")
	}
}

// requestAsync calls c.RequestAsync from inside a throwaway actor, the way
// sessions and grains do, and returns what its continuation got.
func requestAsync(t testing.TB, c *Cluster, id GrainID, msg proto.Message, key string, timeout time.Duration) (proto.Message, error) {
	t.Helper()
	type result struct {
		reply proto.Message
		err   error
	}
	got := make(chan result, 1)
	pid := c.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *actor.Started:
			c.RequestAsync(ctx, id, msg, key, timeout, func(reply proto.Message, err error) {
				got <- result{reply, err}
			})
		case *Continuation:
			m.Run()
		}
	}))
	defer c.System().Root.Stop(pid)
	select {
	case r := <-got:
		return r.reply, r.err
	case <-time.After(timeout + 5*time.Second):
		t.Fatalf("request %s %T: the continuation never ran", id, msg)
		return nil, nil
	}
}

// slowGrain answers a Ping only after a store-like call on a worker that
// takes Ping.ClientTimeMs milliseconds.
type slowGrain struct{ stopped *atomic.Int64 }

func (g *slowGrain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Stopped:
		g.stopped.Add(1)
	case *courierpb.Ping:
		sender, d := ctx.Sender(), time.Duration(m.ClientTimeMs)*time.Millisecond
		RunAsync(ctx, context.Background(), time.Minute, func(c context.Context) (any, error) {
			select {
			case <-time.After(d):
				return g.stopped.Load(), nil
			case <-c.Done():
				return nil, c.Err()
			}
		}, func(res any, err error) {
			if err != nil {
				ctx.Send(sender, &courierpb.Error{Message: err.Error()})
				return
			}
			// Still the same activation: it was not passivated while it
			// waited, or Stopped would have counted it.
			ctx.Send(sender, &courierpb.Pong{ClientTimeMs: res.(int64)})
		})
	}
}

func TestGrainAwaitingAContinuationIsNotPassivated(t *testing.T) {
	var stopped atomic.Int64
	c := startNode(t, Config{}, Kind{
		Name:           "slow",
		Producer:       func(string) actor.Actor { return &slowGrain{stopped: &stopped} },
		PassivateAfter: 20 * time.Millisecond,
	})
	id := GrainID{"slow", "s"}
	// The store call takes 15 idle periods; the idle sweep comes by
	// several times meanwhile and must leave the grain alone.
	reply, err := requestAsync(t, c, id, &courierpb.Ping{ClientTimeMs: 300}, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pong, ok := reply.(*courierpb.Pong)
	if !ok {
		t.Fatalf("reply = %v, want a Pong", reply)
	}
	if pong.ClientTimeMs != 0 || stopped.Load() != 0 {
		t.Errorf("passivated while awaiting its continuation: stopped %d before the reply, %d now", pong.ClientTimeMs, stopped.Load())
	}
	// Once nothing is awaited, it does passivate.
	eventually(t, 5*time.Second, "the idle grain to passivate", func() bool { return stopped.Load() == 1 })
}

func TestSharedDeadlineEndsWithinTimeoutAndIsShared(t *testing.T) {
	const timeout = 300 * time.Millisecond
	before := time.Now()
	a := sharedDeadline(timeout)
	b := sharedDeadline(timeout)
	after := time.Now()
	d, ok := a.Deadline()
	if !ok {
		t.Fatal("no deadline")
	}
	if d.After(after.Add(timeout)) || d.Before(before.Add(timeout-deadlineGrain)) {
		t.Errorf("deadline %v from now, want within (%v, %v]", d.Sub(before), timeout-deadlineGrain, timeout)
	}
	if a != b {
		t.Error("two calls within the grain got separate contexts")
	}
	if other := sharedDeadline(2 * timeout); other == a {
		t.Error("a different timeout shares the context")
	}
	time.Sleep(deadlineGrain)
	if c := sharedDeadline(timeout); c == a {
		t.Error("a call after the grain reuses an older deadline")
	}
	select {
	case <-a.Done():
		if !errors.Is(a.Err(), context.DeadlineExceeded) {
			t.Errorf("err = %v, want DeadlineExceeded", a.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the shared context never ended")
	}
}

func TestRunAsyncDoesNotStartWorkAfterStop(t *testing.T) {
	c := startNode(t, Config{})
	stop, cancel := context.WithCancel(context.Background())
	cancel()
	var ran atomic.Bool
	got := make(chan error, 1)
	pid := c.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *actor.Started:
			RunAsync(ctx, stop, time.Second, func(context.Context) (any, error) {
				ran.Store(true)
				return nil, nil
			}, func(_ any, err error) { got <- err })
		case *Continuation:
			m.Run()
		}
	}))
	defer c.System().Root.Stop(pid)
	select {
	case err := <-got:
		if !errors.Is(err, context.Canceled) || ran.Load() {
			t.Errorf("err = %v, work ran = %v; want context.Canceled and no work", err, ran.Load())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the continuation never ran")
	}
}
