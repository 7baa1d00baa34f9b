package node_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
)

// authStatus is the status of an authenticated request with token, and
// the error code of a refusal.
func authStatus(t testing.TB, base, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ge gatewayError
	_ = json.NewDecoder(resp.Body).Decode(&ge)
	return resp.StatusCode, ge.Code
}

func wantAccepted(t testing.TB, base, token, what string) {
	t.Helper()
	if code, ec := authStatus(t, base, token); code != http.StatusOK {
		t.Fatalf("%s: %d %s, want 200", what, code, ec)
	}
}

func wantRefused(t testing.TB, base, token, what string) {
	t.Helper()
	if code, ec := authStatus(t, base, token); code != http.StatusUnauthorized || ec != "UNAUTHENTICATED" {
		t.Fatalf("%s: %d %s, want 401 UNAUTHENTICATED", what, code, ec)
	}
}

// freshToken asks n for a new token of a's device 1.
func freshToken(t testing.TB, base string, a account) string {
	t.Helper()
	var tok gateway.TokenResponse
	if code, ge := postJSON(t, http.DefaultClient, base+"/v1/token", gateway.TokenRequest{UserID: a.UserID, DeviceID: 1, DeviceSecret: a.Secret}, &tok); code != http.StatusOK {
		t.Fatalf("token: %d %+v", code, ge)
	}
	return tok.AccessToken
}

// kidOf is the kid in a token's header ("" for none).
func kidOf(t testing.TB, token string) string {
	t.Helper()
	h, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

// rotate rotates the key file as `courier token-keys rotate` does and
// returns the new signing key's id.
func rotate(t testing.TB, path string, keep int) string {
	t.Helper()
	keys, err := gateway.ReadTokenKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	next, added, _, err := gateway.RotateTokenKeys(keys, time.Now(), 0, keep)
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.WriteTokenKeyFile(path, next); err != nil {
		t.Fatal(err)
	}
	return added.ID
}

func closeNode(t testing.TB, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func wantNoTokenKeyInStore(t testing.TB, s persistence.Store) {
	t.Helper()
	if v, err := s.LoadSecret(context.Background(), node.LegacyTokenKeySecret); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("the store's secret %q = (%x, %v), want none", node.LegacyTokenKeySecret, v, err)
	}
}

func wantOwnerOnly(t testing.TB, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %04o, want 0600", path, st.Mode().Perm())
	}
}

// A token issued before a rotation is accepted after it, once the node
// has reloaded its key file and after a restart; tokens issued from then
// on name the new key.
func TestTokenSignedBeforeRotationStillWorksAfterIt(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, func(c *node.Config) { c.DataDir = dir })
	path := n.TokenKeysFile()
	if path != filepath.Join(dir, node.TokenKeysFileName) {
		t.Fatalf("key file %s, want the default in the data directory", path)
	}
	a := register(t, n.URL(), "alice")
	before := kidOf(t, a.Token)
	if before == "" {
		t.Fatal("a token without a kid")
	}

	newKid := rotate(t, path, 0)
	if err := n.ReloadTokenKeys(); err != nil {
		t.Fatal(err)
	}
	wantAccepted(t, n.URL(), a.Token, "token of the old key after a reload")
	fresh := freshToken(t, n.URL(), a)
	if got := kidOf(t, fresh); got != newKid || got == before {
		t.Fatalf("token issued after the rotation names %q, want the new key %q (the old was %q)", got, newKid, before)
	}
	wantAccepted(t, n.URL(), fresh, "token of the new key")
	// The WebSocket upgrade takes it too.
	dial(t, n.URL(), a.Token, 0).c.Close()

	closeNode(t, n)
	n = startNode(t, func(c *node.Config) { c.DataDir = dir })
	wantAccepted(t, n.URL(), a.Token, "token of the old key after a restart")
	wantAccepted(t, n.URL(), fresh, "token of the new key after a restart")
	if got := kidOf(t, freshToken(t, n.URL(), a)); got != newKid {
		t.Fatalf("after the restart tokens name %q, want %q", got, newKid)
	}
}

// A key dropped from the file verifies nothing once the node reloads it:
// its tokens are refused on every endpoint, the WebSocket upgrade too.
func TestRetiredTokenKeyIsRefused(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "alice")
	old := a.Token

	newKid := rotate(t, n.TokenKeysFile(), 1) // keep only the new key
	if err := n.ReloadTokenKeys(); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, n.URL(), old, "token of a retired key")
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL(n.URL(), old, 0), nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("WebSocket upgrade with a retired key's token: %v, want 401", err)
	}
	fresh := freshToken(t, n.URL(), a)
	if kidOf(t, fresh) != newKid {
		t.Fatalf("fresh token names %q, want %q", kidOf(t, fresh), newKid)
	}
	wantAccepted(t, n.URL(), fresh, "token of the new key")
}

// legacyStore makes the data directory of an earlier version: a user
// with device 1 (secret returned) and the token key in the store.
func legacyStore(t testing.TB, dir string, key []byte) account {
	t.Helper()
	s, err := embedded.Open(filepath.Join(dir, "store"), embedded.Options{Logger: nodetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secret, hash, err := gateway.NewDeviceSecret()
	if err != nil {
		t.Fatal(err)
	}
	a := account{UserID: "0190c0de-7e57-7000-8000-00000000000a", Secret: secret}
	if err := s.CreateUser(ctx, persistence.User{ID: a.UserID, Handle: "alice", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice(ctx, persistence.Device{UserID: a.UserID, DeviceID: 1, SecretHash: hash, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadOrStoreSecret(ctx, node.LegacyTokenKeySecret, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The token that version issued: no kid.
	a.Token = legacyToken(key, gateway.Claims{UserID: a.UserID, DeviceID: 1, IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(10 * time.Minute).Unix()})
	return a
}

// legacyToken is a token as versions before key ids signed it.
func legacyToken(key []byte, c gateway.Claims) string {
	body, _ := json.Marshal(c)
	signing := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// No token key is in the store, neither after a first start nor after a
// data directory of an earlier version was upgraded: its key moves to the
// key file (mode 0600), and the tokens it signed stay valid.
func TestTokenKeyNeverInStore(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		n := startNode(t, nil)
		wantNoTokenKeyInStore(t, n.Store())
		wantOwnerOnly(t, n.TokenKeysFile())
	})
	t.Run("migrated", func(t *testing.T) {
		dir := t.TempDir()
		key := bytes.Repeat([]byte{0x5a}, 32)
		a := legacyStore(t, dir, key)

		n := startNode(t, func(c *node.Config) { c.DataDir = dir })
		wantNoTokenKeyInStore(t, n.Store())
		wantOwnerOnly(t, n.TokenKeysFile())
		keys, err := gateway.ReadTokenKeyFile(n.TokenKeysFile())
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || !bytes.Equal(keys[0].Secret, key) || !keys[0].Legacy || keys[0].ID != gateway.TokenKeyID(key) {
			t.Fatalf("key file after the upgrade: %+v, want the store's key, legacy, signing", keys)
		}
		wantAccepted(t, n.URL(), a.Token, "token without a kid issued before the upgrade")
		fresh := freshToken(t, n.URL(), a)
		if kidOf(t, fresh) != gateway.TokenKeyID(key) {
			t.Fatalf("after the upgrade tokens name %q, want the moved key %q", kidOf(t, fresh), gateway.TokenKeyID(key))
		}

		// Again: nothing moves twice, nothing comes back.
		closeNode(t, n)
		n = startNode(t, func(c *node.Config) { c.DataDir = dir })
		wantNoTokenKeyInStore(t, n.Store())
		wantAccepted(t, n.URL(), a.Token, "old token after a second start")
		wantAccepted(t, n.URL(), fresh, "new token after a second start")
	})
	t.Run("migrated into an existing key file", func(t *testing.T) {
		dir := t.TempDir()
		key := bytes.Repeat([]byte{0x6b}, 32)
		a := legacyStore(t, dir, key)
		path := filepath.Join(dir, node.TokenKeysFileName)
		signer, err := gateway.NewTokenKeyFile(path, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		n := startNode(t, func(c *node.Config) { c.DataDir = dir })
		wantNoTokenKeyInStore(t, n.Store())
		wantOwnerOnly(t, path)
		keys, err := gateway.ReadTokenKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 2 || keys[0].ID != signer.ID || !bytes.Equal(keys[1].Secret, key) || !keys[1].Legacy {
			t.Fatalf("key file: %+v, want its key signing and the store's key after it, legacy", keys)
		}
		wantAccepted(t, n.URL(), a.Token, "token without a kid issued before the upgrade")
		if kidOf(t, freshToken(t, n.URL(), a)) != signer.ID {
			t.Fatal("the file's own key does not sign")
		}
	})
	t.Run("operator key", func(t *testing.T) {
		dir := t.TempDir()
		stored := bytes.Repeat([]byte{0x7c}, 32)
		legacyStore(t, dir, stored)
		given := bytes.Repeat([]byte{0x11}, 32)
		n := startNode(t, func(c *node.Config) { c.DataDir = dir; c.TokenKey = hex.EncodeToString(given) })
		wantNoTokenKeyInStore(t, n.Store())
		if n.TokenKeysFile() != "" {
			t.Fatalf("TokenKeysFile = %q with --token-key", n.TokenKeysFile())
		}
		if _, err := os.Stat(filepath.Join(dir, node.TokenKeysFileName)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a key file was made beside --token-key: %v", err)
		}
	})
}

// --token-key still works: its key signs with a kid derived from it, and
// verifies the tokens nodes given it signed before key ids.
func TestOperatorTokenKey(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	n := startNode(t, func(c *node.Config) { c.TokenKey = hex.EncodeToString(key) })
	a := register(t, n.URL(), "alice")
	if kidOf(t, a.Token) != gateway.TokenKeyID(key) {
		t.Fatalf("kid %q, want %q", kidOf(t, a.Token), gateway.TokenKeyID(key))
	}
	old := legacyToken(key, gateway.Claims{UserID: a.UserID, DeviceID: 1, IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Minute).Unix()})
	wantAccepted(t, n.URL(), old, "token without a kid")
	if err := n.ReloadTokenKeys(); err == nil {
		t.Fatal("ReloadTokenKeys with --token-key: no error")
	}

	for name, cfg := range map[string]node.Config{
		"not hex":    {TokenKey: "xyz"},
		"short":      {TokenKey: "00112233"},
		"and a file": {TokenKey: hex.EncodeToString(key), TokenKeysFile: nodetest.TokenKeysFile(t)},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.Listen, cfg.DataDir, cfg.Logger = "127.0.0.1:0", t.TempDir(), nodetest.Logger()
			if n, err := node.Start(context.Background(), cfg); err == nil {
				closeNode(t, n)
				t.Fatal("started")
			}
		})
	}
}

// Like ssh with a private key: a key file others may read is refused, at
// start and at a reload (which keeps the keys in use).
func TestKeyFileWithWidePermissionsRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, node.TokenKeysFileName)
	if _, err := gateway.NewTokenKeyFile(path, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: nodetest.Logger()}
	n, err := node.Start(context.Background(), cfg)
	if err == nil {
		closeNode(t, n)
		t.Fatal("a node started with a key file of mode 0644")
	}
	if !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("error %q does not say to chmod 600 %s", err, path)
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, func(c *node.Config) { c.DataDir = dir })
	a := register(t, n.URL(), "alice")
	rotate(t, path, 1)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := n.ReloadTokenKeys(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("reload of a key file of mode 0640: %v, want a refusal", err)
	}
	wantAccepted(t, n.URL(), a.Token, "token of the keys in use after a refused reload")
	if err := os.WriteFile(path, []byte("not a key file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.ReloadTokenKeys(); err == nil {
		t.Fatal("reload of a broken key file: no error")
	}
	wantAccepted(t, n.URL(), a.Token, "token of the keys in use after a failed reload")
}

// A node of a cluster never makes its own key file: without one it
// refuses to start and says what to run.
func TestClusterNodeWithoutKeyFileRefusesToStart(t *testing.T) {
	start := func(t *testing.T, dir string) error {
		n, err := node.Start(context.Background(), node.Config{
			Listen: "127.0.0.1:0", DataDir: dir, Logger: nodetest.Logger(),
			Cluster: "consul", NodeAddress: "127.0.0.1:0", ConsulAddr: "127.0.0.1:1",
		})
		if err == nil {
			closeNode(t, n)
			return errors.New("started")
		}
		return err
	}
	t.Run("new cluster", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, node.TokenKeysFileName)
		err := start(t, dir)
		if !strings.Contains(err.Error(), "courier token-keys new "+path) {
			t.Fatalf("error %q does not say to run courier token-keys new %s", err, path)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the node made a key file: %v", err)
		}
	})
	t.Run("store holds an earlier key", func(t *testing.T) {
		dir := t.TempDir()
		legacyStore(t, dir, bytes.Repeat([]byte{1}, 32))
		err := start(t, dir)
		if want := "courier token-keys migrate " + filepath.Join(dir, node.TokenKeysFileName) + " --data " + dir; !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say to run %s", err, want)
		}
		// Given a key file without the store's key: the same.
		if _, err := gateway.NewTokenKeyFile(filepath.Join(dir, node.TokenKeysFileName), time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := start(t, dir); !strings.Contains(err.Error(), "courier token-keys migrate") {
			t.Fatalf("error %q does not say to run courier token-keys migrate", err)
		}
	})
}
