package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence"
)

func newTokenKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token-keys",
		Short: "Create, rotate and list the keys access tokens are signed with",
		Long: `Access tokens are JWTs signed with HMAC-SHA256. Their keys live in a file
(courier serve --token-keys, default <data>/token-keys), never in the store:
one key per line, "<kid> <base64url key> [created=<RFC 3339>] [legacy]",
# comments allowed. The first key signs new tokens, every key verifies, and
the key marked legacy also verifies tokens without a kid (from before key
ids). The file must be mode 0600 (or 0400): a node refuses a wider one.

A node alone creates its file. The nodes of a cluster (--cluster consul or
--store scylla) share one file, which the operator creates with "new" and
copies to every node, like a TLS certificate. After "rotate", copy the file
to every node again and send each courier serve SIGHUP (or restart it).`,
	}
	cmd.AddCommand(newTokenKeysNewCmd(), newTokenKeysRotateCmd(), newTokenKeysListCmd(), newTokenKeysMigrateCmd())
	return cmd
}

func newTokenKeysNewCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "new <path>",
		Short: "Create a key file with one fresh key (mode 0600); an existing file is left alone",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			k, err := gateway.NewTokenKeyFile(path, time.Now())
			if err != nil {
				return fmt.Errorf("%w (to add a key to it: courier token-keys rotate %s)", err, path)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created %s (mode 0600) with key %s\n"+
				"Copy it to every node of the cluster and start each with --token-keys naming it.\n", path, k.ID)
			return nil
		},
	}
}

func newTokenKeysRotateCmd() *cobra.Command {
	var dropOlderThan time.Duration
	var keep int
	cmd := &cobra.Command{
		Use:   "rotate <path>",
		Short: "Put a fresh key first (it signs once nodes reload), keep the others verifying, and retire old ones",
		Long: `Put a fresh key at the top of the key file: nodes sign with it once they have
reloaded the file (SIGHUP) or restarted, while the other keys keep verifying
the tokens they signed. Reload every node soon after copying the file: until
a node has the new key, it refuses tokens signed with it (clients fetch
another token).

A key retires when the key above it is created. --drop-older-than removes
keys retired longer ago than that; make it longer than --token-ttl (15m by
default) plus the time it takes to copy the file to every node, so no
token still alive is refused. --keep N keeps the first N keys only; --keep 1
refuses every token signed so far (a leaked key: every client fetches a new
token).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dropOlderThan < 0 || keep < 0 {
				return errors.New("--drop-older-than and --keep must not be negative")
			}
			path := args[0]
			keys, err := gateway.ReadTokenKeyFile(path)
			if err != nil {
				return err
			}
			next, added, dropped, err := gateway.RotateTokenKeys(keys, time.Now(), dropOlderThan, keep)
			if err != nil {
				return err
			}
			if err := gateway.WriteTokenKeyFile(path, next); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: key %s signs once a node reloads the file\n", path, added.ID)
			if len(next) > 1 {
				fmt.Fprintf(out, "verifying too: %s\n", keyIDs(next[1:]))
			}
			if len(dropped) > 0 {
				fmt.Fprintf(out, "dropped: %s (the tokens they signed are refused)\n", keyIDs(dropped))
			}
			if dropOlderThan > 0 && dropOlderThan < gateway.DefaultTokenTTL {
				fmt.Fprintf(out, "note: --drop-older-than %v is shorter than the default token lifetime (%v)\n", dropOlderThan, gateway.DefaultTokenTTL)
			}
			fmt.Fprintln(out, "Copy it to every node, then send each courier serve SIGHUP (or restart it).")
			return nil
		},
	}
	cmd.Flags().DurationVar(&dropOlderThan, "drop-older-than", 0, "drop the keys that stopped signing longer ago than this (0: none)")
	cmd.Flags().IntVar(&keep, "keep", 0, "keep at most this many keys, the new one included (0: all)")
	return cmd
}

func newTokenKeysListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list <path>",
		Short: "List the keys of a key file (ids and dates, never the keys)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := gateway.ReadTokenKeyFile(args[0])
			if err != nil {
				return err
			}
			printTokenKeys(cmd.OutOrStdout(), keys)
			return nil
		},
	}
}

func printTokenKeys(out io.Writer, keys []gateway.TokenKey) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KID\tCREATED\tROLE\t")
	for i, k := range keys {
		created, role := "-", "verifies"
		if !k.Created.IsZero() {
			created = k.Created.UTC().Format(time.RFC3339)
		}
		if i == 0 {
			role = "signs, verifies"
		}
		if k.Legacy {
			role += ", tokens without a kid too"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t\n", k.ID, created, role)
	}
	_ = w.Flush()
}

func keyIDs(keys []gateway.TokenKey) string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ", ")
}

func newTokenKeysMigrateCmd() *cobra.Command {
	var cfg node.Config
	var tokenKey string
	cmd := &cobra.Command{
		Use:   "migrate <path>",
		Short: "Copy the token key an earlier Courier kept in the store (or --token-key) into a key file",
		Long: `Earlier versions kept the token key in the store (or took it as --token-key)
and signed tokens without a kid. This copies that key into the key file at
<path> (created when missing, then with it as the signing key; else added
after the others), marked legacy, so that the tokens signed with it stay
valid. The store is left as it is: the first node started with the file
deletes the key there. A node alone does all this by itself; the nodes of a
cluster need it done once, then the file copied to every node.

The store is named as for courier serve (flags, or COURIER_* variables); an
embedded store only while no node runs on it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return err
			}
			path := args[0]
			secret, from, err := legacyTokenKey(cmd.Context(), cfg, tokenKey)
			if err != nil {
				return err
			}
			if secret == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "%s holds no token key: nothing to migrate (create a key file with: courier token-keys new %s)\n", from, path)
				return nil
			}
			kid, added, err := gateway.ImportLegacyTokenKeyFile(path, secret, time.Now())
			if err != nil {
				return err
			}
			if !added {
				fmt.Fprintf(cmd.OutOrStdout(), "%s already holds the key of %s, as %s\n", path, from, kid)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "copied the key of %s into %s as %s (legacy)\n"+
				"Copy it to every node and start each with --token-keys naming it. Then rotate the key out:\n"+
				"the store's backups hold it (courier token-keys rotate, and after the token lifetime, rotate --drop-older-than).\n", from, path, kid)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "data", "data directory of the embedded store")
	f.StringVar(&cfg.Store, "store", "embedded", "store: embedded or scylla")
	f.StringSliceVar(&cfg.ScyllaHosts, "scylla-hosts", []string{"127.0.0.1:9042"}, "CQL contact points host[:port],...")
	f.StringVar(&cfg.ScyllaKeyspace, "scylla-keyspace", "courier", "keyspace of the scylla store")
	f.StringVar(&cfg.ScyllaLocalDC, "scylla-local-dc", "", "datacenter whose nodes to prefer")
	f.StringVar(&cfg.ScyllaUsername, "scylla-username", "", "database user")
	f.StringVar(&cfg.ScyllaPassword, "scylla-password", "", "database password (prefer COURIER_SCYLLA_PASSWORD)")
	f.DurationVar(&cfg.ScyllaTimeout, "scylla-timeout", 10*time.Second, "timeout of one database request")
	f.StringVar(&tokenKey, "token-key", "", "the hex key the nodes were started with (--token-key), instead of the store's (prefer COURIER_TOKEN_KEY)")
	return cmd
}

// legacyTokenKey is the key to migrate: --token-key's, or the store's (nil
// when it holds none), and where it comes from.
func legacyTokenKey(ctx context.Context, cfg node.Config, tokenKey string) ([]byte, string, error) {
	if tokenKey != "" {
		secret, err := hex.DecodeString(tokenKey)
		if err != nil {
			return nil, "", fmt.Errorf("--token-key must be hex: %w", err)
		}
		if len(secret) < gateway.MinTokenKeyBytes {
			return nil, "", fmt.Errorf("--token-key is %d bytes, need at least %d", len(secret), gateway.MinTokenKeyBytes)
		}
		return secret, "--token-key", nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	from := "the store in " + cfg.DataDir
	if cfg.Store == "scylla" {
		from = "keyspace " + cfg.ScyllaKeyspace
	}
	s, err := node.OpenStore(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	defer s.Close()
	secret, err := s.LoadSecret(ctx, node.LegacyTokenKeySecret)
	if errors.Is(err, persistence.ErrNotFound) {
		return nil, from, nil
	}
	if err != nil {
		return nil, "", err
	}
	return secret, from, nil
}
