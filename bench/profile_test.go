package bench

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestDirectProfile runs a full-size direct scenario against an in-process
// node, for profiling:
//
//	COURIER_BENCH_PAIRS=500 COURIER_BENCH_MESSAGES=200 go test ./bench -run DirectProfile -cpuprofile cpu.out
func TestDirectProfile(t *testing.T) {
	pairs, _ := strconv.Atoi(os.Getenv("COURIER_BENCH_PAIRS"))
	messages, _ := strconv.Atoi(os.Getenv("COURIER_BENCH_MESSAGES"))
	if pairs == 0 || messages == 0 {
		t.Skip("set COURIER_BENCH_PAIRS and COURIER_BENCH_MESSAGES to run")
	}
	n := startNode(t)
	r, err := Direct(context.Background(), DirectConfig{Target: Target{URL: n.URL(), DurationLimit: 10 * time.Minute, Progress: os.Stderr}, Pairs: pairs, Messages: messages})
	if err != nil {
		t.Fatal(err)
	}
	_ = r.WriteText(os.Stderr)
	if !r.OK() {
		t.Fatal(r.Problem())
	}
}
