package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/admin"
)

func newAdminCmd() *cobra.Command {
	c := &admin.Client{}
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Inspect a running cluster through any node's admin API",
		Long: `Inspect a running cluster. Any node answers for the whole cluster.
The node must run with --admin-token; pass the same token here
(--token or COURIER_ADMIN_TOKEN).`,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("token") {
				c.Token = os.Getenv("COURIER_ADMIN_TOKEN")
			}
			if c.Token == "" {
				return fmt.Errorf("no admin token: pass --token or set COURIER_ADMIN_TOKEN")
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&c.URL, "url", "http://127.0.0.1:8080", "base URL of any node")
	cmd.PersistentFlags().StringVar(&c.Token, "token", "", "admin token (default $COURIER_ADMIN_TOKEN)")
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 15*time.Second)
	}
	print := func(v any, table func(w *tabwriter.Writer)) error {
		if asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		table(w)
		return w.Flush()
	}

	members := &cobra.Command{
		Use:   "members",
		Short: "List the members as the node sees them",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cx, cancel := ctx()
			defer cancel()
			r, err := c.Members(cx)
			if err != nil {
				return err
			}
			return print(r, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "MEMBER\tADDRESS\tGATEWAY\tKINDS\t")
				for _, m := range r.Members {
					fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t\n", m.ID, selfMark(m.Self), m.Address, m.Meta["gateway"], strings.Join(m.Kinds, ","))
				}
			})
		},
	}
	where := &cobra.Command{
		Use:   "where user|group <id>",
		Short: "Name the member that owns a user or a group",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			cx, cancel := ctx()
			defer cancel()
			r, err := c.Where(cx, args[0], args[1])
			if err != nil {
				return err
			}
			return print(r, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s %s is owned by %s at %s (gateway %s)\n", r.Kind, r.ID, r.Owner.ID, r.Owner.Address, r.Owner.Meta["gateway"])
			})
		},
	}
	grains := &cobra.Command{
		Use:   "grains",
		Short: "Activations per kind on every member",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cx, cancel := ctx()
			defer cancel()
			r, err := c.Grains(cx)
			if err != nil {
				return err
			}
			return print(r, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "MEMBER\tADDRESS\tACTIVATIONS\tSESSIONS\tHEAP MiB\t")
				for _, m := range r.Members {
					if m.Error != "" {
						fmt.Fprintf(w, "%s%s\t%s\tunreachable: %s\t\t\t\n", m.ID, selfMark(m.Self), m.Address, m.Error)
						continue
					}
					kinds := make([]string, 0, len(m.Activations))
					for k, n := range m.Activations {
						kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
					}
					sort.Strings(kinds)
					fmt.Fprintf(w, "%s%s\t%s\t%s\t%d\t%.1f\t\n", m.ID, selfMark(m.Self), m.Address, strings.Join(kinds, " "), m.Sessions, float64(m.HeapBytes)/(1<<20))
				}
			})
		},
	}
	limits := &cobra.Command{
		Use:   "limits",
		Short: "Requests refused by each rate limit, on every member",
		Long: `Requests refused by each rate limit since each member started: per action
and user or address ("send/user", "group-add/ip", ...) and the HTTP API's
("register/ip", "token/account", "bundles/pair", ...). A member logs
"rate limit reached" with the user or address when one starts being refused.
Tune the limits with serve's --*-limit-* flags.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cx, cancel := ctx()
			defer cancel()
			r, err := c.Grains(cx)
			if err != nil {
				return err
			}
			return print(r, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "MEMBER\tLIMIT\tREFUSED\t")
				for _, m := range r.Members {
					if m.Error != "" {
						fmt.Fprintf(w, "%s%s\tunreachable: %s\t\t\n", m.ID, selfMark(m.Self), m.Error)
						continue
					}
					if len(m.RateLimited) == 0 {
						fmt.Fprintf(w, "%s%s\t(none refused)\t\t\n", m.ID, selfMark(m.Self))
					}
					for _, name := range slices.Sorted(maps.Keys(m.RateLimited)) {
						fmt.Fprintf(w, "%s%s\t%s\t%d\t\n", m.ID, selfMark(m.Self), name, m.RateLimited[name])
					}
				}
			})
		},
	}
	cmd.AddCommand(members, where, grains, limits)
	return cmd
}

func selfMark(self bool) string {
	if self {
		return " (this node)"
	}
	return ""
}
