// Package nodetest starts a whole Courier node for a test: on a free
// loopback port, with a temporary data directory, stopped when the test ends.
package nodetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
)

// Logger discards logs unless COURIER_TEST_LOG is set, then shows them all.
func Logger() *slog.Logger {
	if os.Getenv("COURIER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Start runs a node with cfg. Empty Listen, DataDir and Logger become
// 127.0.0.1:0, a directory of t, and Logger(). Every test client comes
// from 127.0.0.1, so the per-address limits a test leaves zero are off:
// MaxConnsPerIP and the per-IP rates of registration and tokens. Tests of
// those limits set them (node/abuse_test.go).
func Start(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = -1
	}
	if cfg.Limits.RegisterPerIP.N == 0 {
		cfg.Limits.RegisterPerIP = gateway.Off
	}
	if cfg.Limits.TokenPerIP.N == 0 {
		cfg.Limits.TokenPerIP = gateway.Off
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	return n
}

// TokenKeysFile creates a token key file with one fresh key in a directory
// of t, for nodes that must share one: a cluster's nodes, or a node on the
// scylla store (which makes none of its own).
func TokenKeysFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), node.TokenKeysFileName)
	if _, err := gateway.NewTokenKeyFile(path, time.Now()); err != nil {
		t.Fatal(err)
	}
	return path
}
