package scylla

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v2"
	"github.com/scylladb/gocqlx/v2/migrate"

	"github.com/courier-im/courier/persistence"
)

//go:embed migrations/*.cql
var migrationFiles embed.FS

// Migrations returns the schema migrations, for tools that apply them
// out of band.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embedded directory exists at build time
	}
	return sub
}

// Replication is a keyspace's replication strategy.
type Replication struct {
	// Factor is the SimpleStrategy replication factor; used when
	// Datacenters is empty.
	Factor int
	// Datacenters, when set, selects NetworkTopologyStrategy with this
	// many replicas per datacenter.
	Datacenters map[string]int
}

// DefaultReplication is one replica, for a single node.
var DefaultReplication = Replication{Factor: 1}

// ParseReplication reads the --scylla-replication flag: "N" is
// SimpleStrategy with N replicas, "dc1:3,dc2:3" is NetworkTopologyStrategy.
// Empty means DefaultReplication.
func ParseReplication(s string) (Replication, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return DefaultReplication, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		r := Replication{Factor: n}
		return r, r.validate()
	}
	r := Replication{Datacenters: map[string]int{}}
	for part := range strings.SplitSeq(s, ",") {
		dc, n, ok := strings.Cut(strings.TrimSpace(part), ":")
		rf, err := strconv.Atoi(n)
		if !ok || dc == "" || err != nil {
			return Replication{}, fmt.Errorf("replication %q: want N or dc:N[,dc:N...]", s)
		}
		r.Datacenters[dc] = rf
	}
	return r, r.validate()
}

func (r Replication) isZero() bool { return r.Factor == 0 && len(r.Datacenters) == 0 }

func (r Replication) validate() error {
	if len(r.Datacenters) == 0 {
		if r.Factor < 1 {
			return fmt.Errorf("replication factor %d: must be at least 1", r.Factor)
		}
		return nil
	}
	for dc, n := range r.Datacenters {
		if n < 1 || strings.ContainsAny(dc, `'"`) {
			return fmt.Errorf("replication %s:%d: want a datacenter name and at least one replica", dc, n)
		}
	}
	return nil
}

// cql renders the replication map of CREATE KEYSPACE.
func (r Replication) cql() string {
	if len(r.Datacenters) == 0 {
		return fmt.Sprintf("{'class': 'SimpleStrategy', 'replication_factor': %d}", r.Factor)
	}
	dcs := make([]string, 0, len(r.Datacenters))
	for dc := range r.Datacenters {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	var b strings.Builder
	b.WriteString("{'class': 'NetworkTopologyStrategy'")
	for _, dc := range dcs {
		fmt.Fprintf(&b, ", '%s': %d", dc, r.Datacenters[dc])
	}
	b.WriteString("}")
	return b.String()
}

// String is the flag form ParseReplication reads.
func (r Replication) String() string {
	if len(r.Datacenters) == 0 {
		return strconv.Itoa(r.Factor)
	}
	dcs := make([]string, 0, len(r.Datacenters))
	for dc, n := range r.Datacenters {
		dcs = append(dcs, fmt.Sprintf("%s:%d", dc, n))
	}
	sort.Strings(dcs)
	return strings.Join(dcs, ",")
}

// schemaTimeout bounds one schema statement: schema changes wait for the
// cluster to agree, far slower than a write.
const schemaTimeout = 20 * time.Second

// connectAndMigrate makes sure the keyspace and schema exist and returns a
// session bound to the keyspace.
func connectAndMigrate(ctx context.Context, opts Options, log *slog.Logger) (*gocql.Session, error) {
	if err := ensureKeyspace(ctx, opts, log); err != nil {
		return nil, err
	}
	if err := migrateSchema(ctx, opts, log); err != nil {
		return nil, err
	}
	cl := clusterConfig(opts, log)
	cl.Keyspace = opts.Keyspace
	sess, err := cl.CreateSession()
	if err != nil {
		return nil, connectErr(err)
	}
	return sess, nil
}

// migrateSchema applies the migrations not applied yet. A store opening on
// an up-to-date keyspace only reads the migration table: gocqlx/migrate
// would issue a CREATE TABLE IF NOT EXISTS on every open, and schema
// statements are slow and need every node up.
func migrateSchema(ctx context.Context, opts Options, log *slog.Logger) error {
	cl := clusterConfig(opts, log)
	cl.Keyspace = opts.Keyspace
	cl.NumConns = 1
	cl.Timeout, cl.WriteTimeout = schemaTimeout, schemaTimeout
	sess, err := cl.CreateSession()
	if err != nil {
		return connectErr(err)
	}
	defer sess.Close()
	files, err := fs.Glob(Migrations(), "*.cql")
	if err != nil {
		return err
	}
	applied := 0
	it := sess.Query(`SELECT name, done FROM gocqlx_migrate`).WithContext(ctx).Iter()
	var name string
	var done int
	for it.Scan(&name, &done) {
		if slices.Contains(files, name) {
			applied++
		}
	}
	if it.Close() == nil && applied == len(files) {
		return nil
	}
	log.Info("applying schema migrations", "files", len(files), "already_applied", applied)
	if err := migrate.FromFS(ctx, gocqlx.NewSession(sess), Migrations()); err != nil {
		// gocqlx/migrate flattens the driver's error into text.
		msg := strings.ToLower(err.Error())
		if strings.Contains(msg, "timeout") || strings.Contains(msg, "no response") || strings.Contains(msg, "unavailable") ||
			strings.Contains(msg, "no hosts") || strings.Contains(msg, "connection") {
			return fmt.Errorf("apply schema migrations: %w: %w", persistence.ErrUnavailable, err)
		}
		return fmt.Errorf("apply schema migrations: %w", err)
	}
	return nil
}

// ensureKeyspace creates the keyspace when it does not exist. It checks
// first because CREATE KEYSPACE IF NOT EXISTS is still a schema statement
// that needs every node up, and a restarting node should not.
func ensureKeyspace(ctx context.Context, opts Options, log *slog.Logger) error {
	cl := clusterConfig(opts, log)
	cl.NumConns = 1
	cl.Timeout, cl.WriteTimeout = schemaTimeout, schemaTimeout
	sess, err := cl.CreateSession()
	if err != nil {
		return connectErr(err)
	}
	defer sess.Close()
	var name string
	err = sess.Query(`SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?`, opts.Keyspace).
		WithContext(ctx).Scan(&name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, gocql.ErrNotFound) {
		return fmt.Errorf("look up keyspace: %w", err)
	}
	stmt := fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s AND durable_writes = true",
		opts.Keyspace, opts.Replication.cql())
	if isScylla(ctx, sess) {
		// ScyllaDB 6+ puts new keyspaces on tablets, where LWT (handles,
		// sequence leases, secrets) is not supported by every release: keep
		// this keyspace on vnodes. Older ScyllaDB does not know the option.
		err := sess.Query(stmt + " AND tablets = {'enabled': false}").WithContext(ctx).Exec()
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "tablets") {
			return wrapSchemaErr(err)
		}
		log.Info("this ScyllaDB has no tablets option; creating the keyspace without it", "err", err)
	}
	return wrapSchemaErr(sess.Query(stmt).WithContext(ctx).Exec())
}

// connectErr marks a failed session creation as unavailability unless the
// configuration itself is wrong. The driver flattens the cause into text,
// so the text is all there is to look at.
func connectErr(err error) error {
	if strings.Contains(err.Error(), "validation failed") {
		return fmt.Errorf("connect: %w", err)
	}
	return fmt.Errorf("connect: %w: %w", persistence.ErrUnavailable, err)
}

func wrapSchemaErr(err error) error {
	if err != nil {
		return fmt.Errorf("create keyspace: %w", err)
	}
	return nil
}

// isScylla tells ScyllaDB from Cassandra by a table only ScyllaDB has.
func isScylla(ctx context.Context, sess *gocql.Session) bool {
	var v string
	err := sess.Query(`SELECT version FROM system.versions LIMIT 1`).WithContext(ctx).Scan(&v)
	return err == nil || errors.Is(err, gocql.ErrNotFound)
}

// DropKeyspace drops a keyspace and everything in it. Tests use it to clean
// up the keyspace they created.
func DropKeyspace(ctx context.Context, hosts []string, keyspace string) error {
	if !validIdentifier(keyspace) {
		return fmt.Errorf("scylla: drop keyspace %q: invalid name", keyspace)
	}
	opts, err := Options{Hosts: hosts, Keyspace: keyspace}.withDefaults()
	if err != nil {
		return err
	}
	opts.Logger = slog.New(slog.DiscardHandler)
	cl := clusterConfig(opts, opts.Logger)
	cl.NumConns = 1
	cl.Timeout, cl.WriteTimeout = schemaTimeout, schemaTimeout
	sess, err := cl.CreateSession()
	if err != nil {
		return fmt.Errorf("scylla: drop keyspace %q: %w", keyspace, err)
	}
	defer sess.Close()
	if err := sess.Query("DROP KEYSPACE IF EXISTS " + keyspace).WithContext(ctx).Exec(); err != nil {
		return fmt.Errorf("scylla: drop keyspace %q: %w", keyspace, err)
	}
	return nil
}
