package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchMixedCmd() *cobra.Command {
	var cfg bench.MixedConfig
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "mixed",
		Short: "A realistic mix: 1:1 and group messages, receipts, typing, presence and reconnects",
		Long: `Registers --users users and creates --groups groups of --group-min to
--group-max random members. For --duration every user sends on a schedule
(--rate messages a second in all): a --group-share of them to one of its
groups, the rest to a random peer. Receivers mark a --read-share of their
1:1 messages read and the senders check every read receipt comes back;
--reconnects-per-sec connections are dropped as a flaky network would and
resume. A --typing-share of messages are preceded by a typing indicator,
and every user watches the presence of --presence-subs peers (both best
effort: counted, not verified). Every receiver checks exactly-once,
in-order delivery per sender and conversation.`,
		Example: `  courier bench mixed --users 1000 --groups 50 --rate 2000 --duration 60s
  courier bench mixed --group-share 0.5 --read-share 0.8 --reconnects-per-sec 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Target = b.target(cmd)
			return b.run(cmd, func(ctx context.Context) (*bench.Report, error) { return bench.Mixed(ctx, cfg) })
		},
	}
	f := cmd.Flags()
	b.add(f, true)
	f.IntVar(&cfg.Users, "users", 200, "users (all online)")
	f.IntVar(&cfg.Groups, "groups", 10, "groups")
	f.IntVar(&cfg.GroupMin, "group-min", 5, "smallest group")
	f.IntVar(&cfg.GroupMax, "group-max", 200, "largest group (at most --users)")
	f.Float64Var(&cfg.Rate, "rate", 200, "messages a second over all users")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long messages are sent")
	f.Float64Var(&cfg.GroupShare, "group-share", 0.2, "share of messages sent to groups (0..1)")
	f.Float64Var(&cfg.ReadShare, "read-share", 0.5, "share of received 1:1 messages marked read (0..1)")
	f.Float64Var(&cfg.ReconnectRate, "reconnects-per-sec", 0.5, "connections dropped a second (they reconnect and resume)")
	f.Float64Var(&cfg.TypingShare, "typing-share", 0.3, "share of messages preceded by a typing indicator (0..1)")
	f.IntVar(&cfg.PresenceSubs, "presence-subs", 3, "peers whose presence each user subscribes to")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the mix (groups, peers, shares)")
	trafficFlags(f, &cfg.Traffic)
	return cmd
}
