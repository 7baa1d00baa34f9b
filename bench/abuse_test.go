package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	gw "github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
)

// TestAbuseMeasuresTheVictimUnderEachKind runs the baseline and three
// abuses briefly against a node that limits the abuser's address: every
// victim message arrives, the abuser's floods are answered by refusals,
// and the report carries the ratios and the server's memory.
func TestAbuseMeasuresTheVictimUnderEachKind(t *testing.T) {
	limits := gw.Limits{}.WithDefaults()
	limits.LimitLoopback = true
	n := nodetest.Start(t, node.Config{Limits: limits})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Abuse(ctx, AbuseConfig{URL: n.URL(), Kinds: []string{"none", "unknown-ids", "register", "bad-frames"},
		Duration: time.Second, VictimRate: 40, Workers: 2, ServerPIDs: []int{os.Getpid()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rep.Rows))
	}
	for _, row := range rep.Rows {
		if row.VictimSent < 20 || row.VictimDelivered != row.VictimSent {
			t.Errorf("%s: victim sent %d, delivered %d", row.Kind, row.VictimSent, row.VictimDelivered)
		}
		if row.PeakRSSBytes == 0 || row.P99Ms <= 0 {
			t.Errorf("%s: no RSS or latency measured: %+v", row.Kind, row)
		}
		if row.Kind != "none" && (row.Requests == 0 || row.Refused == 0) {
			t.Errorf("%s: %d requests, %d refused; want a flood met by refusals", row.Kind, row.Requests, row.Refused)
		}
	}
	if rep.Rows[0].P99Ratio != 1 {
		t.Errorf("the baseline's ratio is %v, want 1", rep.Rows[0].P99Ratio)
	}
	var b strings.Builder
	rep.WriteText(&b)
	if !strings.Contains(b.String(), "unknown-ids") {
		t.Errorf("table lacks a row:\n%s", b.String())
	}
}
