package bench

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// dropNth makes a server that silently drops the n-th live delivery of
// one kind of entry, once: a lost message the bench must catch.
func dropNth(kind courierpb.EntryKind, n int64) (func(*courierpb.InboxEntry) bool, *atomic.Int64) {
	var seen, dropped atomic.Int64
	return func(e *courierpb.InboxEntry) bool {
		if e.Kind != kind || seen.Add(1) != n {
			return false
		}
		dropped.Add(1)
		return true
	}, &dropped
}

// TestBenchCatchesADroppedMessage injects one lost delivery into each
// message scenario: the report must count it and fail.
func TestBenchCatchesADroppedMessage(t *testing.T) {
	tests := []struct {
		name string
		kind courierpb.EntryKind
		run  func(ctx context.Context, url string) (*Report, error)
	}{
		{"direct", courierpb.EntryKind_ENTRY_KIND_MESSAGE, func(ctx context.Context, url string) (*Report, error) {
			return Direct(ctx, DirectConfig{Target: Target{URL: url, DurationLimit: time.Minute}, Pairs: 4, Messages: 20, Traffic: Traffic{StallTimeout: time.Second}})
		}},
		{"fanout", courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE, func(ctx context.Context, url string) (*Report, error) {
			return Fanout(ctx, FanoutConfig{Target: Target{URL: url, DurationLimit: time.Minute}, Members: 6, Senders: 2, Messages: 10, Traffic: Traffic{StallTimeout: time.Second}})
		}},
		{"mixed", courierpb.EntryKind_ENTRY_KIND_MESSAGE, func(ctx context.Context, url string) (*Report, error) {
			return Mixed(ctx, MixedConfig{Target: Target{URL: url, DurationLimit: time.Minute}, Users: 10, Groups: 1, GroupMin: 3, GroupMax: 5, Rate: 100, Duration: time.Second,
				GroupShare: 0.2, Traffic: Traffic{StallTimeout: time.Second}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drop, dropped := dropNth(tt.kind, 7)
			n := nodetest.Start(t, node.Config{DropDeliveryForTest: drop})
			r, err := tt.run(context.Background(), n.URL())
			if err != nil {
				t.Fatal(err)
			}
			if dropped.Load() != 1 {
				t.Fatalf("the server dropped %d deliveries, the test needs exactly 1", dropped.Load())
			}
			if r.OK() || r.Lost != 1 || r.Delivered != r.Expected-1 {
				t.Fatalf("a dropped message went unnoticed: ok %v, lost %d, delivered %d of %d", r.OK(), r.Lost, r.Delivered, r.Expected)
			}
			if !strings.Contains(r.Problem(), "lost 1") || !r.Stalled {
				t.Fatalf("problem %q, stalled %v", r.Problem(), r.Stalled)
			}
		})
	}
}
