package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence/embedded"
)

// runTokenKeys runs `courier token-keys ARGS` and returns its output.
func runTokenKeys(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newTokenKeysCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func readKeys(t *testing.T, path string) []gateway.TokenKey {
	t.Helper()
	keys, err := gateway.ReadTokenKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestTokenKeysNewRotateList(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token-keys")
	if out, err := runTokenKeys(t, "new", path); err != nil {
		t.Fatalf("new: %v\n%s", err, out)
	}
	first := readKeys(t, path)
	if len(first) != 1 {
		t.Fatalf("new made %d keys", len(first))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o", st.Mode().Perm())
	}
	if _, err := runTokenKeys(t, "new", path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("new over an existing file: %v, want ErrExist", err)
	}
	if keys := readKeys(t, path); keys[0].ID != first[0].ID || len(keys) != 1 {
		t.Fatal("new changed an existing file")
	}

	out, err := runTokenKeys(t, "rotate", path)
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	keys := readKeys(t, path)
	if len(keys) != 2 || keys[1].ID != first[0].ID || !strings.Contains(out, "key "+keys[0].ID+" signs") || !strings.Contains(out, "SIGHUP") {
		t.Fatalf("after rotate: %+v\n%s", keys, out)
	}

	out, err = runTokenKeys(t, "list", path)
	if err != nil || !strings.Contains(out, keys[0].ID) || !strings.Contains(out, keys[1].ID) || !strings.Contains(out, "signs") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	for _, k := range keys {
		if strings.Contains(out, base64.RawURLEncoding.EncodeToString(k.Secret)[:16]) {
			t.Fatal("list printed a key")
		}
	}

	if out, err := runTokenKeys(t, "rotate", path, "--keep", "1"); err != nil || len(readKeys(t, path)) != 1 || !strings.Contains(out, "dropped: "+keys[0].ID+", "+keys[1].ID) {
		t.Fatalf("rotate --keep 1: %v, %d keys\n%s", err, len(readKeys(t, path)), out)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runTokenKeys(t, "rotate", path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("rotate of a mode 0644 file: %v", err)
	}
}

// --drop-older-than drops the keys that stopped signing long enough ago
// for their tokens to have expired, and keeps the one that just did.
func TestTokenKeysRotateDropsRetiredKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token-keys")
	now := time.Now()
	newer, older := mustKey(t, now.Add(-time.Hour)), mustKey(t, now.Add(-3*time.Hour))
	if err := gateway.CreateTokenKeyFile(path, []gateway.TokenKey{newer, older}); err != nil {
		t.Fatal(err)
	}
	// older stopped signing an hour ago, newer stops now.
	out, err := runTokenKeys(t, "rotate", path, "--drop-older-than", "30m")
	if err != nil {
		t.Fatal(err)
	}
	keys := readKeys(t, path)
	if len(keys) != 2 || keys[1].ID != newer.ID || !strings.Contains(out, "dropped: "+older.ID) {
		t.Fatalf("after rotate --drop-older-than 30m: %+v\n%s", keys, out)
	}
	if _, err := runTokenKeys(t, "rotate", path, "--keep", "-1"); err == nil {
		t.Fatal("--keep -1 accepted")
	}
}

func mustKey(t *testing.T, created time.Time) gateway.TokenKey {
	t.Helper()
	k, err := gateway.NewTokenKey(created)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// migrate copies the key an earlier version kept in an embedded store, or
// gave as --token-key, into a key file, and leaves the store alone.
func TestTokenKeysMigrate(t *testing.T) {
	t.Setenv("COURIER_TOKEN_KEY", "")
	data := t.TempDir()
	path := filepath.Join(t.TempDir(), "token-keys")
	if out, err := runTokenKeys(t, "migrate", path, "--data", data); err == nil {
		t.Fatalf("migrate from a directory without a store: no error\n%s", out)
	}
	s, err := embedded.Open(filepath.Join(data, "store"), embedded.Options{Logger: nodetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if out, err := runTokenKeys(t, "migrate", path, "--data", data); err == nil {
		t.Fatalf("migrate while the store is open: no error\n%s", out)
	}
	stored := bytes.Repeat([]byte{0x33}, 32)
	if _, err := s.LoadOrStoreSecret(ctx, node.LegacyTokenKeySecret, stored); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	out, err := runTokenKeys(t, "migrate", path, "--data", data)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	keys := readKeys(t, path)
	if len(keys) != 1 || !bytes.Equal(keys[0].Secret, stored) || !keys[0].Legacy {
		t.Fatalf("after migrate: %+v", keys)
	}
	if out, err := runTokenKeys(t, "migrate", path, "--data", data); err != nil || !strings.Contains(out, "already holds") || len(readKeys(t, path)) != 1 {
		t.Fatalf("migrate again: %v\n%s", err, out)
	}
	s, err = embedded.Open(filepath.Join(data, "store"), embedded.Options{Logger: nodetest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.LoadSecret(ctx, node.LegacyTokenKeySecret); err != nil || !bytes.Equal(v, stored) {
		t.Fatalf("migrate changed the store: (%x, %v)", v, err)
	}
	_ = s.Close()

	// The key nodes were given as --token-key joins an existing file after
	// its keys, and takes over the legacy mark.
	given := bytes.Repeat([]byte{0x44}, 32)
	if out, err := runTokenKeys(t, "migrate", path, "--token-key", hex.EncodeToString(given)); err != nil {
		t.Fatalf("migrate --token-key: %v\n%s", err, out)
	}
	keys = readKeys(t, path)
	if len(keys) != 2 || keys[0].Legacy || !bytes.Equal(keys[1].Secret, given) || !keys[1].Legacy || keys[1].ID != gateway.TokenKeyID(given) {
		t.Fatalf("after migrate --token-key: %+v", keys)
	}
	if _, err := runTokenKeys(t, "migrate", path, "--token-key", "0011"); err == nil {
		t.Fatal("a short --token-key accepted")
	}
}
