package main

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load a Courier server and check that it delivers every message exactly once, in order",
	}
	cmd.AddCommand(newBenchDirectCmd())
	return cmd
}

func newBenchDirectCmd() *cobra.Command {
	var cfg bench.DirectConfig
	var asJSON, verbose bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "direct",
		Short: "Pairs of users: each sender sends its receiver a numbered stream of messages",
		Long: `Registers 2 x --pairs users, connects them all, and lets each sender send
--messages messages to its own receiver, keeping --window sends in flight.
Every payload carries its send time and sequence number, so each receiver
measures send-to-receive latency and checks exactly-once, in-order delivery.

Prints sent, delivered, lost, duplicates, reordered, msgs/s (delivered per
second of sending) and latency percentiles; --json prints one JSON object
instead. Exits non-zero when a message was lost, duplicated or reordered,
a send failed, or the time bound ended the run.`,
		Example: `  courier bench direct --url ws://127.0.0.1:8080 --pairs 500 --messages 200
  courier bench direct --url wss://chat.example.com --ca-file ca.pem --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			level := slog.LevelError
			if verbose {
				level = slog.LevelInfo
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.Progress = os.Stderr
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			r, err := bench.Direct(ctx, cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				err = r.WriteJSON(out)
			} else {
				err = r.WriteText(out)
			}
			if err != nil {
				return err
			}
			if !r.OK() {
				return errors.New("bench failed: " + r.Problem())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080", "server URL (ws, wss, http or https); several gateways of one cluster separated by commas")
	f.IntVar(&cfg.Pairs, "pairs", 100, "sender/receiver pairs (2 x pairs clients)")
	f.IntVar(&cfg.Messages, "messages", 100, "messages each sender sends")
	f.IntVar(&cfg.Window, "window", 8, "sends each sender keeps in flight")
	f.IntVar(&cfg.PayloadSize, "payload", 64, "ciphertext bytes per message (at least 16)")
	f.DurationVar(&cfg.DurationLimit, "duration-limit", 5*time.Minute, "bound on the whole run")
	f.IntVar(&cfg.Concurrency, "concurrency", 64, "registrations and connects in flight during setup")
	f.StringVar(&cfg.CAFile, "ca-file", "", "PEM file of a private CA to trust for https/wss")
	f.BoolVar(&cfg.JSON, "json-protocol", false, "speak the json subprotocol instead of binary protobuf")
	f.DurationVar(&cfg.AckInterval, "ack-interval", 0, "SDK ack batching interval (0: SDK default)")
	f.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	f.BoolVar(&verbose, "verbose", false, "log SDK reconnects and warnings to stderr")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process (not the server) to this file")
	return cmd
}
