// Package storematrix runs an end-to-end test once per store
// implementation, as subtests "embedded" and "scylla", so the foundation's
// messaging tests hold for both stores without being copied.
//
//	func TestSomething(t *testing.T) {
//		storematrix.Run(t, func(t *testing.T, store storematrix.Store) {
//			n := startNode(t, store.Configure)
//			...
//		})
//	}
//
// The scylla subtest gets a keyspace of its own, dropped when it ends. It
// needs COURIER_TEST_SCYLLA_HOSTS (set by `make test`); without it the
// subtest is skipped, or fails in CI (see package scyllatest).
package storematrix

import (
	"os"
	"strings"
	"testing"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
)

// Store is the store one subtest runs against.
type Store struct {
	// Name is "embedded" or "scylla".
	Name string
	// Hosts and Keyspace locate the scylla store; empty for embedded.
	Hosts    []string
	Keyspace string
	// TokenKeys is the token key file every node of a scylla subtest
	// shares, as a cluster's nodes do (they make none of their own);
	// empty for embedded, whose nodes make one in their data directory.
	TokenKeys string
}

// Names of the stores, in the order Run runs them.
var Names = []string{"embedded", "scylla"}

// Run runs test as one subtest per store.
func Run(t *testing.T, test func(t *testing.T, store Store)) {
	t.Helper()
	for _, name := range Names {
		t.Run(name, func(t *testing.T) {
			store := Store{Name: name}
			if name == "scylla" {
				store.Hosts = scyllatest.Hosts(t)
				store.Keyspace = scyllatest.Keyspace(t, store.Hosts)
				store.TokenKeys = nodetest.TokenKeysFile(t)
			}
			test(t, store)
		})
	}
}

// Configure points cfg at the store. The embedded store keeps using
// cfg.DataDir, which the caller sets as before.
func (s Store) Configure(cfg *node.Config) {
	if s.Name != "scylla" {
		return
	}
	cfg.Store = "scylla"
	cfg.ScyllaHosts = s.Hosts
	cfg.ScyllaKeyspace = s.Keyspace
	if cfg.TokenKeysFile == "" && cfg.TokenKey == "" {
		cfg.TokenKeysFile = s.TokenKeys
	}
}

// Apply returns a copy of cfg pointed at the store.
func (s Store) Apply(cfg node.Config) node.Config {
	s.Configure(&cfg)
	return cfg
}

// Environment variables that carry the store to a child process (a server
// a test runs as a separate process, to kill it).
const (
	envStore    = "COURIER_TEST_MATRIX_STORE"
	envHosts    = "COURIER_TEST_MATRIX_SCYLLA_HOSTS"
	envKeyspace = "COURIER_TEST_MATRIX_SCYLLA_KEYSPACE"
	envKeys     = "COURIER_TEST_MATRIX_TOKEN_KEYS"
)

// Setenv sets the store in this process's environment for the rest of t, so
// child processes started with os.Environ() use it (see FromEnv).
func (s Store) Setenv(t *testing.T) {
	t.Setenv(envStore, s.Name)
	t.Setenv(envHosts, strings.Join(s.Hosts, ","))
	t.Setenv(envKeyspace, s.Keyspace)
	t.Setenv(envKeys, s.TokenKeys)
}

// FromEnv points cfg at the store a parent test passed with Setenv; it
// leaves cfg alone when none was passed.
func FromEnv(cfg *node.Config) {
	if os.Getenv(envStore) != "scylla" {
		return
	}
	Store{
		Name:      "scylla",
		Hosts:     strings.Split(os.Getenv(envHosts), ","),
		Keyspace:  os.Getenv(envKeyspace),
		TokenKeys: os.Getenv(envKeys),
	}.Configure(cfg)
}
