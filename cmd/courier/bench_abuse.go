package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/bench"
)

func newBenchAbuseCmd() *cobra.Command {
	var cfg bench.AbuseConfig
	var url string
	var pids []int
	var budgetMiB int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "abuse",
		Short: "A victim pair's latency and the server's memory while a hostile client runs each abuse at full speed",
		Long: `Connects a victim pair (alice sends to bob at --victim-rate from 127.0.0.1)
and runs each --kinds abuse in turn for --duration from one other address
(--abuser-addr, default 127.0.0.2), with --workers sockets or request loops:

  none          the baseline
  receipts      read receipts for made-up messages of the victim, from a stranger
  identity      the victim added as a contact, then new identity keys uploaded over and over
  unknown-ids   sends to random user ids
  slow-readers  64 KiB messages to 20 accounts that never read their sockets
  idle-http     up to 1,000 silent keep-alive connections
  bundles       the victim's prekey bundle fetched over and over
  register      registrations with fresh handles
  send-flood    messages to a third user from one account
  bad-frames    garbage frames, a new socket each time one is closed

Reports, per kind, the victim's p50/p99 send → delivery latency and its
ratio to the baseline's p99, what the abuser's requests got, and the peak
RSS of the --server-pid processes. Fails when a kind lost a victim message,
took the victim's p99 over 2x the baseline, or the server over the RSS
budget. Run the server with --limit-loopback, so the abuser's address is
limited like any client's.`,
		Example: `  courier serve --data /tmp/abuse --limit-loopback &
  courier bench abuse --server-pid $! --duration 15s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.URL, cfg.ServerPIDs = url, pids
			cfg.RSSBudget = uint64(budgetMiB) << 20
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Abuse(ctx, cfg)
			if rep != nil {
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					_ = enc.Encode(rep)
				} else {
					rep.WriteText(cmd.OutOrStdout())
				}
			}
			if err != nil {
				return err
			}
			if p := rep.Problem(); p != "" {
				return fmt.Errorf("bench abuse: %s", p)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:8080", "server URL")
	f.StringSliceVar(&cfg.Kinds, "kinds", bench.AbuseKinds, "abuses to run, in order (none is the baseline the others are compared with)")
	f.DurationVar(&cfg.Duration, "duration", 15*time.Second, "how long each abuse runs")
	f.Float64Var(&cfg.VictimRate, "victim-rate", 50, "the victim pair's messages per second")
	f.IntVar(&cfg.Workers, "workers", 8, "the abuser's sockets or request loops")
	f.StringVar(&cfg.AbuserAddr, "abuser-addr", "127.0.0.2", "local address the abuser connects from")
	f.IntSliceVar(&pids, "server-pid", nil, "local server processes whose RSS is sampled")
	f.IntVar(&budgetMiB, "rss-budget-mib", 1024, "the most the servers may hold, in MiB")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
