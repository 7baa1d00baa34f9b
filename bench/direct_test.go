package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/internal/testcert"
	"github.com/courier-im/courier/node"
)

func startNode(t testing.TB) *node.Node {
	t.Helper()
	return nodetest.Start(t, node.Config{})
}

func TestDirectScenarioReportsNoLoss(t *testing.T) {
	n := startNode(t)
	var progress bytes.Buffer
	r, err := Direct(context.Background(), DirectConfig{
		URL:           "ws://" + n.Addr(),
		Pairs:         20,
		Messages:      50,
		Window:        8,
		DurationLimit: 2 * time.Minute,
		Progress:      &progress,
	})
	if err != nil {
		t.Fatalf("Direct: %v\n%s", err, progress.String())
	}
	var text bytes.Buffer
	_ = r.WriteText(&text)
	t.Log("\n" + text.String())
	if !r.OK() || r.Sent != 20*50 || r.Delivered != r.Sent || r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 {
		t.Fatalf("report not clean: %s", r.Problem())
	}
	if r.MsgsPerSec <= 0 || r.P50Ms <= 0 || r.P99Ms < r.P50Ms || r.P999Ms < r.P99Ms {
		t.Fatalf("implausible figures: %+v", r)
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js.Bytes(), &m); err != nil {
		t.Fatalf("report JSON %q: %v", js.String(), err)
	}
	for _, k := range []string{"sent", "delivered", "lost", "duplicates", "reordered", "msgs_per_sec", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "elapsed_sec", "pairs", "messages"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report JSON lacks %q: %s", k, js.String())
		}
	}
	if m["sent"].(float64) != 1000 || m["lost"].(float64) != 0 {
		t.Errorf("JSON figures differ from the report: %s", js.String())
	}
}

func TestDirectScenarioOverJSON(t *testing.T) {
	n := startNode(t)
	r, err := Direct(context.Background(), DirectConfig{URL: n.URL(), Pairs: 5, Messages: 20, JSON: true, DurationLimit: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("json run: %s", r.Problem())
	}
}

func TestReportProblem(t *testing.T) {
	tests := []struct {
		name string
		r    Report
		ok   bool
	}{
		{"clean", Report{Sent: 10, Delivered: 10}, true},
		{"lost", Report{Sent: 10, Delivered: 9, Lost: 1}, false},
		{"duplicate", Report{Sent: 10, Delivered: 10, Duplicates: 1}, false},
		{"reordered", Report{Sent: 10, Delivered: 10, Reordered: 1}, false},
		{"send errors", Report{Sent: 9, Delivered: 9, SendErrors: 1}, false},
		{"timed out", Report{Sent: 10, Delivered: 10, TimedOut: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.r.OK() != tt.ok || (tt.r.Problem() == "") != tt.ok {
				t.Fatalf("OK = %v, Problem = %q; want ok=%v", tt.r.OK(), tt.r.Problem(), tt.ok)
			}
		})
	}
}

func TestDirectConfigValidation(t *testing.T) {
	if _, err := Direct(context.Background(), DirectConfig{}); err == nil {
		t.Fatal("no URL accepted")
	}
	if _, err := Direct(context.Background(), DirectConfig{URL: "ws://x", PayloadSize: 8}); err == nil {
		t.Fatal("payload below the header size accepted")
	}
}

func TestDirectScenarioOverWSSWithCAFile(t *testing.T) {
	cert := testcert.Write(t)
	n := nodetest.Start(t, node.Config{TLSCert: cert.CertFile, TLSKey: cert.KeyFile})
	r, err := Direct(context.Background(), DirectConfig{URL: "wss://" + n.Addr(), CAFile: cert.CertFile, Pairs: 5, Messages: 20, DurationLimit: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Delivered != 100 {
		t.Fatalf("report not clean over wss: %s", r.Problem())
	}
	if _, err := Direct(context.Background(), DirectConfig{URL: "wss://" + n.Addr(), Pairs: 1, Messages: 1, DurationLimit: 10 * time.Second}); err == nil {
		t.Fatal("the bench trusted a self-signed certificate without the CA file")
	}
}
