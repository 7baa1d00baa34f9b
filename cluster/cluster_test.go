package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/protos/clusterpb"
	"github.com/courier-im/courier/protos/courierpb"
)

func init() {
	RegisterMessages(&courierpb.Ping{}, &courierpb.Pong{}, &courierpb.Send{}, &courierpb.SendAck{})
}

// Test grain protocol (kind "echo"):
//
//	Ping{n >= 0} -> Pong{ClientTimeMs: messages this instance handled, ServerTimeMs: incarnation}
//	Ping{-1}     -> panics ("boom")
//	Ping{-2}     -> never answers
//	Send         -> SendAck{ClientMsgId: IdempotencyKey(ctx), StoredAtMs: incarnation}
const (
	pingBoom   = -1
	pingIgnore = -2
)

// grainStats counts lifecycle events of the echo grains of one node.
type grainStats struct {
	started atomic.Int64 // *actor.Started, including restarts
	stopped atomic.Int64
	// stopDelay makes *actor.Stopping slow, like a grain flushing state
	// before it passivates.
	stopDelay time.Duration

	mu    sync.Mutex
	perID map[string]*idStats
}

type idStats struct{ started, stopped atomic.Int64 }

// of returns the counters of one identity (tests sharing a node use
// distinct identities).
func (s *grainStats) of(identity string) *idStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perID == nil {
		s.perID = make(map[string]*idStats)
	}
	st := s.perID[identity]
	if st == nil {
		st = &idStats{}
		s.perID[identity] = st
	}
	return st
}

type echoGrain struct {
	stats       *grainStats
	id          *idStats
	incarnation int64
	handled     int64
}

func (g *echoGrain) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		g.incarnation = g.stats.started.Add(1)
		g.id.started.Add(1)
	case *actor.Stopping:
		time.Sleep(g.stats.stopDelay)
	case *actor.Stopped:
		g.stats.stopped.Add(1)
		g.id.stopped.Add(1)
	case *courierpb.Ping:
		switch m.ClientTimeMs {
		case pingBoom:
			panic("boom")
		case pingIgnore:
			return
		}
		g.handled++
		ctx.Respond(&courierpb.Pong{ClientTimeMs: g.handled, ServerTimeMs: g.incarnation})
	case *courierpb.Send:
		ctx.Respond(&courierpb.SendAck{ClientMsgId: IdempotencyKey(ctx), StoredAtMs: g.incarnation})
	}
}

func echoKind(stats *grainStats, passivateAfter time.Duration) Kind {
	return Kind{
		Name: "echo",
		Producer: func(identity string) actor.Actor {
			return &echoGrain{stats: stats, id: stats.of(identity)}
		},
		PassivateAfter: passivateAfter,
	}
}

// testLogger keeps Proto.Actor and cluster logs out of the way unless
// something is wrong. (t.Log cannot be used: actor goroutines may log after
// the test ends.)
func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startNode builds and starts a node; it is shut down when the test ends.
func startNode(t testing.TB, cfg Config, kinds ...Kind) *Cluster {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	c, err := New(NewActorSystem(cfg.Logger), cfg, kinds...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return c
}

func ping(t testing.TB, c *Cluster, id GrainID, n int64) *courierpb.Pong {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := c.Request(ctx, id, &courierpb.Ping{ClientTimeMs: n}, "")
	if err != nil {
		t.Fatalf("ping %s: %v", id, err)
	}
	pong, ok := reply.(*courierpb.Pong)
	if !ok {
		t.Fatalf("ping %s: reply is %T, want *courierpb.Pong", id, reply)
	}
	return pong
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestRequestReachesGrainAndActivatesOnce(t *testing.T) {
	stats := &grainStats{}
	c := startNode(t, Config{}, echoKind(stats, 0))
	id := GrainID{Kind: "echo", Identity: "alice"}

	const callers, perCaller = 8, 25
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range perCaller {
				ping(t, c, id, 1)
			}
		})
	}
	wg.Wait()

	pong := ping(t, c, id, 1)
	if got, want := pong.ClientTimeMs, int64(callers*perCaller+1); got != want {
		t.Errorf("grain handled %d messages, want %d (one instance saw all)", got, want)
	}
	if got := stats.started.Load(); got != 1 {
		t.Errorf("grain started %d times, want 1", got)
	}
	if got := c.Activations()["echo"]; got != 1 {
		t.Errorf("Activations()[echo] = %d, want 1", got)
	}
}

func TestGrainPassivatesAfterIdleAndReactivates(t *testing.T) {
	stats := &grainStats{}
	c := startNode(t, Config{}, echoKind(stats, 100*time.Millisecond))
	id := GrainID{Kind: "echo", Identity: "bob"}

	for i := range 3 {
		if got := ping(t, c, id, 1).ClientTimeMs; got != int64(i+1) {
			t.Fatalf("message %d: instance handled %d, want %d", i+1, got, i+1)
		}
	}
	if got := c.Activations()["echo"]; got != 1 {
		t.Fatalf("Activations()[echo] = %d, want 1", got)
	}
	eventually(t, 2*time.Second, "the idle grain to passivate", func() bool {
		return c.Activations()["echo"] == 0
	})
	if got := stats.stopped.Load(); got != 1 {
		t.Errorf("grain saw *actor.Stopped %d times, want 1", got)
	}

	pong := ping(t, c, id, 1)
	if pong.ClientTimeMs != 1 {
		t.Errorf("re-activated grain handled %d messages, want 1 (fresh state)", pong.ClientTimeMs)
	}
	if pong.ServerTimeMs != 2 || stats.started.Load() != 2 {
		t.Errorf("incarnation %d, started %d; want a second incarnation", pong.ServerTimeMs, stats.started.Load())
	}
}

func TestBusyGrainIsNotPassivated(t *testing.T) {
	stats := &grainStats{}
	c := startNode(t, Config{}, echoKind(stats, 150*time.Millisecond))
	id := GrainID{Kind: "echo", Identity: "busy"}
	for range 50 { // 500 ms of traffic, more than three idle timeouts
		ping(t, c, id, 1)
		time.Sleep(10 * time.Millisecond)
	}
	if got := stats.started.Load(); got != 1 {
		t.Errorf("grain started %d times while busy, want 1", got)
	}
}

func TestMessagesDuringPassivationAreNotLost(t *testing.T) {
	stats := &grainStats{stopDelay: time.Millisecond}
	// 1 ms idle timeout: the grain passivates in every gap of the hammering.
	c := startNode(t, Config{RequestRetries: -1}, echoKind(stats, time.Millisecond))
	id := GrainID{Kind: "echo", Identity: "hammered"}

	// Each caller pauses 0.5–2 ms between requests, so the grain keeps
	// going idle for about its timeout while other requests are in flight:
	// many land while it is passivating.
	const callers, perCaller = 8, 150
	var wg sync.WaitGroup
	var failures atomic.Int64
	for i := range callers {
		wg.Go(func() {
			for j := range perCaller {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				reply, err := c.Request(ctx, id, &courierpb.Ping{ClientTimeMs: 1}, fmt.Sprintf("k-%d-%d", i, j))
				cancel()
				if err != nil || reply == nil {
					failures.Add(1)
					t.Errorf("request %d/%d: %v", i, j, err)
				}
				time.Sleep(500*time.Microsecond + rand.N(1500*time.Microsecond))
			}
		})
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d requests failed without retries", failures.Load(), callers*perCaller)
	}
	if got := stats.started.Load(); got < 3 {
		t.Errorf("grain activated only %d times; the test did not exercise passivation", got)
	}
	if c.buffered.Load() == 0 {
		t.Errorf("no request arrived while the grain was passivating; the test did not exercise buffering")
	}
	t.Logf("%d requests answered across %d activations, %d buffered during passivation",
		callers*perCaller, stats.started.Load(), c.buffered.Load())
}

func TestPanickingGrainIsRestartedBySupervisor(t *testing.T) {
	stats := &grainStats{}
	c := startNode(t, Config{}, echoKind(stats, 0))
	id := GrainID{Kind: "echo", Identity: "fragile"}

	if got := ping(t, c, id, 1).ClientTimeMs; got != 1 {
		t.Fatalf("handled %d, want 1", got)
	}
	// The message that panics is not redelivered: its caller times out.
	res, err := requestAsync(t, c, id, &courierpb.Ping{ClientTimeMs: pingBoom}, "boom", 200*time.Millisecond)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("boom: got (%v, %v), want ErrUnavailable", res, err)
	}
	pong := ping(t, c, id, 1)
	if pong.ClientTimeMs != 1 {
		t.Errorf("restarted grain handled %d messages, want 1 (new instance)", pong.ClientTimeMs)
	}
	if pong.ServerTimeMs != 2 || stats.started.Load() != 2 {
		t.Errorf("incarnation %d, started %d; want Started to run again", pong.ServerTimeMs, stats.started.Load())
	}
	if got := c.Activations()["echo"]; got != 1 {
		t.Errorf("Activations()[echo] = %d, want 1 (restart is not a new activation)", got)
	}
}

func TestRepeatedFailuresBackOff(t *testing.T) {
	cases := []struct {
		failures int
		min, max time.Duration
	}{
		{1, 0, 0},
		{2, 7500 * time.Microsecond, 12500 * time.Microsecond},
		{3, 15 * time.Millisecond, 25 * time.Millisecond},
		{10, 1500 * time.Millisecond, 2500 * time.Millisecond},
		{100, 1500 * time.Millisecond, 2500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.failures), func(t *testing.T) {
			for range 50 {
				if d := restartDelay(tc.failures); d < tc.min || d > tc.max {
					t.Fatalf("restartDelay(%d) = %v, want in [%v, %v]", tc.failures, d, tc.min, tc.max)
				}
			}
		})
	}
}

func TestIdempotencyKeyReachesGrain(t *testing.T) {
	c := startNode(t, Config{}, echoKind(&grainStats{}, 0))
	cases := []struct{ name, key string }{
		{"with key", "msg-42"},
		{"without key", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reply, err := c.Request(context.Background(), GrainID{"echo", "carol"}, &courierpb.Send{ClientMsgId: "x"}, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got := reply.(*courierpb.SendAck).ClientMsgId; got != tc.key {
				t.Errorf("grain saw key %q, want %q", got, tc.key)
			}
		})
	}
}

func TestRequestDeadlineReturnsUnavailable(t *testing.T) {
	c := startNode(t, Config{RequestTimeout: 30 * time.Millisecond}, echoKind(&grainStats{}, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Request(ctx, GrainID{"echo", "silent"}, &courierpb.Ping{ClientTimeMs: pingIgnore}, "k")
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	// 4 attempts of 30 ms plus millisecond backoffs: the retry budget ends
	// this request long before ctx does.
	if errors.Is(err, context.DeadlineExceeded) || took > time.Second {
		t.Errorf("retries outlived the retry budget: took %v, err %v", took, err)
	}
	t.Logf("gave up after %v: %v", took, err)

	t.Run("ctx deadline shorter than the attempt timeout", func(t *testing.T) {
		c := startNode(t, Config{RequestTimeout: time.Minute}, echoKind(&grainStats{}, 0))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Request(ctx, GrainID{"echo", "silent"}, &courierpb.Ping{ClientTimeMs: pingIgnore}, "k")
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want ErrUnavailable and context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 150*time.Millisecond {
			t.Errorf("returned after %v, want about 50ms", took)
		}
	})
}

func TestUnknownKindIsRefused(t *testing.T) {
	c := startNode(t, Config{}, echoKind(&grainStats{}, 0))
	start := time.Now()
	_, err := c.Request(context.Background(), GrainID{"nope", "x"}, &courierpb.Ping{}, "")
	if !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("err = %v, want ErrUnknownKind", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("unknown kind must not look retryable: %v", err)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("took %v: unknown kind was retried", took)
	}
	if _, err := c.Owner(GrainID{"nope", "x"}); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Owner: err = %v, want ErrUnknownKind", err)
	}
	if _, err := requestAsync(t, c, GrainID{"nope", "x"}, &courierpb.Ping{}, "", time.Second); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("RequestAsync: err = %v, want ErrUnknownKind", err)
	}
	if err := c.Notify(GrainID{"nope", "x"}, &courierpb.Ping{}, "", 0); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("Notify: err = %v, want ErrUnknownKind", err)
	}
}

func TestRequestAsyncRunsItsContinuationOnTheCaller(t *testing.T) {
	c := startNode(t, Config{}, echoKind(&grainStats{}, 0))
	reply, err := requestAsync(t, c, GrainID{"echo", "dave"}, &courierpb.Ping{ClientTimeMs: 1}, "", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pong, ok := reply.(*courierpb.Pong); !ok || pong.ClientTimeMs != 1 {
		t.Errorf("reply = %v, want Pong{1}", reply)
	}
	_, err = requestAsync(t, c, GrainID{"echo", "dave"}, &courierpb.Ping{ClientTimeMs: pingIgnore}, "", 50*time.Millisecond)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "echo/dave") {
		t.Errorf("silent grain: err = %v, want ErrUnavailable naming the grain", err)
	}
}

func TestNotifyReachesTheGrainAndDropsItsReply(t *testing.T) {
	stats := &grainStats{}
	c := startNode(t, Config{}, echoKind(stats, 0))
	id := GrainID{"echo", "erin"}
	for range 3 {
		if err := c.Notify(id, &courierpb.Ping{ClientTimeMs: 1}, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	// The grain handled all three: the next request is its fourth.
	if got := ping(t, c, id, 1).ClientTimeMs; got != 4 {
		t.Errorf("handled %d, want 4", got)
	}
}

func TestShutdownDrainsGrainsAndRefusesRequests(t *testing.T) {
	stats := &grainStats{}
	c, err := New(NewActorSystem(testLogger()), Config{Logger: testLogger()}, echoKind(stats, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		ping(t, c, GrainID{"echo", fmt.Sprint(i)}, 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if got := c.Activations()["echo"]; got != 0 {
		t.Errorf("%d activations left after Shutdown", got)
	}
	if got := stats.stopped.Load(); got != 100 {
		t.Errorf("%d grains saw Stopped, want 100", got)
	}
	if _, err := c.Request(context.Background(), GrainID{"echo", "1"}, &courierpb.Ping{}, ""); !errors.Is(err, ErrUnavailable) {
		t.Errorf("request after Shutdown: err = %v, want ErrUnavailable", err)
	}
}

func TestNewRejectsBadKinds(t *testing.T) {
	sys := NewActorSystem(testLogger())
	ok := func(string) actor.Actor { return &echoGrain{} }
	cases := []struct {
		name  string
		kinds []Kind
	}{
		{"no name", []Kind{{Producer: ok}}},
		{"no producer", []Kind{{Name: "a"}}},
		{"duplicate", []Kind{{Name: "a", Producer: ok}, {Name: "a", Producer: ok}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(sys, Config{}, tc.kinds...); err == nil {
				t.Error("New accepted invalid kinds")
			}
		})
	}
}

func TestNewActorSystemDemotesDeadLetterNoise(t *testing.T) {
	var mu sync.Mutex
	var records []slog.Record
	h := recordHandler{level: slog.LevelInfo, sawComponent: &atomic.Bool{},
		add: func(r slog.Record) { mu.Lock(); records = append(records, r); mu.Unlock() }}
	sys := NewActorSystem(slog.New(h))
	sys.Root.Send(actor.NewPID(sys.Address(), "nobody"), &clusterpb.Status{})
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(records) == 0 {
		t.Fatal("nothing reached the Courier logger (\"actor system started\" should)")
	}
	for _, r := range records {
		if r.Message == "[DeadLetter]" {
			t.Errorf("dead letter logged at %v, want it below Info", r.Level)
		}
	}
	if !h.sawComponent.Load() {
		t.Error(`logger lacks component="protoactor"`)
	}
}

// recordHandler collects records at or above level.
type recordHandler struct {
	level        slog.Level
	add          func(slog.Record)
	attrs        []slog.Attr
	sawComponent *atomic.Bool
}

func (h recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	for _, a := range h.attrs {
		if a.Key == "component" && a.Value.String() == "protoactor" {
			h.sawComponent.Store(true)
		}
	}
	h.add(r)
	return nil
}
func (h recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return h
}
func (h recordHandler) WithGroup(string) slog.Handler { return h }

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	stats := &grainStats{}
	c, err := New(NewActorSystem(testLogger()), Config{Logger: testLogger()}, echoKind(stats, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Exercise every path that starts timers or goroutines: activations,
	// idle passivation, a restart, a RequestAsync that times out.
	for i := range 50 {
		ping(t, c, GrainID{"echo", fmt.Sprint(i)}, 1)
	}
	_, _ = requestAsync(t, c, GrainID{"echo", "0"}, &courierpb.Ping{ClientTimeMs: pingBoom}, "", 50*time.Millisecond)
	_, _ = requestAsync(t, c, GrainID{"echo", "1"}, &courierpb.Ping{ClientTimeMs: pingIgnore}, "", 10*time.Millisecond)
	eventually(t, 2*time.Second, "idle grains to passivate", func() bool { return c.Activations()["echo"] == 0 })
	ping(t, c, GrainID{"echo", "again"}, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "goroutines to return to the baseline", func() bool {
		return runtime.NumGoroutine() <= before
	})
}
