package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/courier-im/courier/bench"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// runBench runs `courier bench ARGS` and returns its standard output.
func runBench(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newBenchCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestBenchCommandExitsNonZeroOnLoss: a clean run succeeds and prints its
// JSON report and plot; a server that drops one message makes the command
// fail, which main turns into exit status 1.
func TestBenchCommandExitsNonZeroOnLoss(t *testing.T) {
	var seen atomic.Int64
	faulty := nodetest.Start(t, node.Config{DropDeliveryForTest: func(e *courierpb.InboxEntry) bool {
		return e.Kind == courierpb.EntryKind_ENTRY_KIND_MESSAGE && seen.Add(1) == 3
	}})
	clean := nodetest.Start(t, node.Config{AdminToken: "t"})
	plot := filepath.Join(t.TempDir(), "direct.png")
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, out string)
	}{
		{
			name: "clean direct, json and plot",
			args: []string{"direct", "--url", clean.URL(), "--pairs", "3", "--messages", "10", "--json", "--plot", plot},
			check: func(t *testing.T, out string) {
				i := strings.Index(out, "{")
				r, err := bench.ReadJSON(strings.NewReader(out[i:]))
				if err != nil || !r.OK() || r.Delivered != 30 {
					t.Fatalf("report %v: %+v", err, r)
				}
				if st, err := os.Stat(plot); err != nil || st.Size() == 0 {
					t.Fatalf("no plot: %v", err)
				}
			},
		},
		{
			name: "clean conns in process",
			args: []string{"conns", "--url", clean.URL(), "--count", "6", "--procs", "2", "--hold", "100ms", "--in-process", "--admin-token", "t"},
			check: func(t *testing.T, out string) {
				if !strings.Contains(out, "result: OK") || !strings.Contains(out, "rss/conn") {
					t.Fatalf("output:\n%s", out)
				}
			},
		},
		{
			name:    "a lost message fails the command",
			args:    []string{"direct", "--url", faulty.URL(), "--pairs", "2", "--messages", "10", "--stall-timeout", "1s"},
			wantErr: "bench direct failed: delivery violated: lost 1",
			check: func(t *testing.T, out string) {
				if !strings.Contains(out, "FAILED:") {
					t.Fatalf("the summary does not say FAILED:\n%s", out)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runBench(t, tt.args...)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q\n%s", err, tt.wantErr, out)
			}
			tt.check(t, out)
		})
	}
}
