// Package scylla implements persistence.Store on ScyllaDB or Apache
// Cassandra, through gocqlx over the ScyllaDB fork of gocql.
//
// Schema. Versioned CQL files in migrations/ are applied by gocqlx/migrate
// when a store opens, into a keyspace the store creates if it is missing
// (SimpleStrategy with one replica by default; NetworkTopologyStrategy by
// Options.Replication). Partitions follow the access paths: one inbox
// partition per (user, device) clustered by inbox_seq, which also holds the
// dedupe markers of the messages appended to it (marker.go), one dedupe
// partition per (recipient, sender) for records stored without entries,
// small per-user and per-name tables for the rest. Inbox entries and
// dedupe records carry the inbox TTL.
//
// Consistency. Reads and writes use LOCAL_QUORUM (ONE with one replica);
// lightweight transactions (Paxos, LOCAL_SERIAL) are used only where
// uniqueness needs them: claiming a handle, leasing a sequence block,
// storing a secret once. Everything else is a plain idempotent write with a
// fixed primary key, so a driver retry rewrites the same cells.
//
// Portability. The store runs unchanged on ScyllaDB and Cassandra: no
// Scylla-only CQL (USING TIMEOUT, BYPASS CACHE), paging always follows the
// page state (a short page is not the last page), a successful
// compare-and-set is never asked for its pre-image (Cassandra answers only
// [applied]), and unlogged batches stay well under the 50 KiB batch limit.
//
// Availability. Driver errors that mean "the database did not answer"
// (no connection, timeouts, unavailable replicas, overload) are returned
// wrapping persistence.ErrUnavailable: the caller did not get an ack and may
// retry. The driver reconnects by itself; nothing has to be restarted when
// the database returns.
package scylla

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v2"

	"github.com/courier-im/courier/persistence"
)

// Options configures Open. Hosts is required; everything else has a default.
type Options struct {
	// Hosts are contact points, "host" or "host:port" (port 9042 by default).
	Hosts []string
	// Keyspace holds Courier's tables; created when missing. Default "courier".
	Keyspace string
	// Replication is used when the keyspace is created (an existing
	// keyspace is left as it is). Default SimpleStrategy, one replica.
	Replication Replication
	// LocalDC routes requests to this datacenter's nodes first; with
	// NetworkTopologyStrategy set it to the datacenter this node runs in.
	LocalDC string
	// Username and Password, when set, authenticate with
	// PasswordAuthenticator.
	Username, Password string
	// Timeout bounds one request attempt to the database. Default 3s, under
	// the grains' 5s store timeout so a stalled database surfaces as an
	// error the sender can retry rather than as a grain timeout.
	Timeout time.Duration
	// ConnectTimeout bounds dialing one connection. Default 3s.
	ConnectTimeout time.Duration
	// OpenTimeout is how long Open keeps trying to reach the database
	// before it gives up. Default 30s.
	OpenTimeout time.Duration
	// InboxTTL is how long inbox entries and dedupe records live. Default
	// persistence.DefaultInboxTTL. CQL TTLs have second granularity; a
	// fraction of a second is rounded up.
	InboxTTL time.Duration
	// AppendMode selects how Append sends a group commit. Default
	// AppendCoalesced (the fastest measured on this code; see README).
	AppendMode AppendMode
	// Logger receives the store's and the driver's logs. Default
	// slog.Default().
	Logger *slog.Logger
}

// AppendMode is how one Append (one grain's group commit) is sent.
type AppendMode int

const (
	// AppendCoalesced puts the group commits (and the acks' range deletes)
	// of many grains into shared unlogged batches: see coalescer.
	AppendCoalesced AppendMode = iota
	// AppendBatched sends one unlogged batch per partition (a device inbox,
	// a conversation's dedupe records), the batches concurrently.
	AppendBatched
	// AppendConcurrent sends every row as its own INSERT, concurrently.
	AppendConcurrent
)

func (m AppendMode) String() string {
	switch m {
	case AppendCoalesced:
		return "coalesced"
	case AppendBatched:
		return "batched"
	case AppendConcurrent:
		return "concurrent"
	}
	return fmt.Sprintf("AppendMode(%d)", int(m))
}

const (
	defaultKeyspace    = "courier"
	defaultTimeout     = 3 * time.Second
	defaultOpenTimeout = 30 * time.Second
	// pageSize is the CQL page size for reads that may return many rows.
	pageSize = 1000
	// maxBatchBytes keeps every unlogged batch far below the 50 KiB that
	// both ScyllaDB and Cassandra refuse by default (batch_size_fail_threshold).
	maxBatchBytes = 32 << 10
	// maxBatchRows bounds the statements in one batch.
	maxBatchRows = 100
	// maxConcurrentWrites bounds the requests one Append has in flight.
	maxConcurrentWrites = 64
)

// Store is a persistence.Store on a CQL database. It is safe for concurrent
// use; Close releases its connections.
type Store struct {
	sess     gocqlx.Session
	keyspace string
	ttlSec   int
	mode     AppendMode
	coal     *coalescer // AppendCoalesced
	log      *slog.Logger
	stmts    statements

	// mu is held shared by every operation and exclusively by Close, so
	// Close waits for calls in flight instead of pulling the session from
	// under them, and later calls fail with ErrClosed.
	mu     sync.RWMutex
	closed bool
}

var _ persistence.Store = (*Store)(nil)

// Open connects, creates the keyspace if needed and applies pending schema
// migrations. It retries reaching the database for up to
// Options.OpenTimeout (or until ctx ends), so a node and its database may
// start together.
func Open(ctx context.Context, opts Options) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("scylla: %w", err)
	}
	log := opts.Logger.With("component", "scylla-store", "keyspace", opts.Keyspace)
	octx, cancel := context.WithTimeout(ctx, opts.OpenTimeout)
	defer cancel()

	var sess *gocql.Session
	for attempt := 1; ; attempt++ {
		sess, err = connectAndMigrate(octx, opts, log)
		if err == nil {
			break
		}
		if !isUnavailable(err) || octx.Err() != nil {
			return nil, fmt.Errorf("scylla: open keyspace %q on %v: %w", opts.Keyspace, opts.Hosts, classify(err))
		}
		log.Warn("database not reachable yet, retrying", "attempt", attempt, "err", err)
		select {
		case <-octx.Done():
			return nil, fmt.Errorf("scylla: open keyspace %q on %v: %w", opts.Keyspace, opts.Hosts, classify(err))
		case <-time.After(time.Second):
		}
	}
	s := &Store{
		sess:     gocqlx.NewSession(sess),
		keyspace: opts.Keyspace,
		ttlSec:   ttlSeconds(opts.InboxTTL),
		mode:     opts.AppendMode,
		log:      log,
		stmts:    buildStatements(ttlSeconds(opts.InboxTTL)),
	}
	if s.mode == AppendCoalesced {
		// A shared batch outlives any one caller's context: it gets the
		// time the driver needs for its attempts (3 with the retry policy).
		s.coal = newCoalescer(s.execBatch, 3*opts.Timeout+time.Second)
	}
	if err := s.foldLegacyHandles(octx); err != nil {
		_ = s.Close()
		return nil, err
	}
	log.Info("scylla store open", "hosts", opts.Hosts, "append_mode", s.mode.String(), "inbox_ttl", opts.InboxTTL)
	return s, nil
}

func (o Options) withDefaults() (Options, error) {
	if len(o.Hosts) == 0 {
		return o, errors.New("no hosts given")
	}
	if o.Keyspace == "" {
		o.Keyspace = defaultKeyspace
	}
	if !validIdentifier(o.Keyspace) {
		return o, fmt.Errorf("keyspace %q: use letters, digits and _ (up to 48, starting with a letter)", o.Keyspace)
	}
	if o.Replication.isZero() {
		o.Replication = DefaultReplication
	}
	if err := o.Replication.validate(); err != nil {
		return o, err
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = defaultTimeout
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = defaultOpenTimeout
	}
	if o.InboxTTL <= 0 {
		o.InboxTTL = persistence.DefaultInboxTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// ttlSeconds rounds up: a TTL must never end before the one asked for.
func ttlSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

func validIdentifier(s string) bool {
	if len(s) == 0 || len(s) > 48 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case (r >= '0' && r <= '9' || r == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// clusterConfig is the driver configuration shared by the schema session
// and the store's session.
func clusterConfig(opts Options, log *slog.Logger) *gocql.ClusterConfig {
	cl := gocql.NewCluster(opts.Hosts...)
	// Nodes the driver discovers (the contact point itself included, from
	// system.local) are dialed on cl.Port, not on the port a contact point
	// was given with: take that port, so a node on a non-default port is
	// not mistaken for whatever listens on 9042. All nodes of a cluster
	// share one native port.
	for _, h := range opts.Hosts {
		if _, p, err := net.SplitHostPort(h); err == nil {
			if port, err := strconv.Atoi(p); err == nil {
				cl.Port = port
				break
			}
		}
	}
	cl.Consistency = gocql.LocalQuorum
	cl.SerialConsistency = gocql.LocalSerial
	cl.Timeout = opts.Timeout
	cl.WriteTimeout = opts.Timeout
	cl.ConnectTimeout = opts.ConnectTimeout
	cl.MetadataSchemaRequestTimeout = 30 * time.Second
	cl.MaxWaitSchemaAgreement = 60 * time.Second
	// Reconnect by ourselves, quickly: the default probes a down host once a
	// minute, which would keep a node failing sends for up to a minute after
	// the database came back.
	cl.ReconnectInterval = time.Second
	cl.ReconnectionPolicy = &gocql.ExponentialReconnectionPolicy{MaxRetries: 8, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second}
	// Retry only statements marked idempotent (all plain writes and reads
	// here), a little, with backoff; anything longer is the caller's call.
	cl.RetryPolicy = &gocql.ExponentialBackoffRetryPolicy{NumRetries: 2, Min: 50 * time.Millisecond, Max: 400 * time.Millisecond}
	cl.DefaultIdempotence = false
	cl.NumConns = 2
	if opts.LocalDC != "" {
		cl.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.DCAwareRoundRobinPolicy(opts.LocalDC))
	} else {
		cl.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.RoundRobinHostPolicy())
	}
	if opts.Username != "" {
		cl.Authenticator = gocql.PasswordAuthenticator{Username: opts.Username, Password: opts.Password}
	}
	cl.Logger = driverLogger{log: log.With("component", "gocql")}
	return cl
}

// enter admits one operation; release must be called when it is done with
// the session.
func (s *Store) enter(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, persistence.ErrClosed
	}
	return s.mu.RUnlock, nil
}

// Close waits for calls in flight and closes the session. Calls after Close,
// a second Close included, fail with persistence.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("scylla: close: %w", persistence.ErrClosed)
	}
	s.closed = true
	if s.coal != nil {
		s.coal.wait() // batches of callers that gave up waiting
	}
	s.sess.Close()
	return nil
}

// Keyspace is the keyspace the store uses.
func (s *Store) Keyspace() string { return s.keyspace }

// driverLogger forwards gocql's printf-style logs. They are connection
// chatter (dial failures, reconnects) that repeats every second while the
// database is down, so they go to debug; the errors callers see carry the
// same information once per failed call.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) { l.log.Debug(fmt.Sprint(v...)) }
func (l driverLogger) Printf(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}
func (l driverLogger) Println(v ...any) { l.log.Debug(fmt.Sprint(v...)) }
