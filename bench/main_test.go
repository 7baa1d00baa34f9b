package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// workerEnv makes the test binary a conns worker process: the conns test
// re-runs this binary with it, as `courier bench conns` re-runs courier.
const workerEnv = "COURIER_BENCH_CONNS_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := ConnsWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "conns worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(hotpathServerEnv); dir != "" {
		if err := hotpathServe(dir); err != nil {
			fmt.Fprintln(os.Stderr, "hotpath server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
