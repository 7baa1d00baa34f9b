package node_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/turn"
)

func getTURN(t *testing.T, base, token string) (int, turn.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+turn.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", turn.Path, err)
	}
	defer resp.Body.Close()
	var out turn.Response
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("decode %s: %v", turn.Path, err)
		}
	}
	return resp.StatusCode, out
}

func TestTURNCredentialsNeedAnAccessTokenAndNameTheEmbeddedServer(t *testing.T) {
	dataDir := t.TempDir()
	n := startNode(t, func(c *node.Config) { c.DataDir = dataDir })
	if code, _ := getTURN(t, n.URL(), ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	if code, _ := getTURN(t, n.URL(), "forged"); code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d, want 401", code)
	}
	alice := register(t, n.URL(), "alice")
	code, got := getTURN(t, n.URL(), alice.Token)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d", turn.Path, code)
	}
	want := "turn:" + n.TURN().Addr().String() + "?transport=udp"
	if len(got.URIs) != 1 || got.URIs[0] != want || !strings.HasSuffix(got.Username, ":"+alice.UserID) {
		t.Fatalf("answer %+v, want URIs [%s] and a username for %s", got, want, alice.UserID)
	}
	fi, err := os.Stat(filepath.Join(dataDir, turn.SecretFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated secret file: %v %v", fi, err)
	}
	secret, err := turn.LoadOrCreateSecret(filepath.Join(dataDir, turn.SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if user, err := turn.Verify(secret, got.Username, got.Password, time.Now()); err != nil || user != alice.UserID {
		t.Fatalf("issued credentials do not verify with the data directory's secret: %q %v", user, err)
	}
}

func TestTURNExternalServersAndOff(t *testing.T) {
	ext := startNode(t, func(c *node.Config) {
		c.TURN.URIs = []string{"turn:turn.example.org:3478?transport=udp"}
		c.TURN.Secret = []byte("shared-with-coturn")
		c.TURN.TTL = time.Hour
	})
	if ext.TURN().Addr() != nil {
		t.Fatalf("an embedded server runs at %v beside external ones", ext.TURN().Addr())
	}
	code, got := getTURN(t, ext.URL(), register(t, ext.URL(), "alice").Token)
	if code != http.StatusOK || got.TTL != 3600 || len(got.URIs) != 1 || got.URIs[0] != "turn:turn.example.org:3478?transport=udp" {
		t.Fatalf("external: %d %+v", code, got)
	}
	if _, err := turn.Verify([]byte("shared-with-coturn"), got.Username, got.Password, time.Now()); err != nil {
		t.Fatalf("external: credentials not signed with the shared secret: %v", err)
	}

	off := startNode(t, func(c *node.Config) { c.TURNOff = true })
	if off.TURN() != nil {
		t.Fatal("TURNOff: a TURN service runs")
	}
	if code, _ := getTURN(t, off.URL(), register(t, off.URL(), "bob").Token); code != http.StatusNotFound {
		t.Fatalf("TURNOff: %d, want 404", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := node.Start(ctx, node.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: nodetest.Logger(),
		TURN: turn.Config{URIs: []string{"turn:turn.example.org:3478"}}}); err == nil {
		_ = n.Close(ctx)
		t.Fatal("external TURN servers without their secret: the node started")
	}
}

// freeTCPAddr is a loopback address whose TCP port was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestEmbeddedTURNListensOnTheGatewaysPortOverUDP(t *testing.T) {
	addr := freeTCPAddr(t)
	n := startNode(t, func(c *node.Config) { c.Listen = addr })
	if got := n.TURN().Addr().String(); got != addr {
		t.Fatalf("TURN on udp %s, want the gateway's %s", got, addr)
	}

	// That port taken over UDP: the server takes another, and the URIs say which.
	addr = freeTCPAddr(t)
	taken, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	n = startNode(t, func(c *node.Config) { c.Listen = addr })
	got := n.TURN().Addr().String()
	if got == addr {
		t.Fatalf("TURN on the taken udp %s", got)
	}
	if uris := n.TURN().URIs(); len(uris) != 1 || uris[0] != "turn:"+got+"?transport=udp" {
		t.Fatalf("URIs %v do not name the bound udp %s", uris, got)
	}
}
