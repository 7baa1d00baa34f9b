package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchConnsCmd() *cobra.Command {
	var cfg bench.ConnsConfig
	var b benchFlags
	var inProcess bool
	cmd := &cobra.Command{
		Use:   "conns",
		Short: "Open many authenticated idle connections, hold them, measure the server per connection",
		Long: `Opens --count authenticated idle WebSocket sessions at --rate a second,
spread over --procs worker processes (this binary, re-run as a hidden
"bench conns-worker") and over the gateways of --url; holds them for --hold
(each pings every --ping, as the server drops silent sockets after 60 s);
then closes them. Connections to a loopback gateway come from --source-ips
addresses of 127.0.0.0/8, so more than 64k are possible on one machine.

One process may hold at most its open-files limit (20,000 here, and it
cannot be raised) less a margin: about 19,900 connections per worker, and
likewise per gateway process. Use --procs and several gateways for more.

With --admin-token every gateway's /v1/admin/stats is read before and at
the end of the hold: rss/conn is the servers' resident memory growth per
held connection, goroutines/conn likewise. --server-pid reads the memory of
a local server from /proc instead.`,
		Example: `  courier bench conns --count 18000 --procs 1 --hold 30s --admin-token "$ADMIN"
  courier bench conns --count 100000 --procs 6 --rate 2000 --hold 60s --admin-token "$ADMIN" \
    --url ws://127.0.0.1:8080,ws://127.0.0.2:8080,ws://127.0.0.3:8080,ws://127.0.0.4:8080,ws://127.0.0.5:8080,ws://127.0.0.6:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.URL, cfg.DurationLimit, cfg.Concurrency, cfg.CAFile = b.url, b.durationLimit, b.concurrency, b.caFile
			cfg.Progress, cfg.ProgressInterval = progressOf(cmd), b.progressEvery
			if !inProcess {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this binary to run the workers: %w", err)
				}
				cfg.Exec = []string{exe, "bench", "conns-worker"}
				cfg.WorkerStderr = os.Stderr
			}
			return b.run(cmd, func(ctx context.Context) (*bench.Report, error) { return bench.Conns(ctx, cfg) })
		},
	}
	f := cmd.Flags()
	b.add(f, false)
	f.IntVar(&cfg.Count, "count", 1000, "connections to open")
	f.DurationVar(&cfg.Hold, "hold", 10*time.Second, "how long to hold them once all are open")
	f.Float64Var(&cfg.Rate, "rate", 0, "connections opened a second over all workers (0: as fast as --concurrency allows)")
	f.IntVar(&cfg.Procs, "procs", 1, "worker processes (each holds at most ~19,900)")
	f.IntVar(&cfg.SourceIPs, "source-ips", 64, "loopback source addresses to spread over (-1: let the OS pick)")
	f.DurationVar(&cfg.Ping, "ping", 25*time.Second, "keep-alive ping interval of each connection")
	f.StringVar(&cfg.AdminToken, "admin-token", os.Getenv("COURIER_ADMIN_TOKEN"), "admin token of the gateways, to read their memory and goroutines (env COURIER_ADMIN_TOKEN)")
	f.IntSliceVar(&cfg.ServerPIDs, "server-pid", nil, "pid of a local server process to read memory from /proc (without --admin-token)")
	f.BoolVar(&inProcess, "in-process", false, "run the workers as goroutines of this process instead of worker processes")
	return cmd
}

// newBenchConnsWorkerCmd is the hidden worker `bench conns` runs: it
// speaks the coordinator's protocol on stdin and stdout.
func newBenchConnsWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "conns-worker",
		Short:  "One worker process of bench conns (internal)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Ctrl-C reaches the whole process group: the coordinator
			// decides when workers close (it measures the servers first).
			signal.Ignore(os.Interrupt)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
			defer stop()
			return bench.ConnsWorker(ctx, os.Stdin, os.Stdout)
		},
	}
}
