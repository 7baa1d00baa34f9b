package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchStormCmd() *cobra.Command {
	var cfg bench.StormConfig
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "storm",
		Short: "Reconnect storm: many clients with pending messages reconnect at once",
		Long: `Registers --clients users, connects each once and takes them offline; then
--senders users store --messages messages in every offline inbox. Then all
clients reconnect at once (--storm-concurrency bounds the reconnects in
flight; 0: all at once) and resume their inboxes. Reports how long until all
were connected and until all had caught up (the latency percentiles are the
clients' catch-up times), and checks every pending message arrived exactly
once, in order.`,
		Example: `  courier bench storm --clients 10000 --messages 10
  courier bench storm --clients 2000 --storm-concurrency 500 --plot storm.png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Target = b.target(cmd)
			return b.run(cmd, func(ctx context.Context) (*bench.Report, error) { return bench.Storm(ctx, cfg) })
		},
	}
	f := cmd.Flags()
	b.add(f, true)
	f.IntVar(&cfg.Clients, "clients", 1000, "clients that reconnect at once")
	f.IntVar(&cfg.Senders, "senders", 0, "users that fill the inboxes (0: clients/50, at least 1)")
	f.IntVar(&cfg.Messages, "messages", 10, "messages pending in each inbox")
	f.IntVar(&cfg.Window, "window", 16, "sends each sender keeps in flight while filling")
	f.IntVar(&cfg.StormConcurrency, "storm-concurrency", 0, "reconnects in flight during the storm (0: all at once)")
	trafficFlags(f, &cfg.Traffic)
	return cmd
}
