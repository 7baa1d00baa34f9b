package e2ee

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// reopen closes d and opens its file again.
func reopen(t *testing.T, d *Device, path string) *Device {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Encrypt("x", 1, nil, nil); err == nil {
		t.Fatal("Encrypt on a closed Device succeeded")
	}
	n, err := Open(path, d.UserID(), d.DeviceID())
	if err != nil {
		t.Fatalf("reopen %s: %v", path, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// TestReopenMidConversation: both sides are closed and reopened from their
// files at several points of a conversation, with messages in flight
// (including one whose skipped key must survive) across the reopen.
func TestReopenMidConversation(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice, alicePath := openDevice(t, dir, "alice", 1)
	bob, bobPath := openDevice(t, dir, "bob", 1)
	keys.publish(t, alice, 3)
	keys.publish(t, bob, 3)
	aliceIdentity, bobReg := alice.IdentityKey(), bob.RegistrationID()

	// Alice sends two prekey messages; bob gets only the second before
	// both restart, so bob keeps a skipped message key on disk.
	m1 := send(t, keys, alice, bob, []byte("m1"))
	m2 := send(t, keys, alice, bob, []byte("m2"))
	mustDecrypt(t, bob, alice, m2, []byte("m2"))

	alice, bob = reopen(t, alice, alicePath), reopen(t, bob, bobPath)
	if !bytes.Equal(alice.IdentityKey(), aliceIdentity) || bob.RegistrationID() != bobReg {
		t.Fatal("identity or registration id changed across reopen")
	}
	if !alice.HasSession("bob", 1) || !bob.HasSession("alice", 1) {
		t.Fatal("session lost across reopen")
	}
	if got, ok := bob.RemoteIdentity("alice", 1); !ok || !bytes.Equal(got, aliceIdentity) {
		t.Fatal("bob lost alice's identity across reopen")
	}
	mustDecrypt(t, bob, alice, m1, []byte("m1"))

	r1 := send(t, keys, bob, alice, []byte("r1"))
	m3 := send(t, keys, alice, bob, []byte("m3")) // sent before alice saw r1
	alice, bob = reopen(t, alice, alicePath), reopen(t, bob, bobPath)
	mustDecrypt(t, alice, bob, r1, []byte("r1"))
	mustDecrypt(t, bob, alice, m3, []byte("m3"))

	for i := range 4 {
		p := fmt.Appendf(nil, "after %d", i)
		mustDecrypt(t, bob, alice, send(t, keys, alice, bob, p), p)
		mustDecrypt(t, alice, bob, send(t, keys, bob, alice, p), p)
		alice, bob = reopen(t, alice, alicePath), reopen(t, bob, bobPath)
	}

	// Group state survives too.
	ct, dist, err := alice.GroupEncrypt("g", 1, []byte("g1"))
	if err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, dist), dist)
	if err := bob.ProcessDistribution("g", 1, "alice", 1, dist); err != nil {
		t.Fatal(err)
	}
	alice, bob = reopen(t, alice, alicePath), reopen(t, bob, bobPath)
	ct2, dist2, err := alice.GroupEncrypt("g", 1, []byte("g2"))
	if err != nil || dist2 != nil {
		t.Fatalf("GroupEncrypt after reopen: dist=%v err=%v (want existing sender key)", dist2 != nil, err)
	}
	for _, c := range []struct{ ct, want []byte }{{ct2, []byte("g2")}, {ct, []byte("g1")}} {
		got, err := bob.GroupDecrypt("g", 1, "alice", 1, c.ct)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("GroupDecrypt after reopen = %q, %v; want %q", got, err, c.want)
		}
	}
}

func TestFileModeAndOpenErrors(t *testing.T) {
	dir := t.TempDir()
	d, path := openDevice(t, dir, "alice", 1)
	if _, err := d.KeyUpload(2); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the device file (no temp files left)", len(entries))
	}

	garbage := filepath.Join(dir, "garbage.json")
	if err := os.WriteFile(garbage, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, user string
		dev              uint32
	}{
		{"other user", path, "mallory", 1},
		{"other device", path, "alice", 2},
		{"corrupt file", garbage, "alice", 1},
		{"missing directory", filepath.Join(dir, "nope", "x.json"), "alice", 1},
		{"empty user", filepath.Join(dir, "y.json"), "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d, err := Open(tc.path, tc.user, tc.dev); err == nil {
				_ = d.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

// containsSecret reports whether the file bytes contain secret raw, as hex,
// or inside any base64 string at any depth of the JSON document (the file
// stores byte fields as base64 and embeds libsignal's JSON records).
func containsSecret(file, secret []byte) bool {
	if bytes.Contains(file, secret) ||
		bytes.Contains(bytes.ToLower(file), []byte(hex.EncodeToString(secret))) {
		return true
	}
	var doc any
	if json.Unmarshal(file, &doc) != nil {
		return false
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		case string:
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if b, err := enc.DecodeString(v); err == nil && (bytes.Contains(b, secret) || containsSecret(b, secret)) {
					return true
				}
			}
		}
		return false
	}
	return walk(doc)
}

// TestContainsSecretDetects makes sure the plaintext check below can fail.
func TestContainsSecretDetects(t *testing.T) {
	secret := randomBytes(t, 32)
	inner, _ := json.Marshal(map[string][]byte{"k": append([]byte("pad"), secret...)})
	cases := map[string][]byte{
		"raw":            append([]byte("xx"), secret...),
		"hex":            []byte(`{"a":"` + hex.EncodeToString(secret) + `"}`),
		"base64":         []byte(`{"a":"` + base64.StdEncoding.EncodeToString(append([]byte{1}, secret...)) + `"}`),
		"nested record":  []byte(`{"r":` + string(inner) + `}`),
		"base64 of json": []byte(`{"r":"` + base64.StdEncoding.EncodeToString(inner) + `"}`),
	}
	for name, file := range cases {
		if !containsSecret(file, secret) {
			t.Errorf("%s: secret not detected", name)
		}
	}
	if containsSecret([]byte(`{"a":"`+base64.StdEncoding.EncodeToString(randomBytes(t, 64))+`"}`), secret) {
		t.Error("false positive")
	}
}

// TestNoPlaintextInFile: a random marker sent and received in 1:1 (prekey
// and normal messages) and group messages appears in no device file.
func TestNoPlaintextInFile(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice, alicePath := openDevice(t, dir, "alice", 1)
	bob, bobPath := openDevice(t, dir, "bob", 1)
	keys.publish(t, alice, 2)
	keys.publish(t, bob, 2)
	marker := randomBytes(t, 32)

	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, marker), marker) // prekey message
	mustDecrypt(t, alice, bob, send(t, keys, bob, alice, marker), marker) // normal message
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, marker), marker)
	ct, dist, err := alice.GroupEncrypt("g", 7, marker)
	if err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, dist), dist)
	if err := bob.ProcessDistribution("g", 7, "alice", 1, dist); err != nil {
		t.Fatal(err)
	}
	if got, err := bob.GroupDecrypt("g", 7, "alice", 1, ct); err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("GroupDecrypt = %x, %v", got, err)
	}
	// One message bob never reads, so its key stays stored as skipped.
	_ = send(t, keys, alice, bob, marker)
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, []byte("later")), []byte("later"))

	for _, p := range []string{alicePath, bobPath} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if containsSecret(b, marker) {
			t.Fatalf("%s contains the plaintext marker", p)
		}
	}
}
