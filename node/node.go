// Package node assembles one Courier node: the store, the actor system, the
// grain cluster, the gateway and its HTTP(S) listener. `courier serve` and
// the integration tests start nodes through it, so both run the same wiring.
package node

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/admin"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/cluster/consul"
	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/persistence/scylla"
	"github.com/courier-im/courier/protos/clusterpb"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
	"github.com/courier-im/courier/turn"
	"github.com/courier-im/courier/verification"
)

// Config is everything a node can be told. Zero values take defaults.
type Config struct {
	// Listen is the HTTP/WebSocket address (default 127.0.0.1:8080).
	Listen string
	// DataDir holds the embedded store (default ./data).
	DataDir string
	// Store selects the store: "embedded" (default) or "scylla".
	Store string
	// ScyllaHosts are the CQL contact points of the scylla store, host or
	// host:port (ScyllaDB or Cassandra).
	ScyllaHosts []string
	// ScyllaKeyspace is the scylla store's keyspace (default "courier"),
	// created with ScyllaReplication when missing.
	ScyllaKeyspace string
	// ScyllaReplication is "N" (SimpleStrategy, N replicas; default 1) or
	// "dc1:3,dc2:3" (NetworkTopologyStrategy).
	ScyllaReplication string
	// ScyllaLocalDC is the datacenter this node prefers (with
	// NetworkTopologyStrategy).
	ScyllaLocalDC string
	// ScyllaUsername and ScyllaPassword authenticate to the database.
	ScyllaUsername, ScyllaPassword string
	// ScyllaTimeout bounds one database request (default 3s).
	ScyllaTimeout time.Duration
	// InboxTTL is how long undelivered entries are kept (default 30 days).
	InboxTTL time.Duration
	// SyncInterval is the embedded store's least time between two WAL
	// syncs, so commits close together share one (default 1ms; negative:
	// sync each at once).
	SyncInterval time.Duration
	// PassivateAfter is how long an idle grain stays in memory (default 5m).
	PassivateAfter time.Duration
	// RequestTimeout bounds one grain request attempt (default 5s).
	RequestTimeout time.Duration
	// SendQueue is the per-session outbound frame limit (default 1024).
	SendQueue int
	// SendQueueBytes and QueuedBytesTotal bound the send queues by
	// estimated bytes, per session and for the node (gateway.Config).
	SendQueueBytes   int
	QueuedBytesTotal int64
	// SeqBlockSize is how many inbox numbers one lease reserves (default 1000).
	SeqBlockSize uint64
	// FanoutBatch caps the group entries one fan-out request to a member
	// carries (default 64).
	FanoutBatch int
	// MaxFrameBytes is the largest client frame (default 256 KiB).
	MaxFrameBytes int
	// IdleTimeout closes silent sockets (default 60s).
	IdleTimeout time.Duration
	// ParkAfter lets a socket silent this long go without a reader
	// goroutine and read buffer until it speaks (default 1s; negative:
	// never). See gateway.Config.
	ParkAfter time.Duration
	// RatePerSec and RateBurst bound the frames one socket may send
	// (default 2000/s, burst 4000); frames over it get RATE_LIMITED.
	RatePerSec float64
	RateBurst  int
	// HTTPIdleTimeout closes a keep-alive HTTP connection silent between
	// requests for this long (default 60s), on the gateway's listener and
	// the debug listener. A WebSocket is not an HTTP connection any more
	// once upgraded: its silence is IdleTimeout's.
	HTTPIdleTimeout time.Duration
	// HTTPHeaderTimeout bounds reading a request's headers, and a TLS
	// handshake, from the first byte (default 10s).
	HTTPHeaderTimeout time.Duration
	// MaxConnsPerIP caps the connections (HTTP and WebSocket) one client
	// address, or IPv6 /64, holds open on the gateway's listener (default
	// 256; negative: no cap). Connections over it are closed unread.
	MaxConnsPerIP int
	// Limits rate-limits registration, tokens and key bundle fetches per
	// client IP and per account (see gateway.Limits).
	Limits gateway.Limits
	// RequireE2EE refuses sends that are not Signal messages
	// (gateway.Config.RequireE2EE).
	RequireE2EE bool
	// TLSCert and TLSKey, when both set, make the listener serve https/wss.
	TLSCert, TLSKey string
	// TokenKeysFile is the file of the keys access tokens are signed and
	// verified with (gateway.ParseTokenKeys; default <DataDir>/token-keys,
	// mode 0600, never in the store). A node alone creates it when it is
	// missing; the nodes of a cluster (Cluster "consul", or Store
	// "scylla") must be given one file, made once with `courier
	// token-keys new`. Node.ReloadTokenKeys reads it again.
	TokenKeysFile string
	// TokenKey is one token key the operator supplies instead of a key
	// file (hex, at least 32 bytes): every node given it signs and
	// verifies alike, but it cannot be rotated without refusing the
	// tokens it signed (TokenKeysFile can).
	TokenKey string
	// TokenTTL is the access token lifetime (default 15m).
	TokenTTL time.Duration
	// NodeAddress is the Proto.Actor remote address host:port; empty runs
	// this node without remote (single node).
	NodeAddress string
	// Advertise is the host:port peers dial when NodeAddress binds another
	// address (0.0.0.0, a NAT).
	Advertise string
	// Cluster is the membership provider: "local" (default; this node
	// alone) or "consul" (needs NodeAddress and a shared store).
	Cluster string
	// ConsulAddr is the Consul agent's HTTP address (default 127.0.0.1:8500).
	ConsulAddr string
	// ConsulService is the Consul service one cluster's nodes share
	// (default "courier").
	ConsulService string
	// ConsulTTL is how long a silent node stays a member (default 10s).
	ConsulTTL time.Duration
	// ConsulToken is the Consul ACL token, if the agent needs one.
	ConsulToken string
	// RequestRetries is how often a grain request is retried on a retryable
	// failure (default 3).
	RequestRetries int
	// PresenceDebounce is the least time between two presence updates of
	// one user (default 2s).
	PresenceDebounce time.Duration
	// CallRingTimeout is how long an unanswered call rings before it ends
	// as missed (default 45s).
	CallRingTimeout time.Duration
	// PushWebhookURL, when set, sends a content-free push for offline
	// devices with a registered token to this URL (HMAC-signed with
	// PushWebhookSecret).
	PushWebhookURL    string
	PushWebhookSecret string
	// PushAttempts is how often one push is tried before it is dead-lettered
	// (default 5); PushDeadLetter is a file that gets one JSON line per
	// push given up on (default: the log only).
	PushAttempts   int
	PushDeadLetter string
	// PushBackoff is the wait before the first retry of a failed push,
	// doubling per attempt up to a minute (default 1s).
	PushBackoff time.Duration
	// Registration is open (the default: any free handle) or verified: a
	// code goes to an address through a webhook (see verification.Config).
	// Its challenges are signed with a key kept in the store, so every
	// node sharing the store checks every node's codes.
	Registration verification.Config
	// AdminToken enables the admin API (/v1/admin/…) behind this bearer
	// token; empty serves none.
	AdminToken string
	// Media tunes media uploads and downloads under /v1/media/ (see
	// media.Config; an empty Dir is <DataDir>/media). Media is served when
	// the store keeps media records (persistence.MediaStore).
	Media media.Config
	// MediaS3 keeps media uploads and blobs in an S3-compatible bucket
	// instead of Media.Dir when its Bucket is set; every node of a cluster
	// names the same bucket, so any gateway serves any blob. An empty
	// TempDir is <DataDir>/media-s3-parts.
	MediaS3 media.S3Config
	// TURN gives calls a relay (see turn.Config): GET /v1/calls/turn and,
	// unless TURN.URIs names external servers, an embedded TURN server.
	// An empty TURN.Listen is the gateway's address over UDP: the same
	// host and port number (an ephemeral port when the gateway's is 0), so
	// one open port serves both. TURNOff runs no server and serves no
	// credentials. An empty TURN.Secret is generated once and kept in
	// <DataDir>/turn-secret (mode 0600).
	TURN    turn.Config
	TURNOff bool
	Logger  *slog.Logger
	// DropDeliveryForTest is passed to the gateway (gateway.Config): a
	// fault hook for tests that drops live entries. Never set in production.
	DropDeliveryForTest func(e *courierpb.InboxEntry) bool
}

// Defaults of the HTTP listener's limits (Config).
const (
	DefaultHTTPIdleTimeout   = 60 * time.Second
	DefaultHTTPHeaderTimeout = 10 * time.Second
	DefaultMaxConnsPerIP     = 256
)

// Node is a running Courier node.
type Node struct {
	cfg Config
	// stopBg stops the group fan-out janitor; bgDone closes when it has.
	stopBg  context.CancelFunc
	bgDone  chan struct{}
	log     *slog.Logger
	store   persistence.Store
	cluster *cluster.Cluster
	gateway *gateway.Gateway
	// media serves /v1/media/ (nil when the store keeps no media records).
	media *media.Service
	// turn serves /v1/calls/turn and runs the embedded TURN server (nil
	// with TURNOff).
	turn   *turn.Service
	http   *http.Server
	ln     net.Listener
	served chan error
	tls    bool
	// push sends pushes to offline devices (nil without a webhook).
	push       *push.Dispatcher
	deadLetter *os.File
	closed     atomic.Bool
	// tokens issues and verifies access tokens; reloadKeys serializes
	// ReloadTokenKeys.
	tokens     *gateway.Tokens
	reloadKeys sync.Mutex
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
	switch cfg.Cluster {
	case "", "local":
		cfg.Cluster = "local"
	case "consul":
		if cfg.NodeAddress == "" {
			return nil, errors.New("--cluster consul needs --node-addr (host:port peers reach this node on)")
		}
		if cfg.Store == "embedded" {
			cfg.Logger.Warn("a consul cluster on the embedded store: every node has its own data, so users and messages are not shared; use --store scylla")
		}
	default:
		return nil, fmt.Errorf("unknown cluster provider %q: use local or consul", cfg.Cluster)
	}
	if err := cfg.Registration.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger}
	var err error
	if n.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	if err := n.start(ctx); err != nil {
		n.closeQuietly()
		return nil, err
	}
	return n, nil
}

func openStore(ctx context.Context, cfg Config) (persistence.Store, error) {
	switch cfg.Store {
	case "embedded":
		dir := filepath.Join(cfg.DataDir, "store")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir %s: %w", dir, err)
		}
		s, err := embedded.Open(dir, embedded.Options{InboxTTL: cfg.InboxTTL, SyncInterval: cfg.SyncInterval, Logger: cfg.Logger})
		if err != nil {
			return nil, fmt.Errorf("open embedded store in %s: %w", dir, err)
		}
		return s, nil
	case "scylla":
		repl, err := scylla.ParseReplication(cfg.ScyllaReplication)
		if err != nil {
			return nil, fmt.Errorf("scylla replication: %w", err)
		}
		s, err := scylla.Open(ctx, scylla.Options{
			Hosts:       cfg.ScyllaHosts,
			Keyspace:    cfg.ScyllaKeyspace,
			Replication: repl,
			LocalDC:     cfg.ScyllaLocalDC,
			Username:    cfg.ScyllaUsername,
			Password:    cfg.ScyllaPassword,
			Timeout:     cfg.ScyllaTimeout,
			InboxTTL:    cfg.InboxTTL,
			Logger:      cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("open scylla store: %w", err)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unknown store %q: use embedded or scylla", cfg.Store)
	}
}

func (n *Node) start(ctx context.Context) error {
	cfg := n.cfg
	// The token keys first: a node that may not start says so before it
	// joins anything.
	keys, err := n.tokenKeySet(ctx)
	if err != nil {
		return err
	}
	if n.tokens, err = gateway.NewTokens(keys, cfg.TokenTTL, nil); err != nil {
		return err
	}
	cluster.RegisterMessages(actors.Messages()...)
	// Groups live in the same store, behind their own interface.
	groups, ok := n.store.(persistence.GroupStore)
	if !ok {
		return fmt.Errorf("store %q cannot keep groups (it does not implement persistence.GroupStore), so this node cannot host the group kind", cfg.Store)
	}
	dispatcher, err := n.pushDispatcher()
	if err != nil {
		return err
	}
	n.push = dispatcher
	deps := &actors.Deps{
		Push:   dispatcher,
		Store:  n.store,
		Groups: groups,
		Logger: cfg.Logger,
		Config: actors.UserConfig{
			SeqBlockSize:     cfg.SeqBlockSize,
			RequestTimeout:   cfg.RequestTimeout,
			PassivateAfter:   cfg.PassivateAfter,
			PresenceDebounce: cfg.PresenceDebounce,
			CallRingTimeout:  cfg.CallRingTimeout,
		},
		Group: actors.GroupConfig{FanoutBatch: cfg.FanoutBatch},
	}
	// The listener opens first (nothing is served yet) so the gateway's
	// real address can be published with this node's membership.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// The cap counts TCP connections, under TLS: a refused client costs
	// no handshake.
	if cfg.MaxConnsPerIP >= 0 {
		ln = limitPerIP(ln, cmp.Or(cfg.MaxConnsPerIP, DefaultMaxConnsPerIP), cfg.Limits.LimitLoopback, cfg.Logger)
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
	membership, err := n.membership()
	if err != nil {
		return err
	}
	system := cluster.NewActorSystem(cfg.Logger)
	cl, err := cluster.New(system, cluster.Config{
		NodeAddress:      cfg.NodeAddress,
		AdvertiseAddress: cfg.Advertise,
		Membership:       membership,
		Meta:             map[string]string{"gateway": n.URL()},
		PassivateAfter:   cfg.PassivateAfter,
		RequestTimeout:   cfg.RequestTimeout,
		RequestRetries:   cfg.RequestRetries,
		Logger:           cfg.Logger,
	}, actors.UserKind(deps), actors.GroupKind(deps))
	if err != nil {
		return fmt.Errorf("build cluster: %w", err)
	}
	deps.Cluster = cl
	if err := cl.Start(ctx); err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	n.cluster = cl
	// Group fan-outs a crash interrupted resume without waiting for traffic.
	bg, stopBg := context.WithCancel(context.Background())
	n.stopBg, n.bgDone = stopBg, make(chan struct{})
	go func() {
		defer close(n.bgDone)
		actors.ResumeFanouts(bg, cl, groups, time.Minute, cfg.Logger)
	}()

	verifier, err := n.verification(keys)
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{
		Store:            n.store,
		Groups:           groups,
		Cluster:          cl,
		Tokens:           n.tokens,
		Logger:           cfg.Logger,
		MaxFrameBytes:    cfg.MaxFrameBytes,
		SendQueue:        cfg.SendQueue,
		SendQueueBytes:   cfg.SendQueueBytes,
		QueuedBytesTotal: cfg.QueuedBytesTotal,
		IdleTimeout:      cfg.IdleTimeout,
		ParkAfter:        cfg.ParkAfter,
		RatePerSec:       cfg.RatePerSec,
		RateBurst:        cfg.RateBurst,
		RequestTimeout:   cfg.RequestTimeout,
		LeaseRenew:       leaseRenew(cfg.PassivateAfter),
		Limits:           cfg.Limits,
		RequireE2EE:      cfg.RequireE2EE,
		Verification:     verifier,

		DropDeliveryForTest: cfg.DropDeliveryForTest,
	})
	if err != nil {
		return err
	}
	n.gateway = gw
	presence := deps.Presence
	cl.SetStatsHook(func(st *clusterpb.NodeStats) {
		st.Sessions = int64(gw.Sessions())
		st.PresenceChanges, st.PresenceSent, st.PresenceCoalesced = presence.Changes.Load(), presence.Sent.Load(), presence.Coalesced.Load()
		st.EphemeralDropped = gw.DroppedEphemeral()
		st.RateLimited = gw.RateLimited()
	})
	if err := n.startMedia(gw); err != nil {
		return err
	}
	if err := n.startTURN(ctx, gw); err != nil {
		return err
	}
	handler := gw.Handler()
	if cfg.AdminToken != "" {
		ah, err := admin.Handler(cl, cfg.AdminToken, cfg.Logger)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/v1/admin/", ah)
		mux.Handle("/", handler)
		handler = mux
	}

	n.http = &http.Server{
		Handler: handler,
		// No ReadTimeout or WriteTimeout: media uploads and downloads
		// last as long as their bytes flow (media has its own idle cut).
		ReadHeaderTimeout: cmp.Or(cfg.HTTPHeaderTimeout, DefaultHTTPHeaderTimeout),
		IdleTimeout:       cmp.Or(cfg.HTTPIdleTimeout, DefaultHTTPIdleTimeout),
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	n.served = make(chan error, 1)
	go func() { n.served <- n.http.Serve(ln) }()
	n.log.Info("courier node serving", "addr", n.Addr(), "tls", n.tls, "store", cfg.Store, "data", cfg.DataDir)
	return nil
}

// startMedia mounts media on the gateway's listener when the store can
// keep its records.
func (n *Node) startMedia(gw *gateway.Gateway) error {
	records, ok := n.store.(persistence.MediaStore)
	if !ok {
		n.log.Warn("media is off: this store keeps no media records", "store", n.cfg.Store)
		return nil
	}
	mc := n.cfg.Media
	if s3 := n.cfg.MediaS3; s3.Bucket == "" && s3.Endpoint != "" {
		return errors.New("media: an S3 endpoint needs a bucket (--media-s3-bucket)")
	}
	if s3 := n.cfg.MediaS3; s3.Bucket != "" && mc.Blobs == nil {
		if s3.TempDir == "" {
			s3.TempDir = filepath.Join(n.cfg.DataDir, "media-s3-parts")
		}
		if err := os.MkdirAll(s3.TempDir, 0o700); err != nil {
			return fmt.Errorf("media: %w", err)
		}
		blobs, err := media.NewS3Store(context.Background(), s3)
		if err != nil {
			return err
		}
		mc.Blobs = blobs
	}
	if mc.Dir == "" && mc.Blobs == nil {
		mc.Dir = filepath.Join(n.cfg.DataDir, "media")
	}
	if mc.Logger == nil {
		mc.Logger = n.cfg.Logger
	}
	svc, err := media.New(mc, records, func(w http.ResponseWriter, r *http.Request) (string, bool) {
		c, ok := gw.Authenticate(w, r)
		return c.UserID, ok
	})
	if err != nil {
		return err
	}
	n.media = svc
	gw.Handle(media.Prefix, svc)
	return nil
}

// startTURN starts the TURN service and mounts its credentials endpoint
// on the gateway's listener, authenticated like the rest of the API.
func (n *Node) startTURN(ctx context.Context, gw *gateway.Gateway) error {
	if n.cfg.TURNOff {
		return nil
	}
	tc := n.cfg.TURN
	if tc.Logger == nil {
		tc.Logger = n.cfg.Logger
	}
	if len(tc.URIs) > 0 && len(tc.Secret) == 0 {
		return errors.New("turn: external TURN servers (--turn-urls) need the secret they share (--turn-secret)")
	}
	derived := len(tc.URIs) == 0 && tc.Listen == ""
	if derived {
		host, port, err := net.SplitHostPort(n.ln.Addr().String())
		if err != nil {
			return fmt.Errorf("turn: gateway address: %w", err)
		}
		if _, p, err := net.SplitHostPort(n.cfg.Listen); err == nil && p == "0" {
			port = "0"
		}
		tc.Listen = net.JoinHostPort(host, port)
	}
	if len(tc.Secret) == 0 {
		secret, err := turn.LoadOrCreateSecret(filepath.Join(n.cfg.DataDir, turn.SecretFile))
		if err != nil {
			return err
		}
		tc.Secret = secret
	}
	svc, err := turn.Start(ctx, tc)
	if derived && errors.Is(err, syscall.EADDRINUSE) {
		// The gateway's port number is taken over UDP by something else.
		// The URIs handed out name the port really bound, so clients
		// still find the server; only a firewall rule may need it.
		host, _, _ := net.SplitHostPort(tc.Listen)
		n.log.Warn("turn: the gateway's port is taken over UDP; the embedded TURN server takes another (set --turn-listen to choose)", "taken", tc.Listen, "err", err)
		tc.Listen = net.JoinHostPort(host, "0")
		svc, err = turn.Start(ctx, tc)
	}
	if err != nil {
		return err
	}
	n.turn = svc
	gw.Handle("GET "+turn.Path, svc.Handler(func(w http.ResponseWriter, r *http.Request) (string, bool) {
		c, ok := gw.Authenticate(w, r)
		return c.UserID, ok
	}))
	return nil
}

func (n *Node) pushDispatcher() (*push.Dispatcher, error) {
	cfg := n.cfg
	if cfg.PushWebhookURL == "" {
		return nil, nil
	}
	if cfg.PushWebhookSecret == "" {
		return nil, errors.New("--push-webhook-url needs --push-webhook-secret: receivers must be able to tell real pushes from forged ones")
	}
	dc := push.DispatcherConfig{
		Provider: &push.Webhook{URL: cfg.PushWebhookURL, Secret: []byte(cfg.PushWebhookSecret)},
		Attempts: cfg.PushAttempts,
		Backoff:  cfg.PushBackoff,
		Logger:   cfg.Logger,
	}
	if cfg.PushDeadLetter != "" {
		f, err := os.OpenFile(cfg.PushDeadLetter, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open push dead-letter log: %w", err)
		}
		n.deadLetter = f
		dc.DeadLetter = f
	}
	return push.NewDispatcher(dc)
}

func (n *Node) membership() (cluster.Membership, error) {
	if n.cfg.Cluster != "consul" {
		return cluster.Local(), nil
	}
	m, err := consul.New(consul.Config{
		Address: n.cfg.ConsulAddr,
		Service: n.cfg.ConsulService,
		TTL:     n.cfg.ConsulTTL,
		Token:   n.cfg.ConsulToken,
		Logger:  n.cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("consul membership: %w", err)
	}
	return m, nil
}

// leaseRenew keeps sessions renewing well inside the passivation timeout.
func leaseRenew(passivate time.Duration) time.Duration {
	if passivate <= 0 {
		return 30 * time.Second
	}
	return min(30*time.Second, passivate/3)
}

// verification is verified registration's service, or nil for open
// registration.
func (n *Node) verification(keys *gateway.TokenKeySet) (*verification.Service, error) {
	if !n.cfg.Registration.Verified() {
		return nil, nil
	}
	// Challenges are signed with a key derived from the token signing key:
	// it lives in the 0600 key file every node shares, never in the store
	// a backup copies (whoever holds the key can skip verification). A
	// rotation voids the challenges of the last --registration-code-ttl;
	// their users ask for a new code.
	m := hmac.New(sha256.New, keys.Keys()[0].Secret)
	m.Write([]byte("courier registration challenge key v1"))
	return verification.New(n.cfg.Registration, m.Sum(nil))
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

// TURN is the node's TURN service (nil with TURNOff).
func (n *Node) TURN() *turn.Service { return n.turn }

// Close shuts the node down gracefully: sessions are closed with 1001 so
// clients reconnect, grains stop, and the store is flushed and closed.
func (n *Node) Close(ctx context.Context) error {
	// A second Close (a test's cleanup after an explicit restart) finds
	// nothing left to do.
	if !n.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if n.stopBg != nil {
		n.stopBg()
		<-n.bgDone
	}
	if n.gateway != nil {
		errs = append(errs, n.gateway.Shutdown(ctx))
	}
	// Uploads in flight answer 503 and keep their bytes, so the server
	// below does not wait for a long upload to end.
	if n.media != nil {
		errs = append(errs, n.media.Close(ctx))
	}
	if n.http != nil {
		errs = append(errs, n.http.Shutdown(ctx))
	} else if n.ln != nil {
		_ = n.ln.Close() // start failed before serving
	}
	// Relayed calls break here; their clients ask another node for
	// credentials and servers.
	if n.turn != nil {
		errs = append(errs, n.turn.Close(ctx))
	}
	if n.cluster != nil {
		errs = append(errs, n.cluster.Shutdown(ctx))
	}
	if n.push != nil {
		errs = append(errs, n.push.Close(ctx))
	}
	if n.deadLetter != nil {
		errs = append(errs, n.deadLetter.Close())
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
