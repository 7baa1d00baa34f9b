package gateway

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTokenKeyFileTextRoundTrips(t *testing.T) {
	now := tokenEpoch
	keys := []TokenKey{mustKey(t, now), {ID: "hand.made_1", Secret: bytes.Repeat([]byte{1}, 40)}, LegacyTokenKey(bytes.Repeat([]byte{2}, 32), now.Add(-time.Hour))}
	text := FormatTokenKeys(keys)
	got, err := ParseTokenKeys(text)
	if err != nil {
		t.Fatalf("ParseTokenKeys(%s): %v", text, err)
	}
	if len(got) != len(keys) {
		t.Fatalf("got %d keys, want %d", len(got), len(keys))
	}
	for i := range keys {
		if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Secret, keys[i].Secret) || !got[i].Created.Equal(keys[i].Created) || got[i].Legacy != keys[i].Legacy {
			t.Fatalf("key %d: got %+v, want %+v", i, got[i], keys[i])
		}
	}
}

func TestParseTokenKeys(t *testing.T) {
	key := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8" // 32 bytes
	good := "# comment\n\n  k1 " + key + "  created=2026-12-01T12:00:00Z\n\t# indented comment\nk2 " + key + "== legacy\n"
	keys, err := ParseTokenKeys([]byte(good))
	if err != nil || len(keys) != 2 || keys[0].ID != "k1" || keys[1].ID != "k2" || !keys[1].Legacy || keys[0].Legacy ||
		!keys[0].Created.Equal(tokenEpoch) || !keys[1].Created.IsZero() {
		t.Fatalf("ParseTokenKeys(good) = (%+v, %v)", keys, err)
	}
	for name, tc := range map[string]struct{ text, want string }{
		"empty":             {"# only a comment\n", "no key"},
		"one field":         {"k1\n", "line 1"},
		"bad kid":           {"k/1 " + key + "\n", `kid "k/1"`},
		"bad base64":        {"k1 not*base64\n", "not base64url"},
		"short key":         {"k1 AAECAw\n", "need at least 32"},
		"duplicate kid":     {"k1 " + key + "\nk1 " + key + "\n", "twice"},
		"two legacy":        {"k1 " + key + " legacy\nk2 " + key + " legacy\n", "both legacy"},
		"unknown attribute": {"k1 " + key + " signs\n", `unknown attribute "signs"`},
		"bad time":          {"k1 " + key + " created=yesterday\n", "created"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseTokenKeys([]byte(tc.text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestTokenKeyFileIsCreatedOwnerOnlyAndNeverClobbered(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "token-keys")
	k, err := NewTokenKeyFile(path, tokenEpoch)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, st.Mode())
	}
	if _, err := NewTokenKeyFile(path, tokenEpoch); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v, want ErrExist", err)
	}
	set, err := LoadTokenKeyFile(path)
	if err != nil || set.SigningKeyID() != k.ID || len(set.Keys()) != 1 {
		t.Fatalf("LoadTokenKeyFile = (%v, %v), want the first key only", set, err)
	}
	// Replaced whole, still owner-only, nothing left beside it.
	k2 := mustKey(t, tokenEpoch)
	if err := WriteTokenKeyFile(path, []TokenKey{k2, k}); err != nil {
		t.Fatal(err)
	}
	if set, err = LoadTokenKeyFile(path); err != nil || set.SigningKeyID() != k2.ID || len(set.Keys()) != 2 {
		t.Fatalf("after WriteTokenKeyFile: (%v, %v)", set, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("rewritten key file mode %v", st.Mode())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("files beside the key file: %v", ents)
	}
	if err := WriteTokenKeyFile(path, nil); err == nil {
		t.Fatal("wrote an empty key file")
	}
}

// Like ssh: a key file anyone but its owner may read is refused, and the
// error says what to run.
func TestTokenKeyFileWithWidePermissionsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token-keys")
	if _, err := NewTokenKeyFile(path, tokenEpoch); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o700} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadTokenKeyFile(path)
		if mode&0o077 == 0 {
			if err != nil {
				t.Fatalf("mode %04o: %v", mode, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Fatalf("mode %04o: err %v, want a refusal naming chmod 600", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenKeyFile(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
	if _, err := LoadTokenKeyFile(filepath.Join(t.TempDir(), "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}

func TestRotateTokenKeysRetiresByAgeAndCount(t *testing.T) {
	h := func(n int) time.Time { return tokenEpoch.Add(time.Duration(n) * time.Hour) }
	// Newest first: k3 signs since h(3); k2 signed from h(2) to h(3); k1
	// from h(1) to h(2); k0's successor has no creation time.
	k3, k2, k1 := mustKey(t, h(3)), mustKey(t, h(2)), mustKey(t, h(1))
	k0 := mustKey(t, time.Time{})
	k1.Created = time.Time{}
	keys := []TokenKey{k3, k2, k1, k0}
	ids := func(ks []TokenKey) string {
		var s []string
		for _, k := range ks {
			s = append(s, k.ID)
		}
		return strings.Join(s, ",")
	}
	now := h(3).Add(30 * time.Minute)
	for _, tc := range []struct {
		name          string
		drop          time.Duration
		keep          int
		kept, dropped []TokenKey
	}{
		{"keep all", 0, 0, []TokenKey{k3, k2, k1, k0}, nil},
		// k3 retires now, k2 retired 30 min ago, k1 90 min ago, k0's
		// retirement is unknown (k1 has no time): kept.
		{"older than 1h", time.Hour, 0, []TokenKey{k3, k2, k0}, []TokenKey{k1}},
		{"older than 20m", 20 * time.Minute, 0, []TokenKey{k3, k0}, []TokenKey{k2, k1}},
		{"keep 2", 0, 2, []TokenKey{k3}, []TokenKey{k2, k1, k0}},
		{"keep 1: only the new key", 0, 1, nil, []TokenKey{k3, k2, k1, k0}},
		{"both", 20 * time.Minute, 3, []TokenKey{k3, k0}, []TokenKey{k2, k1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, added, dropped, err := RotateTokenKeys(keys, now, tc.drop, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			if next[0].ID != added.ID || !added.Created.Equal(now) || len(added.Secret) != MinTokenKeyBytes {
				t.Fatalf("new key %+v is not first of %s", added, ids(next))
			}
			if got, want := ids(next[1:]), ids(tc.kept); got != want {
				t.Fatalf("kept %s, want %s", got, want)
			}
			if got, want := ids(dropped), ids(tc.dropped); got != want {
				t.Fatalf("dropped %s, want %s", got, want)
			}
		})
	}
}

func TestImportLegacyTokenKey(t *testing.T) {
	now := tokenEpoch
	secret := bytes.Repeat([]byte{9}, 32)
	keys, added := ImportLegacyTokenKey(nil, secret, now)
	if !added || len(keys) != 1 || !keys[0].Legacy || keys[0].ID != TokenKeyID(secret) {
		t.Fatalf("into nothing: (%+v, %v), want the legacy key alone, signing", keys, added)
	}
	if again, added := ImportLegacyTokenKey(keys, secret, now); added || len(again) != 1 {
		t.Fatalf("again: (%+v, %v), want unchanged", again, added)
	}
	k := mustKey(t, now)
	old := LegacyTokenKey(bytes.Repeat([]byte{3}, 32), now)
	keys, added = ImportLegacyTokenKey([]TokenKey{k, old}, secret, now)
	if !added || len(keys) != 3 || keys[0].ID != k.ID || keys[1].Legacy || !keys[2].Legacy || !bytes.Equal(keys[2].Secret, secret) {
		t.Fatalf("into a set: %+v, want it last, the only legacy key, and the signer unchanged", keys)
	}
	if _, err := NewTokenKeySet(keys); err != nil {
		t.Fatal(err)
	}
	if TokenKeyID(secret) != TokenKeyID(bytes.Clone(secret)) || TokenKeyID(secret) == TokenKeyID(bytes.Repeat([]byte{3}, 32)) {
		t.Fatal("TokenKeyID is not a function of the key")
	}
}
