package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/turn"
	"github.com/courier-im/courier/verification"
)

func newServeCmd() *cobra.Command {
	var cfg node.Config
	var logLevel string
	var memoryLimitMiB int64
	var shutdownTimeout time.Duration
	var debugAddr string
	var turnListen, turnSecret string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a Courier node (embedded store, single node by default)",
		Long: `Run a Courier node. Every flag can also be set as an environment variable:
COURIER_ plus the flag name in upper case with - as _ (e.g. COURIER_LISTEN).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := flagsFromEnv(cmd.Flags()); err != nil {
				return err
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			applyMemoryLimit(cfg.Logger, memoryLimitMiB)
			if turnListen == "off" {
				cfg.TURNOff = true
			} else {
				cfg.TURN.Listen = turnListen
			}
			cfg.TURN.Secret = []byte(turnSecret)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// SIGHUP reloads the token key file (from before the start on:
			// its default would end the process).
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			go func() {
				for range hup {
					if err := n.ReloadTokenKeys(); err != nil {
						cfg.Logger.Error("SIGHUP: token keys not reloaded", "err", err)
					}
				}
			}()
			if debugAddr != "" {
				stopDebug, err := serveDebug(debugAddr, cmp.Or(cfg.HTTPIdleTimeout, node.DefaultHTTPIdleTimeout),
					cmp.Or(cfg.HTTPHeaderTimeout, node.DefaultHTTPHeaderTimeout), cfg.Logger)
				if err != nil {
					return err
				}
				defer stopDebug()
			}
			<-ctx.Done()
			cfg.Logger.Info("shutting down: draining sessions and flushing the store")
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := n.Close(sctx); err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			cfg.Logger.Info("stopped cleanly")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "HTTP/WebSocket listen address")
	f.StringVar(&cfg.DataDir, "data", "data", "data directory of the embedded store")
	f.StringVar(&cfg.Store, "store", "embedded", "store: embedded or scylla (ScyllaDB/Cassandra)")
	f.StringSliceVar(&cfg.ScyllaHosts, "scylla-hosts", []string{"127.0.0.1:9042"}, "CQL contact points host[:port],... of the scylla store")
	f.StringVar(&cfg.ScyllaKeyspace, "scylla-keyspace", "courier", "keyspace of the scylla store (created when missing)")
	f.StringVar(&cfg.ScyllaReplication, "scylla-replication", "1", `replication of a keyspace the node creates: "N" (SimpleStrategy) or "dc1:3,dc2:3" (NetworkTopologyStrategy)`)
	f.StringVar(&cfg.ScyllaLocalDC, "scylla-local-dc", "", "datacenter whose nodes this node prefers")
	f.StringVar(&cfg.ScyllaUsername, "scylla-username", "", "database user (PasswordAuthenticator)")
	f.StringVar(&cfg.ScyllaPassword, "scylla-password", "", "database password (prefer COURIER_SCYLLA_PASSWORD)")
	f.DurationVar(&cfg.ScyllaTimeout, "scylla-timeout", 3*time.Second, "timeout of one database request")
	f.DurationVar(&cfg.InboxTTL, "inbox-ttl", 30*24*time.Hour, "how long undelivered inbox entries are kept")
	f.DurationVar(&cfg.SyncInterval, "sync-interval", time.Millisecond, "embedded store: least time between two fsyncs of its log; commits meanwhile share the next (negative: fsync each at once)")
	f.DurationVar(&cfg.PassivateAfter, "passivate-after", 5*time.Minute, "idle time after which a grain leaves memory")
	f.DurationVar(&cfg.RequestTimeout, "request-timeout", 5*time.Second, "timeout of one grain request attempt")
	f.IntVar(&cfg.SendQueue, "send-queue", 1024, "frames queued for a slow client before it is disconnected")
	f.IntVar(&cfg.SendQueueBytes, "send-queue-bytes", 4<<20, "bytes (estimated) queued for a slow client before it is disconnected")
	f.Int64Var(&cfg.QueuedBytesTotal, "queued-bytes-total", 256<<20, "bytes queued for all clients together; past it the clients holding the most are disconnected first (negative: no bound)")
	f.Uint64Var(&cfg.SeqBlockSize, "seq-block", 1000, "inbox sequence numbers leased per store write")
	f.IntVar(&cfg.FanoutBatch, "fanout-batch", 64, "group entries per fan-out request to one member")
	f.IntVar(&cfg.MaxFrameBytes, "max-frame", 256<<10, "largest client frame in bytes")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", 60*time.Second, "close sockets silent for this long")
	f.DurationVar(&cfg.ParkAfter, "park-after", time.Second, "a socket silent this long gives up its reader goroutine and read buffer until it speaks (Linux; negative: never)")
	f.Float64Var(&cfg.RatePerSec, "rate", 2000, "frames per second one socket may send")
	f.IntVar(&cfg.RateBurst, "rate-burst", 4000, "burst of frames one socket may send")
	f.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", node.DefaultHTTPIdleTimeout, "close a keep-alive HTTP connection silent this long between requests (not a WebSocket: see --idle-timeout)")
	f.DurationVar(&cfg.HTTPHeaderTimeout, "http-header-timeout", node.DefaultHTTPHeaderTimeout, "longest time to read a request's headers (and a TLS handshake)")
	f.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", node.DefaultMaxConnsPerIP, "connections one client address (IPv6: /64) may hold open; more are closed unread (negative: no cap)")
	cfg.Limits = gateway.Limits{}.WithDefaults()
	f.Var(&cfg.Limits.RegisterPerIP, "register-limit-ip", `POST /v1/register per client address: N/duration, or "off"`)
	f.Var(&cfg.Limits.RegisterPerHandle, "register-limit-handle", `POST /v1/register per handle (case and look-alikes folded): N/duration, or "off"`)
	f.Var(&cfg.Limits.TokenPerIP, "token-limit-ip", `POST /v1/token per client address: N/duration, or "off"`)
	f.Var(&cfg.Limits.TokenPerAccount, "token-limit-account", `POST /v1/token per user: N/duration, or "off"`)
	f.Var(&cfg.Limits.BundlesPerRequester, "bundle-limit-requester", `GET /v1/keys/{user} per requesting user, all targets: N/duration, or "off"`)
	f.Var(&cfg.Limits.BundlesPerPair, "bundle-limit-pair", `GET /v1/keys/{user} per requesting user and target: N/duration, or "off"`)
	f.DurationVar(&cfg.Limits.RefusalDelay, "refusal-delay", 250*time.Millisecond, "hold each 429 answer this long (at most its Retry-After) so a client looping on refusals slows down with it (0: answer at once)")
	f.Var(&cfg.Limits.FramesPerIP, "frame-limit-ip", `WebSocket frames of all connections of one client address together, on top of each connection's --rate: N/duration, or "off"`)
	f.Var(&cfg.Limits.BytesPerIP, "frame-bytes-limit-ip", `bytes of WebSocket frames of all connections of one client address together: N/duration (e.g. 32MiB/4s), or "off"`)
	for _, a := range gateway.Actions() {
		f.Var(&cfg.Limits.Actions[a].PerUser, gateway.ActionFlagName(a, false), a.Noun()+` per user (its devices on this node together): N/duration, or "off"`)
		f.Var(&cfg.Limits.Actions[a].PerIP, gateway.ActionFlagName(a, true), a.Noun()+` per client address: N/duration, or "off"`)
	}
	f.BoolVar(&cfg.RequireE2EE, "require-e2ee", false, "refuse sends that are not Signal messages (1:1: per-device Signal messages; groups: a sender-key message), so no client can put plaintext through this server")
	f.BoolVar(&cfg.Limits.LimitLoopback, "limit-loopback", false, "apply the per-address limits (--max-conns-per-ip, --*-limit-ip) to loopback peers too; off: a local TLS proxy or bench is many clients behind 127.0.0.1")
	f.Var(&cfg.Limits.BundlesPerTarget, "bundle-limit-target", `one-time prekeys of one user handed to others; beyond, bundles carry the signed prekey only: N/duration, or "off"`)
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM); with --tls-key serves https/wss")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key (PEM)")
	f.StringVar(&cfg.TokenKeysFile, "token-keys", "", "file of the access tokens' signing keys, mode 0600 (default <data>/token-keys; a node alone creates it; cluster nodes need one made by: courier token-keys new); SIGHUP reloads it")
	f.StringVar(&cfg.TokenKey, "token-key", "", "one hex HMAC key for access tokens instead of --token-keys (cannot be rotated; prefer COURIER_TOKEN_KEY)")
	f.DurationVar(&cfg.TokenTTL, "token-ttl", 15*time.Minute, "access token lifetime")
	f.StringVar(&cfg.NodeAddress, "node-addr", "", "Proto.Actor remote address host:port (empty: single node, no remote)")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port peers dial to reach this node, when --node-addr binds another address")
	f.StringVar(&cfg.Cluster, "cluster", "local", "membership: local (this node alone) or consul (needs --node-addr and a shared store)")
	f.StringVar(&cfg.ConsulAddr, "consul-addr", "127.0.0.1:8500", "Consul agent HTTP address")
	f.StringVar(&cfg.ConsulService, "consul-service", "courier", "Consul service name the nodes of one cluster share")
	f.DurationVar(&cfg.ConsulTTL, "consul-ttl", 10*time.Second, "a node silent this long leaves the member list (heartbeats every TTL/3)")
	f.StringVar(&cfg.ConsulToken, "consul-token", "", "Consul ACL token (prefer COURIER_CONSUL_TOKEN)")
	f.IntVar(&cfg.RequestRetries, "request-retries", 3, "retries of a grain request that failed retryably (timeout, node change)")
	f.DurationVar(&cfg.PresenceDebounce, "presence-debounce", 2*time.Second, "least time between two presence updates of one user to its subscribers")
	f.DurationVar(&cfg.CallRingTimeout, "call-ring-timeout", 45*time.Second, "how long an unanswered call rings before it ends as missed")
	f.StringVar(&cfg.PushWebhookURL, "push-webhook-url", "", "POST a content-free, HMAC-signed push here for offline devices with a push token")
	f.StringVar(&cfg.PushWebhookSecret, "push-webhook-secret", "", "HMAC-SHA256 key of push webhook signatures (prefer COURIER_PUSH_WEBHOOK_SECRET)")
	f.IntVar(&cfg.PushAttempts, "push-attempts", 5, "attempts per push before it goes to the dead-letter log")
	f.DurationVar(&cfg.PushBackoff, "push-backoff", time.Second, "wait before the first retry of a failed push (doubles per attempt, at most 1m)")
	f.StringVar(&cfg.PushDeadLetter, "push-dead-letter", "", "append pushes given up on to this file, one JSON line each")
	f.StringVar(&cfg.Registration.Mode, "registration", verification.ModeOpen, "open (any free handle) or verified (a code sent to a phone number or e-mail address through --registration-webhook-url)")
	f.StringVar(&cfg.Registration.WebhookURL, "registration-webhook-url", "", "with --registration verified: POST each code here, HMAC-signed, for delivery by SMS or mail")
	f.StringVar(&cfg.Registration.WebhookSecret, "registration-webhook-secret", "", "HMAC-SHA256 key of registration webhook signatures (prefer COURIER_REGISTRATION_WEBHOOK_SECRET)")
	f.DurationVar(&cfg.Registration.CodeTTL, "registration-code-ttl", 10*time.Minute, "how long a registration code is valid")
	f.Var(&cfg.Limits.CodePerIP, "register-code-limit-ip", `POST /v1/register/code per client address: N/duration, or "off"`)
	f.Var(&cfg.Limits.CodePerHandle, "register-code-limit-handle", `POST /v1/register/code per handle: N/duration, or "off"`)
	f.Var(&cfg.Limits.CodePerAddress, "register-code-limit-address", `POST /v1/register/code per phone number or e-mail address: N/duration, or "off"`)
	f.Int64Var(&cfg.Media.MaxSize, "max-media", media.DefaultMaxSize, "largest media upload in bytes (larger: 413 before a byte is stored)")
	f.Int64Var(&cfg.Media.DailyQuota, "media-quota", media.DefaultDailyQuota, "bytes of media one user may upload per UTC day (over it: 429 until midnight UTC; negative: no quota)")
	f.DurationVar(&cfg.Media.TTL, "media-ttl", media.DefaultTTL, "a media blob is deleted this long after its last upload or re-reference, an unfinished upload this long after its creation")
	f.DurationVar(&cfg.Media.IdleTimeout, "media-idle-timeout", media.DefaultIdleTimeout, "cut off a media upload whose body sends nothing for this long (the bytes so far are kept for resume)")
	f.StringVar(&cfg.Media.Dir, "media-dir", "", "directory of media uploads and blobs (default <data>/media)")
	f.StringVar(&cfg.MediaS3.Bucket, "media-s3-bucket", "", "keep media uploads and blobs in this S3 bucket instead of --media-dir (all nodes of a cluster name the same one; it must exist)")
	f.StringVar(&cfg.MediaS3.Endpoint, "media-s3-endpoint", "", "URL of the S3-compatible server, e.g. http://127.0.0.1:9000 (empty: AWS S3)")
	f.StringVar(&cfg.MediaS3.Region, "media-s3-region", "us-east-1", "region of the media S3 bucket")
	f.StringVar(&cfg.MediaS3.AccessKey, "media-s3-access-key", "", "S3 access key (empty, with no secret key: the AWS SDK's default credentials)")
	f.StringVar(&cfg.MediaS3.SecretKey, "media-s3-secret-key", "", "S3 secret key (prefer COURIER_MEDIA_S3_SECRET_KEY)")
	f.BoolVar(&cfg.MediaS3.PathStyle, "media-s3-path-style", true, "address the bucket as <endpoint>/<bucket>/<key>, as MinIO and most non-AWS servers need (false: <bucket>.<host>)")
	f.StringVar(&turnListen, "turn-listen", "", `UDP address of the embedded TURN server for calls (default: the gateway's host and port number, over UDP); "off": no TURN, no /v1/calls/turn`)
	f.StringVar(&cfg.TURN.RelayIP, "turn-relay-ip", "", "address clients and peers reach the embedded TURN server's relays on (default: the --turn-listen host, or this machine's first global IPv4)")
	f.StringSliceVar(&cfg.TURN.URIs, "turn-urls", nil, "external TURN servers (turn:host:port?transport=udp,...) sharing --turn-secret, e.g. coturn with use-auth-secret; then no embedded server runs")
	f.StringVar(&turnSecret, "turn-secret", "", "shared secret of TURN credentials (prefer COURIER_TURN_SECRET; default: generated once into <data>/turn-secret)")
	f.DurationVar(&cfg.TURN.TTL, "turn-ttl", turn.DefaultTTL, "lifetime of TURN credentials, and so the longest a relayed call can last")
	f.StringVar(&cfg.AdminToken, "admin-token", "", "enable the admin API /v1/admin/… behind this bearer token (prefer COURIER_ADMIN_TOKEN)")
	f.Int64Var(&memoryLimitMiB, "memory-limit-mib", 1024, "soft limit of the Go heap in MiB: the collector works harder as it nears it, so a flood's garbage does not grow the process (0: none; GOMEMLIMIT, when set, wins). Raise it for nodes holding many connections")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&debugAddr, "debug-addr", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); off by default")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take")
	return cmd
}

// flagsFromEnv sets every flag not given on the command line from its
// COURIER_* variable.
func flagsFromEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		name := "COURIER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%s: %w", name, strconv.Quote(v), e)
			}
		}
	})
	return err
}

// applyMemoryLimit sets the runtime's soft memory limit. Under a flood of
// large frames most of the heap is garbage the collector has not yet
// reclaimed; by default it lets the heap reach twice what is live before
// collecting, which is how 250 MiB in use became 1 GiB of RSS.
func applyMemoryLimit(log *slog.Logger, mib int64) {
	if os.Getenv("GOMEMLIMIT") != "" || mib <= 0 {
		return
	}
	debug.SetMemoryLimit(mib << 20)
	log.Debug("soft memory limit", "mib", mib)
}
