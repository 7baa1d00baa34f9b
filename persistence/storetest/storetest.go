// Package storetest is the conformance suite for persistence.Store. Every
// implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, opts storetest.Options) (persistence.Store, storetest.Reopen) {
//			...
//		})
//	}
//
// The suite only uses the persistence.Store contract, so it holds a store
// that expires records server-side with second granularity (ScyllaDB) to the
// same behaviour as the embedded one: TTL checks sleep in real time instead
// of faking a clock.
//
// Subtests run in parallel and every identifier they write (user ids,
// handles, counters, secret names) carries a random per-store prefix, so a
// factory may hand out stores that share one backing database.
package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
)

// Options configures the store a Factory builds.
type Options struct {
	// InboxTTL is the inbox TTL of the store; zero means the
	// implementation's default (persistence.DefaultInboxTTL).
	InboxTTL time.Duration
}

// Reopen returns a new store on the data of the store the Factory returned,
// after the suite has closed that store. It must not close anything itself.
type Reopen func(t *testing.T) persistence.Store

// Factory returns a fresh, open store, and a Reopen for it or nil when the
// implementation cannot reopen (the reopen checks are then skipped). The
// factory and Reopen must release what they create with t.Cleanup, and that
// cleanup must tolerate a store the suite already closed.
type Factory func(t *testing.T, opts Options) (persistence.Store, Reopen)

// opTimeout bounds every call the suite makes, so a hung store fails the
// test instead of the whole test binary's timeout.
const opTimeout = 30 * time.Second

// Run runs the whole conformance suite against stores built by factory.
func Run(t *testing.T, factory Factory) {
	groups := []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"Users", testUsers},
		{"Devices", testDevices},
		{"Inbox", testInbox},
		{"DeleteRange", testDeleteRange},
		{"LargeInbox", testLargeInbox},
		{"DeleteInbox", testDeleteInbox},
		{"Dedupe", testDedupe},
		{"DedupeOutlivesItsEntries", testDedupeOutlivesItsEntries},
		{"LeaseBlock", testLeaseBlock},
		{"Secrets", testSecrets},
		{"Profiles", testProfiles},
		{"Keys", testKeys},
		{"TTL", testTTL},
		{"Reopen", testReopen},
		{"Closed", testClosed},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			g.run(t, factory)
		})
	}
}

// fixture is one store under test plus a namer for its identifiers.
type fixture struct {
	s      persistence.Store
	reopen Reopen
	prefix string
}

func newFixture(t *testing.T, factory Factory, opts Options) *fixture {
	t.Helper()
	s, reopen := factory(t, opts)
	if s == nil {
		t.Fatal("factory returned a nil store")
	}
	return &fixture{s: s, reopen: reopen, prefix: fmt.Sprintf("st%08x-", rand.Uint32())}
}

// id namespaces name for this fixture. Names that are prefixes of each other
// stay prefixes after namespacing, which the isolation tests rely on.
func (f *fixture) id(name string) string { return f.prefix + name }

// ctx is a per-test context with a deadline.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), opTimeout)
	t.Cleanup(cancel)
	return c
}

// at returns a fixed instant with millisecond precision, which every store
// (CQL timestamps included) preserves exactly.
func at(offsetMs int64) time.Time {
	return time.UnixMilli(1_700_000_000_000 + offsetMs).UTC()
}
