package node

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/persistence"
)

// Token keys (Config.TokenKeysFile, Config.TokenKey).
//
// The keys live in a file of their own, mode 0600, never in the store:
// whoever reads a store or one of its backups must not be able to sign
// tokens. A node alone creates its file when it is missing. The nodes of
// a cluster verify each other's tokens, so they need the same file: the
// operator makes it once (`courier token-keys new`) and hands it to every
// node like a TLS certificate; such a node never makes its own.
//
// Earlier versions kept one key in the store (secret "token-key") and
// signed tokens without a kid. A node that finds it there moves it into
// its key file as the legacy key, which verifies those tokens and goes on
// signing (with a kid) until a rotation, and then deletes it from the
// store. The nodes of a cluster cannot each write the shared file: they
// refuse to start until `courier token-keys migrate` has put the key in
// it, and the first one started with it deletes it from the store.

// LegacyTokenKeySecret is the store secret earlier versions kept the
// token key in.
const LegacyTokenKeySecret = "token-key"

// TokenKeysFileName is the key file in the data directory when
// Config.TokenKeysFile is empty.
const TokenKeysFileName = "token-keys"

// TokenKeysFile is the token key file this node reads (empty with
// Config.TokenKey).
func (n *Node) TokenKeysFile() string {
	if n.cfg.TokenKey != "" {
		return ""
	}
	return cmp.Or(n.cfg.TokenKeysFile, filepath.Join(n.cfg.DataDir, TokenKeysFileName))
}

// sharedTokenKeys reports whether other nodes verify this node's tokens:
// then only the operator makes the key file.
func (n *Node) sharedTokenKeys() bool {
	return n.cfg.Cluster == "consul" || n.cfg.Store == "scylla"
}

// tokenKeySet loads the token keys and moves a key the store still holds
// out of it.
func (n *Node) tokenKeySet(ctx context.Context) (*gateway.TokenKeySet, error) {
	legacy, err := n.store.LoadSecret(ctx, LegacyTokenKeySecret)
	if errors.Is(err, persistence.ErrNotFound) {
		legacy = nil
	} else if err != nil {
		return nil, fmt.Errorf("look for a token key in the store: %w", err)
	}
	if n.cfg.TokenKey != "" {
		return n.operatorTokenKey(ctx, legacy)
	}
	path := n.TokenKeysFile()
	if legacy != nil && !n.sharedTokenKeys() {
		// A node alone owns its file: the key joins it (or makes it).
		if _, _, err := gateway.ImportLegacyTokenKeyFile(path, legacy, time.Now()); err != nil {
			return nil, err
		}
	}
	keys, err := gateway.ReadTokenKeyFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && n.sharedTokenKeys():
		return nil, n.keyFileMissing(path, legacy != nil)
	case errors.Is(err, fs.ErrNotExist):
		if keys, err = n.createTokenKeyFile(path); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	set, err := gateway.NewTokenKeySet(keys)
	if err != nil {
		return nil, err
	}
	if legacy != nil {
		if !set.Contains(legacy) {
			return nil, fmt.Errorf("the store still holds the token key an earlier Courier kept there, and the token key file %s lacks it: the tokens nodes signed with it would be refused. Add it to the file once:\n    %s\nthen copy %s to every node again; the first node started with it deletes the key from the store",
				path, n.migrateCommand(path), path)
		}
		// The file holds the key durably before the store forgets it:
		// a crash in between finds both next time, and only deletes.
		if err := n.store.DeleteSecret(ctx, LegacyTokenKeySecret); err != nil {
			return nil, fmt.Errorf("delete the token key from the store: %w", err)
		}
		n.log.Warn("moved the token key an earlier version kept in the store into the token key file; the store's backups hold it: rotate it out (courier token-keys rotate, then after --token-ttl rotate --drop-older-than)",
			"file", path, "kid", gateway.TokenKeyID(legacy))
	}
	n.log.Info("token keys loaded", "file", path, "signing", set.SigningKeyID(), "keys", len(keys))
	return set, nil
}

// operatorTokenKey is the one key of --token-key. It verifies tokens
// without a kid too, which nodes given it signed before key ids.
func (n *Node) operatorTokenKey(ctx context.Context, legacy []byte) (*gateway.TokenKeySet, error) {
	if n.cfg.TokenKeysFile != "" {
		return nil, errors.New("--token-key and --token-keys both give token keys: use one (--token-keys can be rotated)")
	}
	secret, err := hex.DecodeString(n.cfg.TokenKey)
	if err != nil {
		return nil, fmt.Errorf("--token-key must be hex: %w", err)
	}
	set, err := gateway.NewTokenKeySet([]gateway.TokenKey{gateway.LegacyTokenKey(secret, time.Time{})})
	if err != nil {
		return nil, fmt.Errorf("--token-key: %w", err)
	}
	if legacy != nil {
		// This node never signed with it; it only lies in the backups.
		if err := n.store.DeleteSecret(ctx, LegacyTokenKeySecret); err != nil {
			return nil, fmt.Errorf("delete the token key from the store: %w", err)
		}
		n.log.Warn("deleted the token key an earlier version kept in the store; this node signs with --token-key")
	}
	return set, nil
}

// createTokenKeyFile makes the key file of a node alone, with a fresh key.
func (n *Node) createTokenKeyFile(path string) ([]gateway.TokenKey, error) {
	k, err := gateway.NewTokenKey(time.Now())
	if err != nil {
		return nil, err
	}
	err = gateway.CreateTokenKeyFile(path, []gateway.TokenKey{k})
	if errors.Is(err, fs.ErrExist) {
		return gateway.ReadTokenKeyFile(path) // made meanwhile
	}
	if err != nil {
		return nil, err
	}
	n.log.Info("created the token key file", "file", path, "kid", k.ID)
	return []gateway.TokenKey{k}, nil
}

// keyFileMissing is the error of a cluster node without its key file: it
// says what to run.
func (n *Node) keyFileMissing(path string, legacy bool) error {
	if legacy {
		return fmt.Errorf("token key file %s is missing, and the store still holds the token key an earlier Courier kept there (every running node signs with it). The nodes of a cluster share one key file, which a node does not make itself. Move the key into one, once:\n    %s\nthen copy %s to every node (mode 0600) and start each with --token-keys naming it; the first node started with it deletes the key from the store",
			path, n.migrateCommand(path), path)
	}
	return fmt.Errorf("token key file %s is missing. The nodes of a cluster (--cluster consul, or --store scylla) share one key file, which a node does not make itself. Create it once:\n    courier token-keys new %s\nthen copy it to every node (mode 0600) and start each with --token-keys naming it",
		path, shellQuote(path))
}

// migrateCommand is the `courier token-keys migrate` that reads this
// node's store.
func (n *Node) migrateCommand(path string) string {
	args := []string{"courier", "token-keys", "migrate", shellQuote(path)}
	if n.cfg.Store == "scylla" {
		args = append(args, "--store", "scylla", "--scylla-hosts", shellQuote(strings.Join(n.cfg.ScyllaHosts, ",")),
			"--scylla-keyspace", shellQuote(cmp.Or(n.cfg.ScyllaKeyspace, "courier")))
		if n.cfg.ScyllaUsername != "" {
			args = append(args, "--scylla-username", shellQuote(n.cfg.ScyllaUsername), "# and COURIER_SCYLLA_PASSWORD")
		}
	} else {
		args = append(args, "--data", shellQuote(n.cfg.DataDir), "# with this node stopped")
	}
	return strings.Join(args, " ")
}

// shellQuote quotes s for a POSIX shell unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./_-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ReloadTokenKeys reads the token key file again: from then on tokens
// are signed with its first key and verified with all of them. A file
// that cannot be used (missing, unreadable, mode wider than 0600, not
// parsable) changes nothing and is the error. `courier serve` calls it on
// SIGHUP.
func (n *Node) ReloadTokenKeys() error {
	path := n.TokenKeysFile()
	if path == "" {
		return errors.New("the token key is --token-key: there is no key file to reload")
	}
	if n.tokens == nil {
		return errors.New("the node is not started")
	}
	n.reloadKeys.Lock()
	defer n.reloadKeys.Unlock()
	set, err := gateway.LoadTokenKeyFile(path)
	if err != nil {
		return fmt.Errorf("reload token keys: %w (the keys in use stay)", err)
	}
	was := n.tokens.Keys()
	n.tokens.SetKeys(set)
	n.log.Info("token keys reloaded", "file", path, "signing", set.SigningKeyID(), "keys", len(set.Keys()), "was signing", was.SigningKeyID())
	for _, k := range was.Keys() {
		switch {
		case set.Contains(k.Secret):
		case k.ID == was.SigningKeyID():
			n.log.Warn("the token key that signed until now is gone from the key file: the tokens it signed are refused", "kid", k.ID)
		default:
			n.log.Info("token key retired: the tokens it signed are refused", "kid", k.ID)
		}
	}
	return nil
}

// OpenStore opens the store cfg names as Start does, for a tool that
// reads it while no node runs on it (courier token-keys migrate).
func OpenStore(ctx context.Context, cfg Config) (persistence.Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.DataDir = cmp.Or(cfg.DataDir, "data")
	cfg.Store = cmp.Or(cfg.Store, "embedded")
	if cfg.Store == "embedded" {
		// Opening would make an empty store where none is.
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "store")); err != nil {
			return nil, fmt.Errorf("no embedded store in %s: %w", cfg.DataDir, err)
		}
	}
	return openStore(ctx, cfg)
}
