package e2ee

import (
	"bytes"
	"errors"
	"testing"

	"go.mau.fi/libsignal/signalerror"
)

func hasPreKey(d *Device, id uint32) bool {
	var ok bool
	_ = d.view(func(st *state) error { _, ok = st.preKeys[id]; return nil })
	return ok
}

// TestOneTimePrekeyConsumedOnce: the first prekey message naming a one-time
// prekey consumes it; a different X3DH reusing that prekey (the directory
// handed the same bundle out twice) fails, as in libsignal; the original
// sender's later prekey messages (same X3DH) still work and a replayed
// prekey message is rejected.
func TestOneTimePrekeyConsumedOnce(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	carol := newPublishedDevice(t, keys, dir, "carol", 1)
	bob, bobPath := openDevice(t, dir, "bob", 1)
	keys.publish(t, bob, 1)

	shared := keys.bundle(t, bob) // the pool's only one-time prekey
	otpk := shared.OneTimePrekeyId
	if otpk == 0 || !hasPreKey(bob, otpk) {
		t.Fatalf("bundle has one-time prekey %d, bob has it: %v", otpk, hasPreKey(bob, otpk))
	}
	fromAlice, err := alice.Encrypt("bob", 1, shared, []byte("a1"))
	if err != nil {
		t.Fatal(err)
	}
	fromAlice2, err := alice.Encrypt("bob", 1, nil, []byte("a2"))
	if err != nil {
		t.Fatal(err)
	}
	fromCarol, err := carol.Encrypt("bob", 1, shared, []byte("c1"))
	if err != nil {
		t.Fatal(err)
	}

	mustDecrypt(t, bob, alice, fromAlice, []byte("a1"))
	if hasPreKey(bob, otpk) {
		t.Fatal("one-time prekey still stored after its prekey message")
	}
	bob = reopen(t, bob, bobPath)
	if hasPreKey(bob, otpk) {
		t.Fatal("one-time prekey back after reopen")
	}

	_, err = bob.Decrypt("carol", 1, fromCarol)
	if !errors.Is(err, ErrInvalidMessage) || !errors.Is(err, signalerror.ErrNoOneTimeKeyFound) {
		t.Fatalf("second X3DH with a consumed one-time prekey: %v, want ErrInvalidMessage wrapping ErrNoOneTimeKeyFound", err)
	}
	if bob.HasSession("carol", 1) {
		t.Fatal("failed prekey message created a session")
	}
	if _, err := bob.Decrypt("alice", 1, fromAlice); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("replayed prekey message: %v, want ErrInvalidMessage", err)
	}
	// Same X3DH (same base key): no prekey needed any more.
	mustDecrypt(t, bob, alice, fromAlice2, []byte("a2"))
	mustDecrypt(t, alice, bob, send(t, keys, bob, alice, []byte("b1")), []byte("b1"))

	// Carol recovers by starting over from a fresh bundle; the pool is
	// dry, so X3DH runs without a one-time prekey.
	if err := carol.ResetSession("bob", 1); err != nil {
		t.Fatal(err)
	}
	fresh := keys.bundle(t, bob)
	if len(fresh.OneTimePrekey) != 0 {
		t.Fatal("directory should be out of one-time prekeys")
	}
	ct, err := carol.Encrypt("bob", 1, fresh, []byte("c2"))
	if err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, bob, carol, ct, []byte("c2"))
	mustDecrypt(t, carol, bob, send(t, keys, bob, carol, []byte("b2")), []byte("b2"))
}

func TestKeyUpload(t *testing.T) {
	dir := t.TempDir()
	d, path := openDevice(t, dir, "alice", 1)

	seen := map[uint32]bool{}
	var last uint32
	check := func(n int) {
		t.Helper()
		up, err := d.KeyUpload(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(up.OneTimePrekeys) != n {
			t.Fatalf("KeyUpload(%d) returned %d one-time prekeys", n, len(up.OneTimePrekeys))
		}
		if !bytes.Equal(up.IdentityKey, d.IdentityKey()) || up.RegistrationId != d.RegistrationID() ||
			up.RegistrationId == 0 || up.RegistrationId > 16380 {
			t.Fatal("upload identity or registration id wrong")
		}
		if err := VerifyBundle(bundleFrom(up, 1, nil)); err != nil {
			t.Fatalf("own upload does not verify: %v", err)
		}
		for _, k := range up.OneTimePrekeys {
			if k.Id <= last || seen[k.Id] {
				t.Fatalf("one-time prekey id %d reused or not increasing (last %d)", k.Id, last)
			}
			if len(k.PublicKey) != publicKeyLen || k.PublicKey[0] != 0x05 {
				t.Fatalf("one-time prekey %d malformed", k.Id)
			}
			if !hasPreKey(d, k.Id) {
				t.Fatalf("one-time prekey %d not stored", k.Id)
			}
			seen[k.Id], last = true, k.Id
		}
	}
	check(3)
	check(0)
	check(10)
	d = reopen(t, d, path)
	check(4)
	for _, n := range []int{-1, MaxOneTimePrekeysPerUpload + 1} {
		if _, err := d.KeyUpload(n); err == nil {
			t.Fatalf("KeyUpload(%d) succeeded", n)
		}
	}
}

// TestRotateSignedPrekey: a prekey message built from a bundle fetched
// before a rotation still works while its signed prekey is kept.
func TestRotateSignedPrekey(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	old := keys.bundle(t, bob)
	older := keys.bundle(t, bob)

	for i := range keptSignedPrekeys - 1 {
		if err := bob.RotateSignedPrekey(); err != nil {
			t.Fatal(err)
		}
		up, err := bob.KeyUpload(0)
		if err != nil {
			t.Fatal(err)
		}
		if want := old.SignedPrekeyId + uint32(i) + 1; up.SignedPrekeyId != want {
			t.Fatalf("signed prekey id %d after rotation, want %d", up.SignedPrekeyId, want)
		}
	}
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	ct, err := alice.Encrypt("bob", 1, old, []byte("in flight"))
	if err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, bob, alice, ct, []byte("in flight"))

	// One more rotation drops the signed prekey of the old bundles.
	if err := bob.RotateSignedPrekey(); err != nil {
		t.Fatal(err)
	}
	carol := newPublishedDevice(t, keys, dir, "carol", 1)
	ct, err = carol.Encrypt("bob", 1, older, []byte("too late"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Decrypt("carol", 1, ct); !errors.Is(err, signalerror.ErrNoSignedPreKey) {
		t.Fatalf("prekey message for a dropped signed prekey: %v, want ErrNoSignedPreKey", err)
	}
}
