package turn_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/turntest"
	"github.com/courier-im/courier/turn"
)

// The coturn test runs against a real coturn (Debian's package) in
// use-auth-secret mode, started by scripts/coturn.sh from `make test`.
const (
	coturnAddrEnv   = "COURIER_TEST_COTURN_ADDR"
	coturnSecretEnv = "COURIER_TEST_COTURN_SECRET"
)

// coturn returns the server's host:port and shared secret, or skips (fails
// in CI) the test when none is configured.
func coturn(t *testing.T) (addr string, secret []byte) {
	t.Helper()
	addr, s := strings.TrimSpace(os.Getenv(coturnAddrEnv)), os.Getenv(coturnSecretEnv)
	if addr == "" || s == "" {
		msg := coturnAddrEnv + " and " + coturnSecretEnv + " are not set: this test needs a coturn with " +
			"use-auth-secret. Run `make test` (it starts one with scripts/coturn.sh), or name yours " +
			"(listening on UDP, allow-loopback-peers, relay-ip on loopback)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return addr, []byte(s)
}

// Credentials Courier issues for an external server (--turn-urls with
// --turn-secret) work on coturn: two users allocate relays and exchange
// datagrams relay to relay; coturn refuses expired and forged ones.
func TestCoturnAcceptsCourierCredentials(t *testing.T) {
	addr, secret := coturn(t)
	now := time.Now()
	issue := func(user string, ttl time.Duration, at time.Time, key []byte) turn.Credentials {
		c, err := turn.NewCredentials(key, user, ttl, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := issue("alice", time.Hour, now, secret), issue("bob", time.Hour, now, secret)
	ra, err := turntest.Allocate(t, addr, a.Username, a.Password)
	if err != nil {
		t.Fatalf("coturn refused valid credentials: %v", err)
	}
	rb, err := turntest.Allocate(t, addr, b.Username, b.Password)
	if err != nil {
		t.Fatalf("coturn refused valid credentials: %v", err)
	}
	if err := turntest.Exchange(ra, rb, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]turn.Credentials{
		"expired": issue("carol", time.Minute, now.Add(-time.Hour), secret),
		"forged":  issue("carol", time.Hour, now, []byte("not-the-secret")),
	} {
		if _, err := turntest.Allocate(t, addr, c.Username, c.Password); err == nil || !strings.Contains(err.Error(), "error response") {
			t.Errorf("%s credentials: %v, want coturn's refusal", name, err)
		}
	}
}
