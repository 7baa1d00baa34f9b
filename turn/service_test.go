package turn_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/turntest"
	"github.com/courier-im/courier/turn"
)

// testLogger discards logs unless COURIER_TEST_LOG is set (as nodetest's).
func testLogger() *slog.Logger {
	if os.Getenv("COURIER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startService runs an embedded server on loopback, closed when t ends.
func startService(t *testing.T, mutate func(*turn.Config)) *turn.Service {
	t.Helper()
	cfg := turn.Config{Listen: "127.0.0.1:0", Secret: []byte("test-secret"), Logger: testLogger()}
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := turn.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start turn: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close turn: %v", err)
		}
	})
	return s
}

func allocate(t *testing.T, s *turn.Service, user string) *turntest.Relay {
	t.Helper()
	c, err := s.Issue(user)
	if err != nil {
		t.Fatal(err)
	}
	r, err := turntest.Allocate(t, s.Addr().String(), c.Username, c.Password)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEmbeddedServerRelaysBetweenTwoAllocations(t *testing.T) {
	s := startService(t, nil)
	if got, want := s.URIs(), []string{"turn:" + s.Addr().String() + "?transport=udp"}; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("URIs %v, want %v", got, want)
	}
	alice, bob := allocate(t, s, "alice"), allocate(t, s, "bob")
	if n := s.Allocations(); n != 2 {
		t.Fatalf("%d allocations, want 2", n)
	}
	if ip := alice.Conn.LocalAddr().(*net.UDPAddr).IP; !ip.IsLoopback() {
		t.Fatalf("relay address %v is not on the loopback relay IP", ip)
	}
	if err := turntest.Exchange(alice, bob, 3*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestServerRefusesExpiredForgedAndMalformedCredentials(t *testing.T) {
	s := startService(t, nil)
	now := time.Now()
	expired, err := turn.NewCredentials([]byte("test-secret"), "alice", time.Hour, now.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := turn.NewCredentials([]byte("another-secret"), "alice", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, up := range map[string][2]string{
		"expired":   {expired.Username, expired.Password},
		"forged":    {forged.Username, forged.Password},
		"malformed": {"alice", turn.Password([]byte("test-secret"), "alice")},
	} {
		// An error response: the server refused, no datagram was lost.
		if _, err := turntest.Allocate(t, s.Addr().String(), up[0], up[1]); err == nil || !strings.Contains(err.Error(), "error response") {
			t.Errorf("%s credentials: %v, want the server's refusal", name, err)
		}
	}
	if n := s.Allocations(); n != 0 {
		t.Fatalf("%d allocations after refusals", n)
	}
}

func TestRelayRefusesLoopbackPeersUnlessAllowed(t *testing.T) {
	off := false
	s := startService(t, func(c *turn.Config) { c.AllowLoopbackPeers = &off })
	alice, bob := allocate(t, s, "alice"), allocate(t, s, "bob")
	// The relay refuses the permission, so nothing reaches the peer.
	if err := turntest.Exchange(alice, bob, 300*time.Millisecond); err == nil {
		t.Fatal("a relay sent to a loopback peer though loopback peers are refused")
	}
}

func TestCloseFreesTheServerAndRelaySockets(t *testing.T) {
	cfg := turn.Config{Listen: "127.0.0.1:0", Secret: []byte("test-secret"), Logger: testLogger()}
	s, err := turn.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	relay := allocate(t, s, "alice")
	addrs := []string{s.Addr().String(), relay.Conn.LocalAddr().String()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		pc, err := net.ListenPacket("udp4", a)
		if err != nil {
			t.Fatalf("%s still bound after Close: %v", a, err)
		}
		_ = pc.Close()
	}
}

func TestExternalServersRunNothingHere(t *testing.T) {
	s := startService(t, func(c *turn.Config) {
		c.Listen = ""
		c.URIs = []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"}
	})
	if s.Addr() != nil {
		t.Fatalf("an embedded server runs at %v", s.Addr())
	}
	if got := s.URIs(); len(got) != 2 || got[1] != "turns:turn.example.org:5349?transport=tcp" {
		t.Fatalf("URIs %v", got)
	}
	for name, cfg := range map[string]turn.Config{
		"no secret":   {URIs: []string{"turn:x:3478"}},
		"not a turn:": {URIs: []string{"stun:x:3478"}, Secret: []byte("s")},
		"bad listen":  {Listen: "nowhere", Secret: []byte("s")},
	} {
		cfg.Logger = testLogger()
		if s, err := turn.Start(context.Background(), cfg); err == nil {
			_ = s.Close(context.Background())
			t.Errorf("%s: started", name)
		}
	}
}

func TestHandlerIssuesCredentialsForTheAuthenticatedUser(t *testing.T) {
	clock := time.Unix(1_800_000_000, 0)
	s := startService(t, func(c *turn.Config) {
		c.TTL = 10 * time.Minute
		c.Now = func() time.Time { return clock }
	})
	h := s.Handler(func(w http.ResponseWriter, r *http.Request) (string, bool) {
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, "no", http.StatusUnauthorized)
			return "", false
		}
		return "user-7", true
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, turn.Path, nil))
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("unauthenticated: %d", rec.Code)
	}
	req := httptest.NewRequest(http.MethodGet, turn.Path, nil)
	req.Header.Set("Authorization", "Bearer good")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var got turn.Response
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("%d %s: %v", rec.Code, rec.Body, err)
	}
	if got.Username != "1800000600:user-7" || got.TTL != 600 || len(got.URIs) != 1 {
		t.Fatalf("answer %+v", got)
	}
	if user, err := turn.Verify([]byte("test-secret"), got.Username, got.Password, clock); err != nil || user != "user-7" {
		t.Fatalf("issued credentials do not verify: %q %v", user, err)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
}

func TestGeneratedSecretIsPrivateAndStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", turn.SecretFile)
	first, err := turn.LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := turn.LoadOrCreateSecret(path)
	if err != nil || string(again) != string(first) || len(first) != 64 {
		t.Fatalf("second load %q (%v), first %q", again, err, first)
	}
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := turn.LoadOrCreateSecret(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("a broken secret file: %v", err)
	}
}
