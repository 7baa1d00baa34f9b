package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchDirectCmd() *cobra.Command {
	var cfg bench.DirectConfig
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "direct",
		Short: "Pairs of users: each sender sends its receiver a numbered stream of messages",
		Long: `Registers 2 x --pairs users, connects them all, and lets each sender send
--messages messages to its own receiver. Closed loop (default): each sender
keeps --window sends in flight, as fast as the server acknowledges: the
maximum throughput. Open loop (--rate N): the senders together send N
messages a second on a fixed schedule whatever the server does, and latency
counts from the scheduled send time, so queueing is not hidden.

Every payload carries its send time and sequence number, so each receiver
measures send-to-receive latency and checks exactly-once, in-order delivery.
Exits non-zero when a message was lost, duplicated or reordered, a send
failed, or the run did not finish.`,
		Example: `  courier bench direct --url ws://127.0.0.1:8080 --pairs 500 --messages 200
  courier bench direct --pairs 500 --messages 2000 --rate 20000 --plot direct.png
  courier bench direct --pairs 500 --messages 200 --warmup 400   # a Cassandra store, warm
  courier bench direct --url wss://chat.example.com --ca-file ca.pem --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Target = b.target(cmd)
			return b.run(cmd, func(ctx context.Context) (*bench.Report, error) { return bench.Direct(ctx, cfg) })
		},
	}
	f := cmd.Flags()
	b.add(f, true)
	f.IntVar(&cfg.Pairs, "pairs", 100, "sender/receiver pairs (2 x pairs clients)")
	f.BoolVar(&cfg.E2EE, "e2ee", false, "end-to-end encrypt every message (Signal protocol in the clients; compare with and without)")
	f.IntVar(&cfg.Messages, "messages", 100, "messages each sender sends")
	f.IntVar(&cfg.Window, "window", 8, "sends each sender keeps in flight (closed loop)")
	f.Float64Var(&cfg.Rate, "rate", 0, "open loop: messages a second over all senders (0: closed loop)")
	f.IntVar(&cfg.Warmup, "warmup", 0, "first send this many messages per sender, unmeasured, on other users (a JVM store's warm-up)")
	trafficFlags(f, &cfg.Traffic)
	return cmd
}
