package client_test

import (
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/turntest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/turn"
)

// turnServer is the host:port of a turn:host:port?transport=udp URI.
func turnServer(t *testing.T, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "turn" || u.Query().Get("transport") != "udp" {
		t.Fatalf("URI %q is not turn:host:port?transport=udp (%v)", uri, err)
	}
	return u.Opaque
}

// Two users fetch credentials over HTTP with their access tokens, allocate
// relays on the node's embedded TURN server and exchange datagrams relay
// to relay, as a relay-only call does; credentials past their expiry are
// refused by the same server.
func TestTURNCredentialsRelayACallOnTheEmbeddedServer(t *testing.T) {
	dataDir := t.TempDir()
	n := startNode(t, node.Config{DataDir: dataDir})
	alice := dial(t, register(t, n, "alice"))
	bobCreds := register(t, n, "bob")
	bob := dial(t, bobCreds)

	ctx := timeout(t, 10*time.Second)
	ac, err := alice.TURNCredentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := bob.TURNCredentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(bc.Username, ":"+bobCreds.UserID) || ac.Username == bc.Username {
		t.Fatalf("usernames %q and %q: not per user", ac.Username, bc.Username)
	}
	if ac.TTL != int64(turn.DefaultTTL/time.Second) || time.Until(ac.Expires) < turn.DefaultTTL-time.Minute {
		t.Fatalf("ttl %d s, expires %v", ac.TTL, ac.Expires)
	}
	if len(ac.URIs) != 1 {
		t.Fatalf("URIs %v, want the embedded server's", ac.URIs)
	}
	server := turnServer(t, ac.URIs[0])

	ra, err := turntest.Allocate(t, server, ac.Username, ac.Password)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := turntest.Allocate(t, server, bc.Username, bc.Password)
	if err != nil {
		t.Fatal(err)
	}
	if err := turntest.Exchange(ra, rb, 3*time.Second); err != nil {
		t.Fatal(err)
	}

	// The node's secret, from its data directory: credentials signed with
	// it but expired are refused.
	secret, err := turn.LoadOrCreateSecret(filepath.Join(dataDir, turn.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	expired, err := turn.NewCredentials(secret, bobCreds.UserID, time.Minute, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := turntest.Allocate(t, server, expired.Username, expired.Password); err == nil || !strings.Contains(err.Error(), "error response") {
		t.Fatalf("expired credentials: %v, want the server's refusal", err)
	}
}
