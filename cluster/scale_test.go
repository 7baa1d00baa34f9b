package cluster

import (
	"context"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/protos/courierpb"
)

// lightGrain is the smallest useful grain: it answers Ping with Pong and
// holds no state, so the scale test measures the cluster's per-grain cost.
type lightGrain struct{}

// lightPong is shared by every reply; nobody mutates it.
var lightPong = &courierpb.Pong{ClientTimeMs: 1}

func (lightGrain) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*courierpb.Ping); ok {
		ctx.Respond(lightPong)
	}
}

func lightKind(name string) Kind {
	return Kind{
		Name:           name,
		Producer:       func(string) actor.Actor { return lightGrain{} },
		PassivateAfter: time.Hour, // passivation is triggered explicitly below
	}
}

// activateAll activates kind/g0 ... kind/g(n-1) through Request, from
// several goroutines, and fails the test on the first error.
func activateAll(t testing.TB, c *Cluster, kind string, n int) {
	t.Helper()
	const workers = 32
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	ping := &courierpb.Ping{}
	for range workers {
		wg.Go(func() {
			ctx := context.Background()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || failed.Load() != nil {
					return
				}
				if _, err := c.Request(ctx, GrainID{kind, "g" + strconv.FormatInt(i, 10)}, ping, ""); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatalf("activating %s: %v", kind, err)
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

type probeSample struct {
	at      time.Time
	latency time.Duration
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// TestActivationScale activates scaleGrains grains on one node, then makes
// scalePassivated of them passivate at once while a probe keeps activating
// grains it has never seen and measures each activation's round trip.
func TestActivationScale(t *testing.T) {
	if testing.Short() {
		t.Skip("activation scale test skipped in -short mode")
	}
	c := startNode(t, Config{RequestTimeout: 30 * time.Second}, lightKind("light"), lightKind("doomed"))
	kept := scaleGrains - scalePassivated

	heap0 := heapAlloc()
	start := time.Now()
	activateAll(t, c, "light", kept)
	activateAll(t, c, "doomed", scalePassivated)
	took := time.Since(start)
	heapPerGrain := float64(heapAlloc()-heap0) / scaleGrains
	t.Logf("activated %d grains in %v: %.0f activations/s, %.0f B heap per grain (after GC)",
		scaleGrains, took.Round(time.Millisecond), scaleGrains/took.Seconds(), heapPerGrain)
	if got := c.Activations(); got["light"] != kept || got["doomed"] != scalePassivated {
		t.Fatalf("Activations() = %v, want light=%d doomed=%d", got, kept, scalePassivated)
	}

	// The probe: one caller activating a new grain after another.
	var samples []probeSample
	stop := make(chan struct{})
	probeDone := make(chan error, 1)
	go func() {
		ping := &courierpb.Ping{}
		for i := 0; ; i++ {
			select {
			case <-stop:
				probeDone <- nil
				return
			default:
			}
			t0 := time.Now()
			if _, err := c.Request(context.Background(), GrainID{"light", "probe-" + strconv.Itoa(i)}, ping, ""); err != nil {
				probeDone <- err
				return
			}
			samples = append(samples, probeSample{at: t0, latency: time.Since(t0)})
		}
	}()

	time.Sleep(100 * time.Millisecond) // a baseline before the storm
	passStart := time.Now()
	if n := c.passivateWhere(func(a *activation) bool { return a.kind.name == "doomed" }); n != scalePassivated {
		t.Fatalf("passivation started for %d grains, want %d", n, scalePassivated)
	}
	triggered := time.Since(passStart)
	eventually(t, 60*time.Second, "the doomed grains to passivate", func() bool {
		return c.Activations()["doomed"] == 0
	})
	passTook := time.Since(passStart)
	passEnd := time.Now()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	if err := <-probeDone; err != nil {
		t.Fatalf("probe: %v", err)
	}

	var during, all []time.Duration
	for _, s := range samples {
		all = append(all, s.latency)
		if !s.at.Before(passStart) && s.at.Before(passEnd) {
			during = append(during, s.latency)
		}
	}
	slices.Sort(during)
	slices.Sort(all)
	t.Logf("passivated %d grains in %v (trigger loop %v)", scalePassivated, passTook.Round(time.Millisecond), triggered.Round(time.Millisecond))
	t.Logf("probe during passivation: %d activations, p50 %v, p99 %v, max %v",
		len(during), percentile(during, 0.5), percentile(during, 0.99), percentile(during, 1))
	t.Logf("probe overall:            %d activations, p50 %v, p99 %v, max %v",
		len(all), percentile(all, 0.5), percentile(all, 0.99), percentile(all, 1))

	if len(during) < 20 {
		t.Errorf("only %d probe activations during the passivation window", len(during))
	}
	if p99 := percentile(during, 0.99); p99 >= scaleProbeP99Max {
		t.Errorf("probe p99 during passivation = %v, want < %v", p99, scaleProbeP99Max)
	}
	if got, want := c.Activations()["light"], kept+len(samples); got != want {
		t.Errorf("Activations()[light] = %d, want %d (kept + probes)", got, want)
	}

	shutdownStart := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("Shutdown drained %d grains in %v", kept+len(samples), time.Since(shutdownStart).Round(time.Millisecond))
}

func BenchmarkActivation(b *testing.B) {
	c := startNode(b, Config{}, lightKind("light"))
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ping := &courierpb.Ping{}
		for pb.Next() {
			id := GrainID{"light", "b" + strconv.FormatInt(next.Add(1), 10)}
			if _, err := c.Request(context.Background(), id, ping, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRequestToActiveGrain(b *testing.B) {
	c := startNode(b, Config{}, lightKind("light"))
	const grains = 1024
	activateAll(b, c, "light", grains)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ping := &courierpb.Ping{}
		for pb.Next() {
			id := GrainID{"light", "g" + strconv.FormatInt(next.Add(1)%grains, 10)}
			if _, err := c.Request(context.Background(), id, ping, "key"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
