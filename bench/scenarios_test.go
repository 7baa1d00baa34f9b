package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
)

const testAdminToken = "bench-test-admin"

// TestScenariosDeliverEverythingOnce runs every scenario for a few seconds
// at small sizes against one in-process node: each must report a clean
// run, with its own figures filled in.
func TestScenariosDeliverEverythingOnce(t *testing.T) {
	n := nodetest.Start(t, node.Config{AdminToken: testAdminToken})
	url := n.URL()
	tests := []struct {
		name  string
		run   func(ctx context.Context, progress *bytes.Buffer) (*Report, error)
		check func(t *testing.T, r *Report)
	}{
		{
			name: "direct",
			run: func(ctx context.Context, p *bytes.Buffer) (*Report, error) {
				return Direct(ctx, DirectConfig{Target: Target{URL: url, DurationLimit: time.Minute, Progress: p}, Pairs: 8, Messages: 30})
			},
			check: func(t *testing.T, r *Report) {
				want(t, "delivered", r.Delivered, 8*30)
			},
		},
		{
			name: "direct open loop",
			run: func(ctx context.Context, p *bytes.Buffer) (*Report, error) {
				return Direct(ctx, DirectConfig{Target: Target{URL: url, DurationLimit: time.Minute, Progress: p}, Pairs: 5, Messages: 20, Rate: 200})
			},
			check: func(t *testing.T, r *Report) {
				want(t, "delivered", r.Delivered, 5*20)
			},
		},
		{
			name: "fanout",
			run: func(ctx context.Context, p *bytes.Buffer) (*Report, error) {
				return Fanout(ctx, FanoutConfig{Target: Target{URL: url, DurationLimit: time.Minute, Progress: p}, Groups: 2, Members: 12, Senders: 3, Messages: 10})
			},
			check: func(t *testing.T, r *Report) {
				want(t, "sent", r.Sent, 2*3*10)
				want(t, "deliveries", r.Delivered, 2*3*10*11) // every member but the sender
				if r.DeliveriesPerSec <= r.MsgsPerSec || r.Fanout == nil || r.Fanout.Members != 12 {
					t.Errorf("fanout figures: %.0f deliveries/s, %.0f msgs/s, %+v", r.DeliveriesPerSec, r.MsgsPerSec, r.Fanout)
				}
				if r.DeliveredReceipts == 0 {
					t.Errorf("no group delivered receipt reached a sender")
				}
			},
		},
		{
			name: "mixed",
			run: func(ctx context.Context, p *bytes.Buffer) (*Report, error) {
				return Mixed(ctx, MixedConfig{Target: Target{URL: url, DurationLimit: time.Minute, Progress: p}, Users: 24, Groups: 3, GroupMin: 5, GroupMax: 12, Rate: 120, Duration: 2 * time.Second,
					GroupShare: 0.3, ReadShare: 0.5, ReconnectRate: 3, TypingShare: 0.5, PresenceSubs: 3})
			},
			check: func(t *testing.T, r *Report) {
				m := r.Mixed
				if m.DirectSent == 0 || m.GroupSent == 0 || m.GroupDelivered <= m.GroupSent || m.ReadsSent == 0 || m.ReadsReceived < m.ReadsSent {
					t.Errorf("the mix lacks a kind of traffic: %+v", m)
				}
				if m.TypingSent == 0 || m.TypingReceived == 0 || m.PresenceSubscriptions != 24*3 || m.PresenceEvents == 0 {
					t.Errorf("typing or presence missing from the mix: %+v", m)
				}
				if m.ForcedReconnects == 0 || r.Reconnects == 0 {
					t.Errorf("no connection was dropped and resumed: forced %d, reconnects %d", m.ForcedReconnects, r.Reconnects)
				}
			},
		},
		{
			name: "storm",
			run: func(ctx context.Context, p *bytes.Buffer) (*Report, error) {
				return Storm(ctx, StormConfig{Target: Target{URL: url, DurationLimit: time.Minute, Progress: p}, Clients: 30, Senders: 3, Messages: 8})
			},
			check: func(t *testing.T, r *Report) {
				want(t, "delivered", r.Delivered, 30*8)
				s := r.Storm
				if s.CaughtUp != 30 || s.CatchUpSec <= 0 || s.ConnectedSec <= 0 || s.ConnectedSec > s.CatchUpSec+1 {
					t.Errorf("storm figures: %+v", s)
				}
				if h := r.LatencyHistogram(); h == nil || h.TotalCount() != 30 {
					t.Errorf("catch-up histogram should count each of the 30 clients once")
				}
			},
		},
		{
			name: "conns",
			run: func(ctx context.Context, p *bytes.Buffer) (*Report, error) {
				return Conns(ctx, ConnsConfig{URL: url, Count: 40, Procs: 2, Hold: 500 * time.Millisecond, AdminToken: testAdminToken,
					DurationLimit: time.Minute, Progress: p})
			},
			check: func(t *testing.T, r *Report) {
				c := r.Conns
				want(t, "held", r.Held, 40)
				want(t, "connected", c.Connected, 40)
				if len(c.Processes) != 2 || c.Processes[0].Held+c.Processes[1].Held != 40 {
					t.Errorf("per-process figures: %+v", c.Processes)
				}
				if c.ServerNote != "" || len(c.Servers) != 1 || c.Servers[0].After.Sessions < 40 {
					t.Errorf("server figures: note %q, %+v", c.ServerNote, c.Servers)
				}
				// Each session has at least a reader and a writer goroutine.
				if c.GoroutinesPerConn < 1 || c.ConnectsPerSec <= 0 || r.P50Ms <= 0 {
					t.Errorf("goroutines/conn %.2f, connects/s %.0f, connect p50 %.2f ms", c.GoroutinesPerConn, c.ConnectsPerSec, r.P50Ms)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var progress bytes.Buffer
			r, err := tt.run(context.Background(), &progress)
			if err != nil {
				t.Fatalf("%v\n%s", err, progress.String())
			}
			var text bytes.Buffer
			_ = r.WriteText(&text)
			t.Log("\n" + text.String())
			if !r.OK() {
				t.Fatalf("not clean: %s\n%s", r.Problem(), progress.String())
			}
			if r.Lost != 0 || r.Duplicates != 0 || r.Reordered != 0 || r.Foreign != 0 || r.Delivered != r.Expected {
				t.Fatalf("lost %d, duplicates %d, reordered %d, foreign %d, delivered %d of %d", r.Lost, r.Duplicates, r.Reordered, r.Foreign, r.Delivered, r.Expected)
			}
			if r.ElapsedSec <= 0 || len(r.Timeline.Counts) == 0 || r.Histogram == nil {
				t.Fatalf("no timing: elapsed %v, %d timeline steps", r.ElapsedSec, len(r.Timeline.Counts))
			}
			tt.check(t, r)
		})
	}
}

func want(t *testing.T, what string, got, want int64) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %d, want %d", what, got, want)
	}
}
