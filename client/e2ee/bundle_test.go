package e2ee

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/courierpb"
)

// TestVerifyBundle: genuine bundles pass; forged or swapped signed
// prekeys and malformed keys are rejected by VerifyBundle and by Encrypt,
// and a rejected Encrypt leaves no session behind.
func TestVerifyBundle(t *testing.T) {
	keys, dir := newDirectory(), t.TempDir()
	alice := newPublishedDevice(t, keys, dir, "alice", 1)
	bob := newPublishedDevice(t, keys, dir, "bob", 1)
	mallory := newPublishedDevice(t, keys, dir, "mallory", 1)
	good := keys.bundle(t, bob)
	evil := keys.bundle(t, mallory)

	edit := func(f func(b *courierpb.DeviceBundle)) *courierpb.DeviceBundle {
		b := proto.Clone(good).(*courierpb.DeviceBundle)
		f(b)
		return b
	}
	cases := []struct {
		name   string
		bundle *courierpb.DeviceBundle
		want   error // nil: valid
	}{
		{"genuine", good, nil},
		{"genuine without one-time prekey", edit(func(b *courierpb.DeviceBundle) { b.OneTimePrekey, b.OneTimePrekeyId = nil, 0 }), nil},
		{"forged signature (bit flip)", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekeySignature = flipped(b.SignedPrekeySignature, 10, 0x04) }), ErrBadSignature},
		{"forged signature (zeros)", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekeySignature = make([]byte, 64) }), ErrBadSignature},
		{"signed prekey swapped for attacker's", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekey = evil.SignedPrekey }), ErrBadSignature},
		{"attacker's signed prekey with its own signature", edit(func(b *courierpb.DeviceBundle) {
			b.SignedPrekey, b.SignedPrekeySignature = evil.SignedPrekey, evil.SignedPrekeySignature
		}), ErrBadSignature},
		{"identity key swapped", edit(func(b *courierpb.DeviceBundle) { b.IdentityKey = evil.IdentityKey }), ErrBadSignature},
		{"signed prekey bit flip", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekey = flipped(b.SignedPrekey, 20, 0x01) }), ErrBadSignature},
		{"identity key too short", edit(func(b *courierpb.DeviceBundle) { b.IdentityKey = b.IdentityKey[:32] }), ErrInvalidBundle},
		{"identity key missing", edit(func(b *courierpb.DeviceBundle) { b.IdentityKey = nil }), ErrInvalidBundle},
		{"identity key wrong type byte", edit(func(b *courierpb.DeviceBundle) { b.IdentityKey = flipped(b.IdentityKey, 0, 0x01) }), ErrInvalidBundle},
		{"signed prekey too long", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekey = append(bytes.Clone(b.SignedPrekey), 0) }), ErrInvalidBundle},
		{"signature too short", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekeySignature = b.SignedPrekeySignature[:63] }), ErrInvalidBundle},
		{"signature missing", edit(func(b *courierpb.DeviceBundle) { b.SignedPrekeySignature = nil }), ErrInvalidBundle},
		{"one-time prekey malformed", edit(func(b *courierpb.DeviceBundle) { b.OneTimePrekey = b.OneTimePrekey[1:] }), ErrInvalidBundle},
		{"nil", nil, ErrInvalidBundle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyBundle(tc.bundle)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("VerifyBundle: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidBundle) {
				t.Fatalf("VerifyBundle: %v, want %v", err, tc.want)
			}
			wantEnc := tc.want
			if tc.bundle == nil {
				wantEnc = ErrNoSession // no bundle at all: nothing to verify
			}
			if _, err := alice.Encrypt("bob", 1, tc.bundle, []byte("x")); !errors.Is(err, wantEnc) {
				t.Fatalf("Encrypt with bad bundle: %v, want %v", err, wantEnc)
			}
			if alice.HasSession("bob", 1) {
				t.Fatal("Encrypt with a bad bundle created a session")
			}
			if _, ok := alice.RemoteIdentity("bob", 1); ok {
				t.Fatal("Encrypt with a bad bundle stored an identity")
			}
		})
	}
	// The genuine bundle still works after all that.
	ct, err := alice.Encrypt("bob", 1, good, []byte("real"))
	if err != nil {
		t.Fatal(err)
	}
	mustDecrypt(t, bob, alice, ct, []byte("real"))
}
