package e2ee

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"go.mau.fi/libsignal/ecc"
	groupRecord "go.mau.fi/libsignal/groups/state/record"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/state/store"
)

// serializer encodes wire messages as protobuf (Signal's own format) and
// records as JSON; it is stateless and safe to share.
var serializer = serialize.NewProtoBufSerializer()

// txn is one operation's view of the device state. It implements the
// libsignal store interfaces on top of a cloned state; every load
// deserializes a fresh record, so a record that libsignal mutated while
// trying (and failing) to decrypt never leaks into the stored state.
type txn struct {
	st      *state
	dirty   bool
	changes []IdentityChange
}

var _ store.SignalProtocol = (*txn)(nil)

func newTxn(st *state) *txn { return &txn{st: st} }

func addrOf(a *protocol.SignalAddress) address { return address{a.Name(), a.DeviceID()} }

func (t *txn) identityKeyPair() *identity.KeyPair {
	pub := identity.NewKey(ecc.NewDjbECPublicKey(t.st.identityPublic))
	return identity.NewKeyPair(pub, ecc.NewDjbECPrivateKey(t.st.identityPrivate))
}

// --- store.IdentityKey ---

func (t *txn) GetIdentityKeyPair() *identity.KeyPair { return t.identityKeyPair() }

func (t *txn) GetLocalRegistrationID() uint32 { return t.st.registrationID }

func (t *txn) SaveIdentity(_ context.Context, a *protocol.SignalAddress, k *identity.Key) error {
	key := k.Serialize()
	if bytes.Equal(t.st.identities[addrOf(a)], key) {
		return nil
	}
	t.st.identities[addrOf(a)] = key
	t.dirty = true
	return nil
}

// IsTrustedIdentity implements the package's trust policy: trust on first
// use, and a changed key is trusted too (the peer most likely re-installed)
// but recorded, so the Device can report it and let the application veto
// it before anything is stored. See doc.go.
func (t *txn) IsTrustedIdentity(_ context.Context, a *protocol.SignalAddress, k *identity.Key) (bool, error) {
	old, ok := t.st.identities[addrOf(a)]
	key := k.Serialize()
	if ok && !bytes.Equal(old, key) {
		t.noteChange(IdentityChange{UserID: a.Name(), DeviceID: a.DeviceID(), Old: old, New: key})
	}
	return true, nil
}

func (t *txn) noteChange(c IdentityChange) {
	for _, p := range t.changes {
		if p.UserID == c.UserID && p.DeviceID == c.DeviceID && bytes.Equal(p.New, c.New) {
			return
		}
	}
	t.changes = append(t.changes, c)
}

// --- store.PreKey ---

// recordKeyPair rebuilds the key pair of a stored (signed) prekey record.
// libsignal v0.2.0's NewPreKeyFromBytes and NewSignedPreKeyFromBytes copy
// the 33-byte serialized public key (0x05 type byte first) into a 32-byte
// array, so a reloaded record has a corrupted public key: the key we would
// upload and the ratchet key a responder first advertises. We therefore
// parse the record structure ourselves, derive the public key from the
// private one and check it against the stored one.
func recordKeyPair(public, private []byte) (*ecc.ECKeyPair, error) {
	if len(private) != 32 {
		return nil, fmt.Errorf("private key is %d bytes, want 32", len(private))
	}
	kp := ecc.CreateKeyPair(private)
	if !bytes.Equal(kp.PublicKey().Serialize(), public) {
		return nil, fmt.Errorf("stored public key does not match the private key")
	}
	return kp, nil
}

func (t *txn) LoadPreKey(_ context.Context, id uint32) (*record.PreKey, error) {
	b, ok := t.st.preKeys[id]
	if !ok {
		return nil, nil // libsignal turns nil into ErrNoOneTimeKeyFound
	}
	s, err := serializer.PreKeyRecord.Deserialize(b)
	if err != nil {
		return nil, fmt.Errorf("load one-time prekey %d: %w", id, err)
	}
	kp, err := recordKeyPair(s.PublicKey, s.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("load one-time prekey %d: %w", id, err)
	}
	return record.NewPreKey(s.ID, kp, serializer.PreKeyRecord), nil
}

func (t *txn) StorePreKey(_ context.Context, id uint32, r *record.PreKey) error {
	t.st.preKeys[id] = r.Serialize()
	t.dirty = true
	return nil
}

func (t *txn) ContainsPreKey(_ context.Context, id uint32) (bool, error) {
	_, ok := t.st.preKeys[id]
	return ok, nil
}

func (t *txn) RemovePreKey(_ context.Context, id uint32) error {
	delete(t.st.preKeys, id)
	t.dirty = true
	return nil
}

// --- store.SignedPreKey ---

func (t *txn) LoadSignedPreKey(_ context.Context, id uint32) (*record.SignedPreKey, error) {
	b, ok := t.st.signedPreKeys[id]
	if !ok {
		return nil, nil // libsignal turns nil into ErrNoSignedPreKey
	}
	s, err := serializer.SignedPreKeyRecord.Deserialize(b)
	if err != nil {
		return nil, fmt.Errorf("load signed prekey %d: %w", id, err)
	}
	kp, err := recordKeyPair(s.PublicKey, s.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("load signed prekey %d: %w", id, err)
	}
	if len(s.Signature) != signatureLen {
		return nil, fmt.Errorf("load signed prekey %d: signature is %d bytes", id, len(s.Signature))
	}
	return record.NewSignedPreKey(s.ID, s.Timestamp, kp, [signatureLen]byte(s.Signature), serializer.SignedPreKeyRecord), nil
}

func (t *txn) LoadSignedPreKeys(ctx context.Context) ([]*record.SignedPreKey, error) {
	var out []*record.SignedPreKey
	for id := range t.st.signedPreKeys {
		r, err := t.LoadSignedPreKey(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (t *txn) StoreSignedPreKey(_ context.Context, id uint32, r *record.SignedPreKey) error {
	t.st.signedPreKeys[id] = r.Serialize()
	t.dirty = true
	return nil
}

func (t *txn) ContainsSignedPreKey(_ context.Context, id uint32) (bool, error) {
	_, ok := t.st.signedPreKeys[id]
	return ok, nil
}

func (t *txn) RemoveSignedPreKey(_ context.Context, id uint32) error {
	delete(t.st.signedPreKeys, id)
	t.dirty = true
	return nil
}

// --- store.Session ---

// LoadSession returns a fresh, empty record when there is none, as
// libsignal expects.
func (t *txn) LoadSession(_ context.Context, a *protocol.SignalAddress) (*record.Session, error) {
	b, ok := t.st.sessions[addrOf(a)]
	if !ok {
		return record.NewSession(serializer.Session, serializer.State), nil
	}
	r, err := record.NewSessionFromBytes(b, serializer.Session, serializer.State)
	if err != nil {
		return nil, fmt.Errorf("load session %s: %w", a, err)
	}
	return r, nil
}

func (t *txn) GetSubDeviceSessions(_ context.Context, name string) ([]uint32, error) {
	var out []uint32
	for a := range t.st.sessions {
		if a.user == name {
			out = append(out, a.device)
		}
	}
	return out, nil
}

func (t *txn) StoreSession(_ context.Context, a *protocol.SignalAddress, r *record.Session) error {
	t.st.sessions[addrOf(a)] = r.Serialize()
	t.dirty = true
	return nil
}

func (t *txn) ContainsSession(_ context.Context, a *protocol.SignalAddress) (bool, error) {
	_, ok := t.st.sessions[addrOf(a)]
	return ok, nil
}

func (t *txn) DeleteSession(_ context.Context, a *protocol.SignalAddress) error {
	delete(t.st.sessions, addrOf(a))
	t.dirty = true
	return nil
}

func (t *txn) DeleteAllSessions(context.Context) error {
	clear(t.st.sessions)
	t.dirty = true
	return nil
}

// --- groups store.SenderKey ---

// libsignal names a sender key by a group id string and the sender's
// address. We put the epoch into that string as "<epoch>:<group>"; the
// epoch is all digits, so the first colon separates the two unambiguously
// whatever the group id contains.
func senderKeyName(group string, epoch uint64, sender address) *protocol.SenderKeyName {
	return protocol.NewSenderKeyName(strconv.FormatUint(epoch, 10)+":"+group,
		protocol.NewSignalAddress(sender.user, sender.device))
}

func senderKeyIDOf(n *protocol.SenderKeyName) (senderKeyID, error) {
	e, g, ok := strings.Cut(n.GroupID(), ":")
	epoch, err := strconv.ParseUint(e, 10, 64)
	if !ok || err != nil {
		return senderKeyID{}, fmt.Errorf("malformed sender key name %q", n.GroupID())
	}
	return senderKeyID{group: g, epoch: epoch, sender: addrOf(n.Sender())}, nil
}

// LoadSenderKey returns an empty record when there is none: libsignal's
// group cipher dereferences the result without a nil check.
func (t *txn) LoadSenderKey(_ context.Context, n *protocol.SenderKeyName) (*groupRecord.SenderKey, error) {
	id, err := senderKeyIDOf(n)
	if err != nil {
		return nil, err
	}
	b, ok := t.st.senderKeys[id]
	if !ok {
		return groupRecord.NewSenderKey(serializer.SenderKeyRecord, serializer.SenderKeyState), nil
	}
	r, err := groupRecord.NewSenderKeyFromBytes(b, serializer.SenderKeyRecord, serializer.SenderKeyState)
	if err != nil {
		return nil, fmt.Errorf("load sender key %s/%d from %s.%d: %w", id.group, id.epoch, id.sender.user, id.sender.device, err)
	}
	return r, nil
}

func (t *txn) StoreSenderKey(_ context.Context, n *protocol.SenderKeyName, r *groupRecord.SenderKey) error {
	id, err := senderKeyIDOf(n)
	if err != nil {
		return err
	}
	t.st.senderKeys[id] = r.Serialize()
	t.dirty = true
	return nil
}
