package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/internal/testcert"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

func startNode(t testing.TB) *node.Node {
	t.Helper()
	return nodetest.Start(t, node.Config{})
}

func TestDirectScenarioReportsNoLoss(t *testing.T) {
	n := startNode(t)
	var progress bytes.Buffer
	r, err := Direct(context.Background(), DirectConfig{
		Target:   Target{URL: "ws://" + n.Addr(), DurationLimit: 2 * time.Minute, Progress: &progress},
		Pairs:    20,
		Messages: 50,
		Window:   8,
		// The test server runs in this process, so its CPU is ours.
		Traffic: Traffic{ServerPIDs: []int{os.Getpid()}},
	})
	if err != nil {
		t.Fatalf("Direct: %v\n%s", err, progress.String())
	}
	var text bytes.Buffer
	_ = r.WriteText(&text)
	t.Log("\n" + text.String())
	if !r.OK() || r.Sent != 20*50 || r.Delivered != r.Sent || r.Expected != r.Sent || r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 {
		t.Fatalf("report not clean: %s", r.Problem())
	}
	if r.MsgsPerSec <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms || r.P999Ms < r.P99Ms {
		t.Fatalf("implausible figures: %+v", r)
	}
	if r.BenchCPUUsPerMsg <= 0 || r.ServerCPUUsPerMsg <= 0 || r.ServerCPUError != "" || !strings.Contains(text.String(), "cpu/msg") {
		t.Fatalf("no CPU per message: bench %.1f µs, server %.1f µs, error %q", r.BenchCPUUsPerMsg, r.ServerCPUUsPerMsg, r.ServerCPUError)
	}
	if h := r.LatencyHistogram(); h == nil || h.TotalCount() != r.Delivered {
		t.Fatalf("the histogram does not count every delivery")
	}
	var tl int64
	for _, c := range r.Timeline.Counts {
		tl += c
	}
	if tl != r.Delivered || r.Timeline.Of != "deliveries" {
		t.Fatalf("timeline counts %d %s, delivered %d", tl, r.Timeline.Of, r.Delivered)
	}
	if !strings.Contains(progress.String(), "bench: sending") {
		t.Fatalf("no progress lines:\n%s", progress.String())
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js.Bytes(), &m); err != nil {
		t.Fatalf("report JSON %q: %v", js.String(), err)
	}
	for _, k := range []string{"scenario", "pairs", "messages", "window", "sent", "send_errors", "delivered", "lost", "duplicates",
		"reordered", "foreign", "delivered_receipts", "reconnects", "setup_sec", "elapsed_sec", "msgs_per_sec", "p50_ms", "p90_ms",
		"p99_ms", "p999_ms", "max_ms", "mean_ms", "timed_out", "deliveries_per_sec", "held", "rss_per_conn_kib", "histogram"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report JSON lacks %q", k)
		}
	}
	if m["sent"].(float64) != 1000 || m["lost"].(float64) != 0 {
		t.Errorf("JSON figures differ from the report: sent %v lost %v", m["sent"], m["lost"])
	}
}

func TestDirectScenarioOverJSON(t *testing.T) {
	n := startNode(t)
	r, err := Direct(context.Background(), DirectConfig{Target: Target{URL: n.URL(), JSON: true, DurationLimit: time.Minute}, Pairs: 5, Messages: 20})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("json run: %s", r.Problem())
	}
}

// TestDirectOpenLoopKeepsItsSchedule sends on a schedule: the run takes
// as long as the schedule says, however fast the server is, and latency
// is counted from the scheduled send times.
func TestDirectOpenLoopKeepsItsSchedule(t *testing.T) {
	n := startNode(t)
	const pairs, messages, rate = 4, 25, 100.0 // 100 msgs in 1 s
	r, err := Direct(context.Background(), DirectConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Pairs: pairs, Messages: messages, Rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Delivered != pairs*messages {
		t.Fatalf("open loop: %s", r.Problem())
	}
	if r.Mode != "open-loop" || r.Rate != rate || !strings.Contains(r.LatencyOf, "scheduled") {
		t.Fatalf("mode %q rate %v latency of %q", r.Mode, r.Rate, r.LatencyOf)
	}
	// The last message is scheduled (messages-1)/rate*pairs s after the start.
	if min := time.Duration(float64(messages-1) * pairs / rate * float64(time.Second)); secs(r.ElapsedSec) < min {
		t.Fatalf("open loop ran %v, its schedule needs %v", secs(r.ElapsedSec), min)
	}
	if r.MsgsPerSec > 1.3*rate {
		t.Fatalf("open loop sent %.0f msgs/s, the schedule says %.0f", r.MsgsPerSec, rate)
	}
}

// TestInterruptReportsWhatWasMeasured stops a long run as Ctrl-C would:
// the report comes back at once with what was measured and says so.
func TestInterruptReportsWhatWasMeasured(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := newWatch("bench: sending")
	done := make(chan struct{})
	var r *Report
	var err error
	go func() {
		defer close(done)
		// 2 x 1,000 messages at 40/s would take 50 s.
		r, err = Direct(ctx, DirectConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute, Progress: seen}, Pairs: 2, Messages: 1000, Rate: 40})
	}()
	select {
	case <-seen.hit:
	case <-time.After(30 * time.Second):
		t.Fatal("the run never started sending")
	}
	time.Sleep(700 * time.Millisecond)
	stopped := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the run did not stop on interrupt")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped in %v: sent %d delivered %d", time.Since(stopped).Round(time.Millisecond), r.Sent, r.Delivered)
	if !r.Interrupted || r.OK() || !strings.Contains(r.Problem(), "interrupted") {
		t.Fatalf("interrupted run reported as interrupted=%v ok=%v problem %q", r.Interrupted, r.OK(), r.Problem())
	}
	if r.Delivered == 0 || r.Sent >= 2000 || r.Lost != 0 || r.Duplicates != 0 {
		t.Fatalf("measured so far: sent %d delivered %d lost %d dups %d", r.Sent, r.Delivered, r.Lost, r.Duplicates)
	}
}

// watch is a progress writer that notices a line.
type watch struct {
	mu   sync.Mutex
	word string
	hit  chan struct{}
	once sync.Once
}

func newWatch(word string) *watch { return &watch{word: word, hit: make(chan struct{})} }

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.Contains(string(p), w.word) {
		w.once.Do(func() { close(w.hit) })
	}
	return len(p), nil
}

func TestDirectConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  DirectConfig
	}{
		{"no URL", DirectConfig{}},
		{"payload below the header", DirectConfig{Target: Target{URL: "ws://x"}, Traffic: Traffic{PayloadSize: 8}}},
		{"negative rate", DirectConfig{Target: Target{URL: "ws://x"}, Rate: -1}},
		{"bad scheme", DirectConfig{Target: Target{URL: "ftp://x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Direct(context.Background(), tt.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestDirectScenarioOverWSSWithCAFile(t *testing.T) {
	cert := testcert.Write(t)
	n := nodetest.Start(t, node.Config{TLSCert: cert.CertFile, TLSKey: cert.KeyFile})
	r, err := Direct(context.Background(), DirectConfig{Target: Target{URL: "wss://" + n.Addr(), CAFile: cert.CertFile, DurationLimit: time.Minute}, Pairs: 5, Messages: 20})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Delivered != 100 {
		t.Fatalf("report not clean over wss: %s", r.Problem())
	}
	if _, err := Direct(context.Background(), DirectConfig{Target: Target{URL: "wss://" + n.Addr(), DurationLimit: 10 * time.Second}, Pairs: 1, Messages: 1}); err == nil {
		t.Fatal("the bench trusted a self-signed certificate without the CA file")
	}
}

func TestDirectScenarioEndToEndEncrypted(t *testing.T) {
	n := startNode(t)
	r, err := Direct(context.Background(), DirectConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Pairs: 5, Messages: 20, E2EE: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Delivered != 100 {
		t.Fatalf("encrypted run: %s (delivered %d)", r.Problem(), r.Delivered)
	}
}

// TestDirectWarmupIsNotMeasured: the warm-up's messages go to users of
// their own and count nowhere in the report, which says it had one.
func TestDirectWarmupIsNotMeasured(t *testing.T) {
	n := startNode(t)
	var progress bytes.Buffer
	r, err := Direct(context.Background(), DirectConfig{
		Target:   Target{URL: "ws://" + n.Addr(), DurationLimit: time.Minute, Progress: &progress},
		Pairs:    5,
		Messages: 20,
		Warmup:   30,
	})
	if err != nil {
		t.Fatalf("Direct: %v\n%s", err, progress.String())
	}
	if !r.OK() || r.Sent != 5*20 || r.Delivered != 5*20 || r.LatencyHistogram().TotalCount() != 5*20 {
		t.Fatalf("measured run: ok %v (%s), sent %d, delivered %d, want 100 each", r.OK(), r.Problem(), r.Sent, r.Delivered)
	}
	if r.WarmupMessages != 30 || !strings.Contains(r.title(), "warm-up of 30") {
		t.Fatalf("report does not say it was warmed up: %d, %q", r.WarmupMessages, r.title())
	}
	if !strings.Contains(progress.String(), "warming up: 5 pairs x 30 messages") {
		t.Fatalf("no warm-up line:\n%s", progress.String())
	}
}

// TestDirectWarmupThatLosesAMessageStopsTheRun: a broken warm-up is an
// error, not a clean measured run after it.
func TestDirectWarmupThatLosesAMessageStopsTheRun(t *testing.T) {
	drop, dropped := dropNth(courierpb.EntryKind_ENTRY_KIND_MESSAGE, 3)
	n := nodetest.Start(t, node.Config{DropDeliveryForTest: drop})
	r, err := Direct(context.Background(), DirectConfig{
		Target:   Target{URL: n.URL(), DurationLimit: time.Minute},
		Pairs:    2,
		Messages: 5,
		Warmup:   10,
		Traffic:  Traffic{StallTimeout: time.Second},
	})
	if dropped.Load() != 1 {
		t.Fatalf("the server dropped %d deliveries, the test needs exactly 1", dropped.Load())
	}
	if err == nil || !strings.Contains(err.Error(), "warm-up run failed") || !strings.Contains(err.Error(), "lost 1") {
		t.Fatalf("Direct = (%+v, %v), want a warm-up error naming the loss", r, err)
	}
}
