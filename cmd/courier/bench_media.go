package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
	"github.com/courier-im/courier/client"
)

func newBenchMediaCmd() *cobra.Command {
	cfg := bench.MediaConfig{Size: 64 << 20, PieceSize: client.DefaultMediaPieceSize}
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "media",
		Short: "Media: clients upload a file each (encrypted, resumable) and download it back",
		Long: `Registers and connects --clients users. All at once, each uploads one file
of --size through the SDK (encrypted with a fresh key, sent with tus under
/v1/media/), then all at once each downloads its file back. The plaintext is
generated from --seed per client and never kept: it is hashed (SHA-256) on
the way up and on the way down, and the two must match.

Reports upload and download MB/s (10^6 bytes of file a second: aggregate,
and per client p50 and min), the download's time to first byte, resumes,
and with --server-pid the server's RSS (before, peak sampled every 100 ms,
after) and CPU time per MiB. --kill-every cuts every client connection that
long after it opened, so transfers must resume from the server's offset.
--dd adds a reference: the same size written (with fsync) and read back
1 MiB at a time on the filesystem of --dd-dir, and the ratios to it.

Exits non-zero when a transfer failed, a file came back different or was
refused as corrupt, or the run did not finish.`,
		Example: `  courier bench media --size 256MiB --clients 8 --server-pid $(pgrep -f 'courier serve') --json
  courier bench media --size 2GiB --clients 1 --dd
  courier bench media --size 64MiB --clients 4 --kill-every 500ms`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if b.plot != "" {
				return errors.New("bench media draws no plot")
			}
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
			cfg.Target = b.target(cmd)
			r, err := bench.Media(ctx, cfg)
			if err != nil {
				return err
			}
			if b.asJSON {
				err = r.WriteJSON(cmd.OutOrStdout())
			} else {
				err = r.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if !r.OK() {
				return fmt.Errorf("bench media failed: %s", r.Problem)
			}
			return nil
		},
	}
	f := cmd.Flags()
	b.add(f, true)
	// A media report has no latency histogram to plot, and media goes over
	// HTTP: the WebSocket's protocol and ack batching do not matter.
	_ = f.MarkHidden("plot")
	_ = f.MarkHidden("json-protocol")
	_ = f.MarkHidden("ack-interval")
	f.Lookup("json").Usage = "print the report as one JSON document"
	f.IntVar(&cfg.Clients, "clients", 4, "users uploading (then downloading) one file each, all at once")
	f.Var(bench.SizeFlag{P: &cfg.Size}, "size", "size of every file: bytes, or with a unit: KiB, MiB, GiB (e.g. 256MiB, 1.5GiB)")
	f.Var(bench.SizeFlag{P: &cfg.PieceSize}, "piece-size", "bytes one upload request (PATCH) carries at most")
	f.DurationVar(&cfg.KillEvery, "kill-every", 0, "cut each client HTTP connection this long after it opened, so transfers resume (0: never)")
	f.StringVar(&cfg.PayloadSource, "payload-source", bench.PayloadRandom, "file contents: random (reproducible from --seed, per client) or zero")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the random payload")
	f.IntSliceVar(&cfg.ServerPIDs, "server-pid", nil, "pid of a local server process: the report adds its RSS (before, peak, after) and CPU time per MiB")
	f.StringVar(&cfg.TempDir, "temp-dir", "", "where the SDK keeps a download's ciphertext until it is verified (default: the system's temporary directory)")
	f.BoolVar(&cfg.DD, "dd", false, "after the run, write and read a file of --size in --dd-dir (1 MiB blocks, fsync) and compare")
	f.StringVar(&cfg.DDDir, "dd-dir", os.TempDir(), "directory of the --dd reference file (its filesystem is what is measured)")
	return cmd
}
