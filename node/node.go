// Package node assembles one Courier node: the store, the actor system, the
// grain cluster, the gateway and its HTTP(S) listener. `courier serve` and
// the integration tests start nodes through it, so both run the same wiring.
package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
)

// Config is everything a node can be told. Zero values take defaults.
type Config struct {
	// Listen is the HTTP/WebSocket address (default 127.0.0.1:8080).
	Listen string
	// DataDir holds the embedded store (default ./data).
	DataDir string
	// Store selects the store: "embedded" (default).
	Store string
	// InboxTTL is how long undelivered entries are kept (default 30 days).
	InboxTTL time.Duration
	// PassivateAfter is how long an idle grain stays in memory (default 5m).
	PassivateAfter time.Duration
	// RequestTimeout bounds one grain request attempt (default 5s).
	RequestTimeout time.Duration
	// SendQueue is the per-session outbound frame limit (default 1024).
	SendQueue int
	// SeqBlockSize is how many inbox numbers one lease reserves (default 1000).
	SeqBlockSize uint64
	// MaxFrameBytes is the largest client frame (default 256 KiB).
	MaxFrameBytes int
	// IdleTimeout closes silent sockets (default 60s).
	IdleTimeout time.Duration
	// RatePerSec and RateBurst bound the frames one socket may send
	// (default 2000/s, burst 4000); frames over it get RATE_LIMITED.
	RatePerSec float64
	RateBurst  int
	// TLSCert and TLSKey, when both set, make the listener serve https/wss.
	TLSCert, TLSKey string
	// TokenKey signs access tokens (hex, at least 32 bytes). Empty: a key is
	// generated once and kept in the store, so every node sharing the store
	// shares it.
	TokenKey string
	// TokenTTL is the access token lifetime (default 15m).
	TokenTTL time.Duration
	// NodeAddress is the Proto.Actor remote address host:port; empty runs
	// this node without remote (single node).
	NodeAddress string
	Logger      *slog.Logger
}

// Node is a running Courier node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	store   persistence.Store
	cluster *cluster.Cluster
	gateway *gateway.Gateway
	http    *http.Server
	ln      net.Listener
	served  chan error
	tls     bool
}

// Start opens the store, starts the cluster and serves the gateway.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.Store == "" {
		cfg.Store = "embedded"
	}
	n := &Node{cfg: cfg, log: cfg.Logger}
	var err error
	if n.store, err = openStore(cfg); err != nil {
		return nil, err
	}
	if err := n.start(ctx); err != nil {
		n.closeQuietly()
		return nil, err
	}
	return n, nil
}

func openStore(cfg Config) (persistence.Store, error) {
	switch cfg.Store {
	case "embedded":
		dir := filepath.Join(cfg.DataDir, "store")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir %s: %w", dir, err)
		}
		s, err := embedded.Open(dir, embedded.Options{InboxTTL: cfg.InboxTTL, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("open embedded store in %s: %w", dir, err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unknown store %q: use embedded", cfg.Store)
	}
}

func (n *Node) start(ctx context.Context) error {
	cfg := n.cfg
	cluster.RegisterMessages(actors.Messages()...)
	deps := &actors.Deps{
		Store:  n.store,
		Logger: cfg.Logger,
		Config: actors.UserConfig{
			SeqBlockSize:   cfg.SeqBlockSize,
			RequestTimeout: cfg.RequestTimeout,
			PassivateAfter: cfg.PassivateAfter,
		},
	}
	system := cluster.NewActorSystem(cfg.Logger)
	cl, err := cluster.New(system, cluster.Config{
		NodeAddress:    cfg.NodeAddress,
		PassivateAfter: cfg.PassivateAfter,
		RequestTimeout: cfg.RequestTimeout,
		Logger:         cfg.Logger,
	}, actors.UserKind(deps))
	if err != nil {
		return fmt.Errorf("build cluster: %w", err)
	}
	deps.Cluster = cl
	if err := cl.Start(ctx); err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	n.cluster = cl

	key, err := n.tokenKey(ctx)
	if err != nil {
		return err
	}
	tokens, err := gateway.NewTokens(key, cfg.TokenTTL, nil)
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{
		Store:          n.store,
		Cluster:        cl,
		Tokens:         tokens,
		Logger:         cfg.Logger,
		MaxFrameBytes:  cfg.MaxFrameBytes,
		SendQueue:      cfg.SendQueue,
		IdleTimeout:    cfg.IdleTimeout,
		RatePerSec:     cfg.RatePerSec,
		RateBurst:      cfg.RateBurst,
		RequestTimeout: cfg.RequestTimeout,
		LeaseRenew:     leaseRenew(cfg.PassivateAfter),
	})
	if err != nil {
		return err
	}
	n.gateway = gw

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("load TLS certificate %s / key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		n.tls = true
	}
	n.ln = ln
	n.http = &http.Server{
		Handler:           gw.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	n.served = make(chan error, 1)
	go func() { n.served <- n.http.Serve(ln) }()
	n.log.Info("courier node serving", "addr", n.Addr(), "tls", n.tls, "store", cfg.Store, "data", cfg.DataDir)
	return nil
}

// leaseRenew keeps sessions renewing well inside the passivation timeout.
func leaseRenew(passivate time.Duration) time.Duration {
	if passivate <= 0 {
		return 30 * time.Second
	}
	return min(30*time.Second, passivate/3)
}

func (n *Node) tokenKey(ctx context.Context) ([]byte, error) {
	if n.cfg.TokenKey != "" {
		k, err := hex.DecodeString(n.cfg.TokenKey)
		if err != nil {
			return nil, fmt.Errorf("token key must be hex: %w", err)
		}
		return k, nil
	}
	candidate := make([]byte, 32)
	if _, err := rand.Read(candidate); err != nil {
		return nil, err
	}
	k, err := n.store.LoadOrStoreSecret(ctx, "token-key", candidate)
	if err != nil {
		return nil, fmt.Errorf("load token key: %w", err)
	}
	return k, nil
}

// Addr is the listener's address (useful with Listen "127.0.0.1:0").
func (n *Node) Addr() string { return n.ln.Addr().String() }

// URL is the base URL clients use: http(s)://addr.
func (n *Node) URL() string {
	if n.tls {
		return "https://" + n.Addr()
	}
	return "http://" + n.Addr()
}

// Store is the node's store (for tests and admin).
func (n *Node) Store() persistence.Store { return n.store }

// Cluster is the node's grain cluster.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Gateway is the node's gateway.
func (n *Node) Gateway() *gateway.Gateway { return n.gateway }

// Close shuts the node down gracefully: sessions are closed with 1001 so
// clients reconnect, grains stop, and the store is flushed and closed.
func (n *Node) Close(ctx context.Context) error {
	var errs []error
	if n.gateway != nil {
		errs = append(errs, n.gateway.Shutdown(ctx))
	}
	if n.http != nil {
		errs = append(errs, n.http.Shutdown(ctx))
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Shutdown(ctx))
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

func (n *Node) closeQuietly() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.Close(ctx)
}
