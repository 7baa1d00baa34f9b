// Package scyllatest gives tests a CQL database: the hosts in
// COURIER_TEST_SCYLLA_HOSTS (which `make test` sets after starting a
// Cassandra node with scripts/cassandra.sh), and a fresh keyspace per test
// that is dropped when the test ends.
//
// Without COURIER_TEST_SCYLLA_HOSTS a test that needs the database is
// skipped with a note on how to run it, except in CI (CI=true), where it
// fails: CI must never pass by not testing the store.
package scyllatest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence/scylla"
)

// HostsEnv names the variable that lists the test database's hosts.
const HostsEnv = "COURIER_TEST_SCYLLA_HOSTS"

// ControlEnv names the variable scripts/test.sh sets to the run directory
// of the Cassandra node it started, for tests that stop and restart it.
const ControlEnv = "COURIER_CASSANDRA_DIR"

// Hosts returns the test database's contact points, or skips (fails in CI)
// the test when none is configured.
func Hosts(t testing.TB) []string {
	t.Helper()
	v := strings.TrimSpace(os.Getenv(HostsEnv))
	if v == "" {
		msg := HostsEnv + " is not set: this test needs a CQL database. Run `make test` " +
			"(it starts Cassandra with scripts/cassandra.sh), or point " + HostsEnv + " at a ScyllaDB/Cassandra node (host:port)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var hosts []string
	for h := range strings.SplitSeq(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// Keyspace returns a new keyspace name for t and drops that keyspace when
// t ends (after the cleanups registered later, such as closing stores).
// The keyspace itself is created by the first scylla.Open on it.
func Keyspace(t testing.TB, hosts []string) string {
	t.Helper()
	ks := fmt.Sprintf("courier_test_%08x", rand.Uint32())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := scylla.DropKeyspace(ctx, hosts, ks); err != nil {
			t.Logf("drop test keyspace %s: %v", ks, err)
		}
	})
	return ks
}

// Options returns store options on a fresh keyspace for t.
func Options(t testing.TB) scylla.Options {
	t.Helper()
	hosts := Hosts(t)
	return scylla.Options{Hosts: hosts, Keyspace: Keyspace(t, hosts)}
}
