// Package e2ee is the client side of Courier's end-to-end encryption: the
// Signal protocol (X3DH, Double Ratchet, sender keys) on go.mau.fi/libsignal
// v0.2.0. The server only relays what this package produces and hands out
// public keys (protos/wire.proto, "Key directory"); it never sees a private
// key or a plaintext.
//
//	dev, _ := e2ee.Open(path, "alice", 1)     // creates the identity on first use
//	up, _ := dev.KeyUpload(100)               // PUT /v1/keys
//	ct, _ := dev.Encrypt("bob", 1, bundle, m) // bundle from GET /v1/keys/bob; nil once a session exists
//	m, _ = dev.Decrypt("alice", 1, ct)        // on the receiving device
//
// # What is stored where
//
// Everything a device knows lives in one JSON file per device, opened with
// Open: the identity key pair and registration id, the signed prekeys (the
// current one and the two before it), the unused one-time prekeys, one
// session record per remote device (with up to 40 archived states and the
// keys of skipped messages, as libsignal keeps them), the identity key seen
// for each remote device, and the sender keys of the group epochs kept. The
// libsignal records are embedded as libsignal's own JSON. Every call that
// changes state works on a copy and writes the whole file before it returns
// (temp file, fsync, rename, fsync of the directory; mode 0600), and only
// then replaces the in-memory state: a failed, rejected or crashed call
// leaves the previous state on disk and in memory. Plaintexts are never
// stored. The file holds private keys unencrypted: protect it like any
// other credential (file permissions, disk encryption). Rewriting the whole
// file per call is fine for a client's few hundred sessions; a device with
// far more would want a per-record store.
//
// # Message format
//
// Every byte string this package returns starts with one type byte, using
// libsignal's own type numbers:
//
//	2  normal Double Ratchet message (needs a session)
//	3  prekey message: X3DH setup plus the first ratchet message
//	4  group message under a sender key (GroupEncrypt)
//	5  sender key distribution message (GroupEncrypt, GroupDistribution)
//
// The rest is libsignal's protobuf serialization (version byte 0x33,
// protobuf, then an 8-byte MAC or a 64-byte signature). libsignal v0.2.0
// authenticates its own re-serialization of the parsed fields rather than
// the received bytes, so Decrypt and GroupDecrypt additionally require the
// bytes to be canonical: any modified byte makes a message fail with
// ErrInvalidMessage. The one field Signal leaves unauthenticated in every
// implementation is a prekey message's registration id; it is not used
// here. Malformed input can make libsignal panic (it indexes into
// attacker-controlled slices); such panics are recovered and returned as
// ErrInvalidMessage.
//
// # Sessions and one-time prekeys
//
// Encrypt without a session verifies the bundle (VerifyBundle: key
// encodings, XEdDSA signature of the signed prekey by the identity key),
// runs X3DH and sends prekey messages until the peer's first reply arrives.
// A bundle without a one-time prekey (the pool ran dry) is accepted; X3DH
// then runs without it.
//
// One-time prekey ids start at 1 (libsignal's wire format treats 0 as "no
// prekey") and only grow: an id is never reused, even after its key was
// consumed. The first prekey message naming a one-time prekey consumes it:
// the private key is deleted in the same write that stores the new session.
// Later prekey messages of the same X3DH (same base key, sent before the
// first reply) decrypt with that session. A different X3DH naming an
// already consumed one-time prekey (the directory handed the same key out
// twice) fails, as in libsignal, with ErrInvalidMessage wrapping
// signalerror.ErrNoOneTimeKeyFound; the sender must ResetSession and start
// over from a fresh bundle. A replayed prekey message fails as a duplicate.
//
// RotateSignedPrekey makes a new signed prekey current; the two previous
// ones keep working for prekey messages built from older bundles.
//
// # Trust
//
// Identity keys are trusted on first use: the first identity key seen for a
// remote device (in a bundle or a prekey message) is stored. When a later
// bundle or prekey message carries a different identity key for the same
// device (the peer re-installed, or someone substitutes keys), the change
// is accepted by default, as Signal does, because a re-install is by far the
// common case; but it is reported to the handler installed with
// SetIdentityChangeHandler, before anything is stored. The handler can
// accept (show "safety number changed") or reject it, which rolls the call
// back and returns an *IdentityChangedError. Nothing protects the first
// contact from a key directory that lies; comparing IdentityKey and
// RemoteIdentity out of band does. ResetSession drops a session but keeps
// the stored identity, so re-registering with a new identity is still
// reported.
//
// # Groups, sender keys and epochs
//
// A group message is encrypted once with the sender's sender key and
// signed with the key's private signing key, so members can read it but not
// forge another member's messages. A device keeps one sender key per
// (group, epoch). The caller bumps the epoch whenever membership changes;
// the first GroupEncrypt in an epoch creates a new sender key and returns
// its distribution message, which the caller sends to every device of the
// epoch's members over the pairwise sessions (Encrypt) and each of them
// passes to ProcessDistribution. A device that was removed never gets the
// new epoch's keys, so GroupDecrypt fails for it with ErrNoSenderKey. The
// pairwise session is what authenticates a distribution; membership itself
// (who is in an epoch) is the caller's decision. Sender keys of a group's
// newest MaxEpochsPerGroup epochs are kept, so messages sent just before a
// change still decrypt; older ones are deleted. GroupDistribution hands out
// the current chain position of an epoch's key to a device that joins
// mid-epoch: it can read messages from that point on.
//
// # libsignal quirks handled here
//
// Besides the canonical-encoding check and the recovered panics: its
// default logger prints to stdout and is installed without
// synchronization, so this package installs a silent one at init unless
// the program set its own; reloaded prekey records get a corrupted public
// key (the 0x05 type byte copied into the key), so they are rebuilt from
// the private key; a sender key message must be sent with SignedSerialize,
// as Serialize drops the signature.
package e2ee
