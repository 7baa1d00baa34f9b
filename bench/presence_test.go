package bench

import (
	"context"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
)

func TestPresenceScenarioReportsDebouncedFanout(t *testing.T) {
	n := nodetest.Start(t, node.Config{AdminToken: "tok", PresenceDebounce: 300 * time.Millisecond})
	r, err := Presence(context.Background(), PresenceConfig{
		Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Users: 40, Subscriptions: 5, FlapShare: 0.25, FlapEvery: 400 * time.Millisecond,
		Duration: 3 * time.Second, Settle: 2 * time.Second, AdminToken: "tok",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("presence run failed: %s", r.Problem)
	}
	if r.Flaps == 0 || r.UpdatesReceived == 0 || r.ServerChanges == 0 || r.ServerSent == 0 || r.ServerCPUSeconds <= 0 {
		t.Fatalf("nothing measured: %+v", r)
	}
	// 10 flappers over 3 s with a 300 ms debounce: far fewer updates per
	// subscriber than transitions, and some transitions suppressed.
	if r.ServerSuppressed == 0 {
		t.Fatalf("the debounce suppressed nothing: %+v", r)
	}
}
