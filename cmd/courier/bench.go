package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/courier-im/courier/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a Courier server and check that it delivers every message exactly once, in order",
		Long: `Seven scenarios: direct (1:1), fanout (groups), mixed (a realistic mix),
storm (reconnect storm), conns (idle connections and their memory),
presence (presence fan-out while connections flap) and media (encrypted
file uploads and downloads, resumable); plot redraws the plot of a saved
--json report.

direct, fanout, mixed, storm and conns check exactly-once, in-order
delivery as well as speed, print a summary table (--json: one JSON
document with the full latency histogram), can draw --plot out.png, and
exit non-zero when anything was lost, duplicated or reordered. presence
checks instead that every subscriber ends up knowing who is online, and
exits non-zero otherwise (no latency histogram, no plot). media checks
that every file comes back with the SHA-256 it went up with and reports
MB/s, time to first byte, resumes and the server's memory (no plot).
--url may list several gateways of a cluster. Ctrl-C stops a run and
prints what was measured so far. See bench/README.md.`,
	}
	cmd.AddCommand(newBenchDirectCmd(), newBenchFanoutCmd(), newBenchMixedCmd(), newBenchStormCmd(), newBenchAbuseCmd(),
		newBenchConnsCmd(), newBenchConnsWorkerCmd(), newBenchPlotCmd(), newBenchPresenceCmd(), newBenchMediaCmd())
	return cmd
}

// benchFlags are the flags every scenario has.
type benchFlags struct {
	url           string
	durationLimit time.Duration
	concurrency   int
	caFile        string
	jsonProtocol  bool
	ackInterval   time.Duration
	asJSON        bool
	plot          string
	verbose       bool
	progressEvery time.Duration
	cpuProfile    string
}

// trafficFlags are the flags of every scenario that sends messages.
func trafficFlags(f *pflag.FlagSet, t *bench.Traffic) {
	f.IntVar(&t.PayloadSize, "payload", 64, "ciphertext bytes per message (at least 16)")
	f.DurationVar(&t.StallTimeout, "stall-timeout", time.Minute, "stop waiting for the last deliveries when none arrived for this long")
	f.IntSliceVar(&t.ServerPIDs, "server-pid", nil, "pid of a local server process: the report adds its CPU time per message")
}

// add registers the flags; sdk adds those of scenarios that run SDK clients.
func (b *benchFlags) add(f *pflag.FlagSet, sdk bool) {
	f.StringVar(&b.url, "url", "ws://127.0.0.1:8080", "server URL (ws, wss, http or https); several gateways of one cluster separated by commas")
	f.DurationVar(&b.durationLimit, "duration-limit", 5*time.Minute, "bound on the whole run")
	f.IntVar(&b.concurrency, "concurrency", 64, "registrations and connects in flight during setup")
	f.StringVar(&b.caFile, "ca-file", "", "PEM file of a private CA to trust for https/wss")
	f.BoolVar(&b.asJSON, "json", false, "print the report as one JSON document (with the full latency histogram)")
	f.StringVar(&b.plot, "plot", "", "write a PNG with the latency CDF and the throughput over time to this file")
	f.DurationVar(&b.progressEvery, "progress-interval", 2*time.Second, "period of progress lines when stderr is not a terminal")
	f.StringVar(&b.cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process (not the server) to this file")
	if sdk {
		f.BoolVar(&b.jsonProtocol, "json-protocol", false, "speak the json subprotocol instead of binary protobuf")
		f.DurationVar(&b.ackInterval, "ack-interval", 0, "SDK ack batching interval (0: SDK default)")
		f.BoolVar(&b.verbose, "verbose", false, "log SDK reconnects and warnings to stderr")
	}
}

func (b *benchFlags) logger(cmd *cobra.Command) *slog.Logger {
	level := slog.LevelError
	if b.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
}

// progress is where progress goes: stderr (a bar on a terminal).
func progressOf(cmd *cobra.Command) io.Writer { return cmd.ErrOrStderr() }

// target is what the flags say about the server and the run, for the
// scenarios that run SDK clients.
func (b *benchFlags) target(cmd *cobra.Command) bench.Target {
	return bench.Target{
		URL: b.url, Concurrency: b.concurrency, CAFile: b.caFile,
		JSON: b.jsonProtocol, AckInterval: b.ackInterval, Logger: b.logger(cmd),
		DurationLimit: b.durationLimit, Progress: progressOf(cmd), ProgressInterval: b.progressEvery,
	}
}

// run runs a scenario until it ends or a signal stops it, prints the
// report (also after a signal: what was measured so far), draws the plot,
// and fails when the report is not clean.
func (b *benchFlags) run(cmd *cobra.Command, scenario func(ctx context.Context) (*bench.Report, error)) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal a second one kills the process.
		<-ctx.Done()
		stop()
	}()
	if b.cpuProfile != "" {
		f, err := os.Create(b.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	r, err := scenario(ctx)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if b.asJSON {
		err = r.WriteJSON(out)
	} else {
		err = r.WriteText(out)
	}
	if err != nil {
		return err
	}
	if b.plot != "" {
		if err := bench.WritePlot(r, b.plot); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "bench: plot written to %s\n", b.plot)
	}
	if !r.OK() {
		return fmt.Errorf("bench %s failed: %s", r.Scenario, r.Problem())
	}
	return nil
}

func newBenchPlotCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plot REPORT.json OUT.png",
		Short: "Draw the plot of a report saved with --json",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			r, err := bench.ReadJSON(f)
			if err != nil {
				return err
			}
			return bench.WritePlot(r, args[1])
		},
	}
}
