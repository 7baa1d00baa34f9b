package e2ee

import (
	"fmt"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/util/optional"

	"github.com/courier-im/courier/protos/courierpb"
)

const (
	publicKeyLen = 33 // 0x05 type byte + 32-byte Curve25519 key
	signatureLen = 64 // XEdDSA
)

// decodePublicKey parses a libsignal-serialized Curve25519 public key. It
// checks the length itself because libsignal's DecodePoint indexes into the
// slice without doing so.
func decodePublicKey(what string, b []byte) (ecc.ECPublicKeyable, error) {
	if len(b) != publicKeyLen {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d", ErrInvalidBundle, what, len(b), publicKeyLen)
	}
	if b[0] != ecc.DjbType {
		return nil, fmt.Errorf("%w: %s has key type 0x%02x, want 0x%02x", ErrInvalidBundle, what, b[0], ecc.DjbType)
	}
	k, err := ecc.DecodePoint(b, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidBundle, what, err)
	}
	return k, nil
}

// VerifyBundle checks a bundle from the key directory: every key is a
// well-formed Curve25519 public key and the signed prekey carries a valid
// XEdDSA signature by the bundle's identity key. A forged signature or a
// swapped signed prekey fails with an error wrapping both ErrInvalidBundle
// and ErrBadSignature.
//
// It cannot tell whether the identity key itself is the peer's: that is
// what trust on first use and the identity change handler are for.
func VerifyBundle(b *courierpb.DeviceBundle) error {
	_, err := parseBundle(b)
	return err
}

// parseBundle verifies b and converts it to libsignal's bundle type.
func parseBundle(b *courierpb.DeviceBundle) (*prekey.Bundle, error) {
	if b == nil {
		return nil, fmt.Errorf("%w: nil bundle", ErrInvalidBundle)
	}
	ik, err := decodePublicKey("identity key", b.GetIdentityKey())
	if err != nil {
		return nil, err
	}
	spk, err := decodePublicKey("signed prekey", b.GetSignedPrekey())
	if err != nil {
		return nil, err
	}
	rawSig := b.GetSignedPrekeySignature()
	if len(rawSig) != signatureLen {
		return nil, fmt.Errorf("%w: signed prekey signature is %d bytes, want %d", ErrInvalidBundle, len(rawSig), signatureLen)
	}
	sig := [signatureLen]byte(rawSig)
	if !ecc.VerifySignature(ik, b.GetSignedPrekey(), sig) {
		return nil, fmt.Errorf("%w: %w (signed prekey %d)", ErrInvalidBundle, ErrBadSignature, b.GetSignedPrekeyId())
	}
	// The one-time prekey is optional: the server sends none when the
	// device's pool ran dry, and X3DH then runs without it.
	otpkID := optional.NewEmptyUint32()
	var otpk ecc.ECPublicKeyable
	if len(b.GetOneTimePrekey()) > 0 {
		if otpk, err = decodePublicKey("one-time prekey", b.GetOneTimePrekey()); err != nil {
			return nil, err
		}
		otpkID = optional.NewOptionalUint32(b.GetOneTimePrekeyId())
	}
	return prekey.NewBundle(b.GetRegistrationId(), b.GetDeviceId(), otpkID, b.GetSignedPrekeyId(),
		otpk, spk, sig, identity.NewKey(ik)), nil
}
