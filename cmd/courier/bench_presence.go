package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchPresenceCmd() *cobra.Command {
	var cfg bench.PresenceConfig
	var b benchFlags
	cmd := &cobra.Command{
		Use:   "presence",
		Short: "Presence fan-out: users subscribed to each other while some connections flap",
		Long: `Registers and connects --users users; each subscribes to the presence of
--subscriptions others. Then --flap-share of them drop their connection
about every --flap-every (the SDK reconnects at once) for --duration.
Reports the presence updates clients received per second and, with
--admin-token, the server's transitions, updates sent, updates suppressed
by its debounce, and its CPU time. Fails when, after the flapping, a
subscriber's last word about an online user is "offline".`,
		Example: `  courier bench presence --users 10000 --subscriptions 20 --flap-share 0.1 --duration 60s --admin-token secret`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if b.plot != "" || b.cpuProfile != "" {
				return errors.New("bench presence draws no plot and takes no --cpuprofile")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Target = b.target(cmd)
			r, err := bench.Presence(ctx, cfg)
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
				return errors.New("bench failed: " + r.Problem)
			}
			return nil
		},
	}
	f := cmd.Flags()
	b.add(f, true)
	// Shared with the delivery scenarios, but a presence report has no
	// latencies to plot and the run profiles nothing.
	_ = f.MarkHidden("plot")
	_ = f.MarkHidden("cpuprofile")
	f.IntVar(&cfg.Users, "users", 1000, "users online")
	f.IntVar(&cfg.Subscriptions, "subscriptions", 20, "presence subscriptions per user")
	f.Float64Var(&cfg.FlapShare, "flap-share", 0.1, "share of users whose connection flaps")
	f.DurationVar(&cfg.FlapEvery, "flap-every", 2*time.Second, "how often a flapping user drops its connection (±50%)")
	f.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the flapping lasts")
	f.DurationVar(&cfg.Settle, "settle", 5*time.Second, "wait after the flapping before the final states are checked")
	f.StringVar(&cfg.AdminToken, "admin-token", os.Getenv("COURIER_ADMIN_TOKEN"), "server admin token, to read its CPU time and presence counters")
	return cmd
}
