package e2ee

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by Device are wrapped with context; test
// for these with errors.Is.
var (
	// ErrClosed is returned by every call on a closed Device.
	ErrClosed = errors.New("e2ee: device closed")

	// ErrNoSession: Encrypt was called without a bundle for a device we
	// have no session with, or a normal (non-prekey) message arrived from a
	// device we have no session with.
	ErrNoSession = errors.New("e2ee: no session with that device")

	// ErrInvalidBundle: a DeviceBundle has a malformed key or signature, or
	// is for another device than the one asked for.
	ErrInvalidBundle = errors.New("e2ee: invalid key bundle")

	// ErrBadSignature: the bundle's signed prekey is not signed by the
	// bundle's identity key (forged or swapped signed prekey). It is
	// always wrapped together with ErrInvalidBundle.
	ErrBadSignature = errors.New("e2ee: signed prekey signature does not verify against the identity key")

	// ErrInvalidMessage: a ciphertext (1:1, group or sender key
	// distribution) could not be parsed, authenticated or decrypted:
	// tampering, garbage, a replay, or a prekey message naming a one-time
	// prekey that was already consumed. The underlying libsignal error, if
	// any, is wrapped too.
	ErrInvalidMessage = errors.New("e2ee: invalid or undecryptable message")

	// ErrNoSenderKey: GroupDecrypt has no sender key for that sender in
	// that group and epoch, e.g. because this device was not given the
	// epoch's distribution (it was removed from the group).
	ErrNoSenderKey = errors.New("e2ee: no sender key for that sender, group and epoch")

	// ErrEpochTooOld: a sender key for an epoch older than the retained
	// window (see MaxEpochsPerGroup) was offered.
	ErrEpochTooOld = errors.New("e2ee: group epoch too old")

	// ErrOwnAddress: the call names this device itself as the peer.
	ErrOwnAddress = errors.New("e2ee: peer address is this device itself")
)

// IdentityChange describes a remote device whose identity key differs from
// the one this Device had stored for it (trust on first use was broken):
// the peer re-installed, or someone (e.g. the key directory) is substituting
// keys. Applications show it as "safety number changed".
type IdentityChange struct {
	UserID   string
	DeviceID uint32
	Old      []byte // 33-byte serialized identity key stored before
	New      []byte // 33-byte serialized identity key now presented
}

// IdentityChangedError is returned when the handler installed with
// SetIdentityChangeHandler rejected an identity change; the operation was
// rolled back and nothing was stored.
type IdentityChangedError struct {
	Change IdentityChange
	Err    error // what the handler returned
}

func (e *IdentityChangedError) Error() string {
	return fmt.Sprintf("e2ee: identity key of %s.%d changed and was rejected: %v",
		e.Change.UserID, e.Change.DeviceID, e.Err)
}

func (e *IdentityChangedError) Unwrap() error { return e.Err }
