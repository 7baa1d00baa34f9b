package consul

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/internal/consultest"
)

// These tests talk to a real Consul agent: the one `make test` starts, and
// for the outage test a private agent they stop and restart.

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// uniqueService keeps tests (and reruns) from seeing each other's members.
func uniqueService(t *testing.T) string {
	return fmt.Sprintf("courier-test-%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), time.Now().UnixNano())
}

func member(i int) cluster.Member {
	return cluster.Member{ID: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("127.0.0.1:%d", 20000+i),
		Kinds: []string{"user", "group"}, Meta: map[string]string{"gateway": fmt.Sprintf("http://127.0.0.1:%d", 18000+i)}}
}

func start(t *testing.T, addr, service string, ttl time.Duration, self cluster.Member) *Membership {
	t.Helper()
	m, err := New(Config{Address: addr, Service: service, TTL: ttl, WatchWait: 2 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.Start(ctx, self); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background()) })
	return m
}

func addrsOf(ms []cluster.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Address
	}
	slices.Sort(out)
	return out
}

// waitMembers waits until m's view is exactly want (addresses).
func waitMembers(t *testing.T, m *Membership, timeout time.Duration, want ...cluster.Member) {
	t.Helper()
	w := addrsOf(want)
	deadline := time.Now().Add(timeout)
	for {
		got := addrsOf(m.Members())
		if slices.Equal(got, w) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members = %v, want %v after %v", got, w, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMembersSeeEachOtherAndAGracefulLeaverDisappearsAtOnce(t *testing.T) {
	addr := consultest.Addr(t)
	svc := uniqueService(t)
	a := start(t, addr, svc, 3*time.Second, member(1))
	changes := a.Changes()
	b := start(t, addr, svc, 3*time.Second, member(2))
	waitMembers(t, a, 5*time.Second, member(1), member(2))
	waitMembers(t, b, 5*time.Second, member(1), member(2))
	select {
	case <-changes:
	default:
		t.Fatal("a's view changed but Changes was not signalled")
	}
	// Meta and kinds survive the trip through Consul.
	for _, mb := range a.Members() {
		if mb.Address == member(2).Address {
			if mb.ID != "node-2" || !slices.Equal(mb.Kinds, []string{"user", "group"}) || mb.Meta["gateway"] != member(2).Meta["gateway"] {
				t.Fatalf("member 2 came back as %+v", mb)
			}
		}
	}
	start := time.Now()
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Deregistered: gone well before its 3 s TTL could lapse.
	waitMembers(t, a, 2*time.Second, member(1))
	t.Logf("graceful leave seen after %v", time.Since(start))
}

func TestCrashedMemberLeavesAfterItsTTL(t *testing.T) {
	addr := consultest.Addr(t)
	svc := uniqueService(t)
	const ttl = 2 * time.Second
	a := start(t, addr, svc, ttl, member(1))
	b := start(t, addr, svc, ttl, member(2))
	waitMembers(t, a, 5*time.Second, member(1), member(2))
	// A crash: b's loops stop and nobody deregisters it.
	b.cancel()
	b.done.Wait()
	b.cancel = nil
	crashed := time.Now()
	waitMembers(t, a, ttl+5*time.Second, member(1))
	if took := time.Since(crashed); took < ttl/2 {
		t.Fatalf("b left after %v, before its TTL (%v) could have lapsed", took, ttl)
	}
}

func TestMemberWhoseCheckWentCriticalRejoinsWithoutRestart(t *testing.T) {
	addr := consultest.Addr(t)
	svc := uniqueService(t)
	a := start(t, addr, svc, 3*time.Second, member(1))
	b := start(t, addr, svc, 3*time.Second, member(2))
	waitMembers(t, a, 5*time.Second, member(1), member(2))
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	// Consul marks b critical, as when its TTL lapsed: peers drop it, and so
	// does b itself...
	if err := client.Agent().UpdateTTL(b.checkID, "missed", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, 3*time.Second, member(1))
	// ...until its next heartbeat: the same process, the same identity.
	waitMembers(t, a, 5*time.Second, member(1), member(2))
	waitMembers(t, b, 5*time.Second, member(1), member(2))

	// Worse: the agent forgot b entirely (what an agent restart or the
	// reaper does). b registers again by itself.
	if err := client.Agent().ServiceDeregister(b.serviceID); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, 3*time.Second, member(1))
	waitMembers(t, a, 8*time.Second, member(1), member(2))
}

func TestConsulRestartKeepsTheLastViewAndRecovers(t *testing.T) {
	// A private agent on another loopback address, so stopping it leaves the
	// shared one alone.
	agent := consultest.Start(t, "127.0.0.2")
	addr := agent.Addr()
	svc := uniqueService(t)
	const ttl = 2 * time.Second
	a := start(t, addr, svc, ttl, member(1))
	b := start(t, addr, svc, ttl, member(2))
	waitMembers(t, a, 5*time.Second, member(1), member(2))
	changes := a.Changes()

	agent.Stop()
	// Down for several TTLs: both keep the members they know.
	time.Sleep(3 * ttl)
	for _, m := range []*Membership{a, b} {
		if got := addrsOf(m.Members()); !slices.Equal(got, addrsOf([]cluster.Member{member(1), member(2)})) {
			t.Fatalf("view during the outage = %v, want both members kept", got)
		}
	}
	select {
	case <-changes:
		t.Fatal("the member list changed while Consul was down")
	default:
	}

	// A -dev agent comes back empty; both register again on their own and
	// nobody is dropped while they do.
	agent.Restart()
	client, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		entries, _, err := client.Health().Service(svc, "", true, nil)
		if err == nil && len(entries) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart Consul lists %d members (err %v), want 2", len(entries), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitMembers(t, a, 5*time.Second, member(1), member(2))
	waitMembers(t, b, 5*time.Second, member(1), member(2))
	select {
	case <-changes:
		t.Fatal("the member list changed while the nodes re-registered")
	default:
	}
	// The grace window has passed: the view follows Consul again.
	time.Sleep(ttl)
	if err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, a, 3*time.Second, member(1))
}

func TestBackoffGrowsAndStaysBounded(t *testing.T) {
	limit := 3 * time.Second
	prev := time.Duration(0)
	for attempt := range 12 {
		d := backoff(attempt, limit)
		if d > limit+limit/5 {
			t.Fatalf("attempt %d waits %v, over the %v cap plus jitter", attempt, d, limit)
		}
		if attempt < 4 && d < prev/2 {
			t.Fatalf("attempt %d waits %v, less than before (%v)", attempt, d, prev)
		}
		prev = d
	}
}
