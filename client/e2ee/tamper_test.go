package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// unauthenticatedRange returns the byte range [from, to) of a framed
// prekey message holding the registration id's value. Signal's prekey
// message does not authenticate that field (in any implementation: it is
// neither MAC'd nor an input of X3DH), and this package never uses it, so a
// change there is the one modification that can go unnoticed.
func unauthenticatedRange(t *testing.T, framed []byte) (int, int) {
	t.Helper()
	const skip = 2 // type byte, version byte
	b := framed[skip:]
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			t.Fatalf("prekey message does not parse at %d", off)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if m < 0 {
			t.Fatalf("prekey message field %d does not parse", num)
		}
		if num == 5 { // registrationId
			return skip + off + n, skip + off + n + m
		}
		off += n + m
	}
	t.Fatal("prekey message has no registration id")
	return 0, 0
}

func flipped(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	c[i] ^= mask
	return c
}

// TestTamperedCiphertext flips every byte (two ways) of a prekey message,
// a normal message and a group message, and truncates each at every
// length: all must fail without a panic and without touching the state, so
// the genuine message still decrypts afterwards.
func TestTamperedCiphertext(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)

	prekeyMsg := send(t, keys, alice, bob, []byte("hello bob"))
	regFrom, regTo := unauthenticatedRange(t, prekeyMsg)

	tryAll := func(t *testing.T, genuine []byte, skip func(int) bool, attempt func([]byte) error) {
		t.Helper()
		var variants [][]byte
		for i := range genuine {
			if skip(i) {
				continue
			}
			variants = append(variants, flipped(genuine, i, 0x01), flipped(genuine, i, 0xff))
		}
		for n := range len(genuine) {
			variants = append(variants, genuine[:n])
		}
		for _, v := range variants {
			err := attempt(v)
			if err == nil {
				t.Fatalf("tampered message %x accepted", v)
			}
			// The type byte itself may turn a prekey message into
			// a "normal message without session".
			if !errors.Is(err, ErrInvalidMessage) && !errors.Is(err, ErrNoSession) && !errors.Is(err, ErrNoSenderKey) {
				t.Fatalf("tampered message: error %v is not ErrInvalidMessage", err)
			}
		}
	}
	never := func(int) bool { return false }

	t.Run("prekey message", func(t *testing.T) {
		tryAll(t, prekeyMsg, func(i int) bool { return i >= regFrom && i < regTo }, func(v []byte) error {
			_, err := bob.Decrypt("alice", 1, v)
			return err
		})
		if bob.HasSession("alice", 1) {
			t.Fatal("a rejected prekey message left a session behind")
		}
		mustDecrypt(t, bob, alice, prekeyMsg, []byte("hello bob"))
	})

	normal := send(t, keys, bob, alice, []byte("hello alice"))
	if normal[0] != typeSignal {
		t.Fatalf("reply has type %d, want normal", normal[0])
	}
	t.Run("normal message", func(t *testing.T) {
		tryAll(t, normal, never, func(v []byte) error {
			_, err := alice.Decrypt("bob", 1, v)
			return err
		})
		mustDecrypt(t, alice, bob, normal, []byte("hello alice"))
		mustDecrypt(t, bob, alice, send(t, keys, alice, bob, []byte("still ok")), []byte("still ok"))
	})

	t.Run("group message", func(t *testing.T) {
		ct, dist, err := alice.GroupEncrypt("g", 1, []byte("hello group"))
		if err != nil {
			t.Fatal(err)
		}
		if err := bob.ProcessDistribution("g", 1, "alice", 1, dist); err != nil {
			t.Fatal(err)
		}
		tryAll(t, ct, never, func(v []byte) error {
			_, err := bob.GroupDecrypt("g", 1, "alice", 1, v)
			return err
		})
		got, err := bob.GroupDecrypt("g", 1, "alice", 1, ct)
		if err != nil || string(got) != "hello group" {
			t.Fatalf("genuine group message after tampering: %q, %v", got, err)
		}
	})
}

// TestGarbageInput feeds malformed input to every function that parses
// peer bytes; each must return an error, never panic.
func TestGarbageInput(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, []byte("x")), []byte("x"))
	_, dist, err := alice.GroupEncrypt("g", 1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.ProcessDistribution("g", 1, "alice", 1, dist); err != nil {
		t.Fatal(err)
	}

	mac := bytes.Repeat([]byte{0xAA}, 8)
	inputs := map[string][]byte{
		"nil":         nil,
		"empty":       {},
		"type only 2": {typeSignal}, "type only 3": {typePreKey},
		"type only 4": {typeSenderKey}, "type only 5": {typeDistribution},
		"unknown type":   {0x7f, 0x33, 1, 2, 3},
		"version only":   {typeSignal, 0x33},
		"future version": append([]byte{typeSignal, 0x43}, mac...),
		// A present but empty ratchet key: libsignal indexes byte 0.
		"empty ratchet key": append([]byte{typeSignal, 0x33, 0x0a, 0x00, 0x22, 0x01, 0x00}, mac...),
		"empty base key":    {typePreKey, 0x33, 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00},
		"empty signing key": {typeDistribution, 0x33, 0x08, 0x01, 0x1a, 0x01, 0x00, 0x22, 0x00},
		"short group":       {typeSenderKey, 0x33, 0x08, 0x01},
	}
	for _, n := range []int{1, 2, 8, 33, 64, 65, 100, 300} {
		for _, tb := range []byte{typeSignal, typePreKey, typeSenderKey, typeDistribution} {
			inputs[fmt.Sprintf("type %d + %d random bytes", tb, n)] = append([]byte{tb, 0x33}, randomBytes(t, n)...)
		}
	}
	calls := map[string]func([]byte) error{
		"Decrypt": func(b []byte) error { _, err := bob.Decrypt("alice", 1, b); return err },
		"Decrypt unknown sender": func(b []byte) error {
			_, err := bob.Decrypt("nobody", 9, b)
			return err
		},
		"GroupDecrypt":        func(b []byte) error { _, err := bob.GroupDecrypt("g", 1, "alice", 1, b); return err },
		"ProcessDistribution": func(b []byte) error { return bob.ProcessDistribution("g", 2, "alice", 1, b) },
	}
	for cname, call := range calls {
		for iname, in := range inputs {
			if err := call(in); err == nil {
				t.Errorf("%s(%s %x) succeeded", cname, iname, in)
			}
		}
	}
	// Still fine afterwards.
	mustDecrypt(t, bob, alice, send(t, keys, alice, bob, []byte("after")), []byte("after"))
}

// FuzzDecrypt: no input may crash a Device (run with -fuzz to explore;
// plain `go test` runs the seeds).
func FuzzDecrypt(f *testing.F) {
	keys, dir := newDirectory(), f.TempDir()
	alice := newPublishedDevice(f, keys, dir, "alice", 1)
	bob := newPublishedDevice(f, keys, dir, "bob", 1)
	f.Add(send(f, keys, alice, bob, []byte("seed")))
	f.Add(send(f, keys, alice, bob, []byte("seed 2")))
	ct, dist, err := alice.GroupEncrypt("g", 1, []byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ct)
	f.Add(dist)
	f.Add([]byte{typeSignal, 0x33})
	f.Fuzz(func(t *testing.T, in []byte) {
		_, _ = bob.Decrypt("alice", 1, in)
		_ = bob.ProcessDistribution("g", 1, "alice", 1, in)
		_, _ = bob.GroupDecrypt("g", 1, "alice", 1, in)
	})
}
