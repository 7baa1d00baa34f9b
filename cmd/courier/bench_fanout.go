package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchFanoutCmd() *cobra.Command {
	var cfg bench.FanoutConfig
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Groups: senders send numbered group messages, every member checks them",
		Long: `Registers --groups x --members users and creates the groups (member 0 of
each creates it). The first --senders members of every group send
--messages numbered messages to it; every other member checks it gets each
one exactly once and in each sender's order, and measures send-to-receive
latency. Reports deliveries/s (one message reaching one member) besides
msgs/s (group messages stored). --rate switches to open loop as in direct.`,
		Example: `  courier bench fanout --members 1024 --senders 4 --messages 100
  courier bench fanout --groups 20 --members 50 --rate 200 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Target = b.target(cmd)
			return b.run(cmd, func(ctx context.Context) (*bench.Report, error) { return bench.Fanout(ctx, cfg) })
		},
	}
	f := cmd.Flags()
	b.add(f, true)
	f.IntVar(&cfg.Groups, "groups", 1, "groups")
	f.IntVar(&cfg.Members, "members", 100, "members per group, the creator included (at most 1024)")
	f.IntVar(&cfg.Senders, "senders", 4, "members of each group that send")
	f.IntVar(&cfg.Messages, "messages", 50, "messages each sender sends")
	f.IntVar(&cfg.Window, "window", 4, "sends each sender keeps in flight (closed loop)")
	f.Float64Var(&cfg.Rate, "rate", 0, "open loop: group messages a second over all senders (0: closed loop)")
	trafficFlags(f, &cfg.Traffic)
	return cmd
}
