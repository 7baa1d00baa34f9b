package e2ee

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// fileFormatVersion is bumped on incompatible changes of the file layout.
const fileFormatVersion = 1

// fileState is the on-disk form of state: one JSON document per device.
// libsignal records are embedded as the JSON libsignal's serializer
// produces (json.RawMessage), so the file is inspectable and the records
// round-trip byte for byte. Lists are sorted so the same state always
// yields the same file.
type fileState struct {
	Format              int              `json:"format"`
	UserID              string           `json:"user_id"`
	DeviceID            uint32           `json:"device_id"`
	RegistrationID      uint32           `json:"registration_id"`
	IdentityPublic      []byte           `json:"identity_public"`
	IdentityPrivate     []byte           `json:"identity_private"`
	CurrentSignedPreKey uint32           `json:"current_signed_prekey"`
	NextSignedPreKeyID  uint32           `json:"next_signed_prekey_id"`
	NextPreKeyID        uint32           `json:"next_prekey_id"`
	SignedPreKeys       []fileKeyRecord  `json:"signed_prekeys"`
	PreKeys             []fileKeyRecord  `json:"prekeys"`
	Sessions            []fileAddrRecord `json:"sessions"`
	Identities          []fileIdentity   `json:"identities"`
	SenderKeys          []fileSenderKey  `json:"sender_keys"`
	// Undistributed is absent from files written before it existed.
	Undistributed []fileUndistributed `json:"undistributed,omitempty"`
}

type fileUndistributed struct {
	Group string   `json:"group"`
	Epoch uint64   `json:"epoch"`
	Users []string `json:"users"`
}

type fileKeyRecord struct {
	ID     uint32          `json:"id"`
	Record json.RawMessage `json:"record"`
}

type fileAddrRecord struct {
	User   string          `json:"user"`
	Device uint32          `json:"device"`
	Record json.RawMessage `json:"record"`
}

type fileIdentity struct {
	User   string `json:"user"`
	Device uint32 `json:"device"`
	Key    []byte `json:"key"`
}

type fileSenderKey struct {
	Group  string          `json:"group"`
	Epoch  uint64          `json:"epoch"`
	User   string          `json:"user"`
	Device uint32          `json:"device"`
	Record json.RawMessage `json:"record"`
}

func cmpAddr(a, b address) int {
	return cmp.Or(cmp.Compare(a.user, b.user), cmp.Compare(a.device, b.device))
}

func (s *state) encode() ([]byte, error) {
	f := fileState{
		Format:              fileFormatVersion,
		UserID:              s.userID,
		DeviceID:            s.deviceID,
		RegistrationID:      s.registrationID,
		IdentityPublic:      s.identityPublic[:],
		IdentityPrivate:     s.identityPrivate[:],
		CurrentSignedPreKey: s.currentSignedPreKey,
		NextSignedPreKeyID:  s.nextSignedPreKeyID,
		NextPreKeyID:        s.nextPreKeyID,
	}
	for _, id := range slices.Sorted(maps.Keys(s.signedPreKeys)) {
		f.SignedPreKeys = append(f.SignedPreKeys, fileKeyRecord{id, s.signedPreKeys[id]})
	}
	for _, id := range slices.Sorted(maps.Keys(s.preKeys)) {
		f.PreKeys = append(f.PreKeys, fileKeyRecord{id, s.preKeys[id]})
	}
	for _, a := range slices.SortedFunc(maps.Keys(s.sessions), cmpAddr) {
		f.Sessions = append(f.Sessions, fileAddrRecord{a.user, a.device, s.sessions[a]})
	}
	for _, a := range slices.SortedFunc(maps.Keys(s.identities), cmpAddr) {
		f.Identities = append(f.Identities, fileIdentity{a.user, a.device, s.identities[a]})
	}
	skIDs := slices.SortedFunc(maps.Keys(s.senderKeys), func(a, b senderKeyID) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.epoch, b.epoch), cmpAddr(a.sender, b.sender))
	})
	for _, k := range skIDs {
		f.SenderKeys = append(f.SenderKeys, fileSenderKey{k.group, k.epoch, k.sender.user, k.sender.device, s.senderKeys[k]})
	}
	ges := slices.SortedFunc(maps.Keys(s.undistributed), func(a, b groupEpoch) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.epoch, b.epoch))
	})
	for _, k := range ges {
		f.Undistributed = append(f.Undistributed, fileUndistributed{k.group, k.epoch, s.undistributed[k]})
	}
	return json.Marshal(&f)
}

func decodeState(b []byte) (*state, error) {
	var f fileState
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if f.Format != fileFormatVersion {
		return nil, fmt.Errorf("unsupported format version %d (want %d)", f.Format, fileFormatVersion)
	}
	if len(f.IdentityPublic) != 32 || len(f.IdentityPrivate) != 32 {
		return nil, errors.New("identity key pair missing or malformed")
	}
	s := newState(f.UserID, f.DeviceID)
	s.registrationID = f.RegistrationID
	copy(s.identityPublic[:], f.IdentityPublic)
	copy(s.identityPrivate[:], f.IdentityPrivate)
	s.currentSignedPreKey = f.CurrentSignedPreKey
	s.nextSignedPreKeyID = f.NextSignedPreKeyID
	s.nextPreKeyID = f.NextPreKeyID
	for _, r := range f.SignedPreKeys {
		s.signedPreKeys[r.ID] = r.Record
	}
	if _, ok := s.signedPreKeys[s.currentSignedPreKey]; !ok {
		return nil, fmt.Errorf("current signed prekey %d missing", s.currentSignedPreKey)
	}
	for _, r := range f.PreKeys {
		s.preKeys[r.ID] = r.Record
	}
	for _, r := range f.Sessions {
		s.sessions[address{r.User, r.Device}] = r.Record
	}
	for _, r := range f.Identities {
		s.identities[address{r.User, r.Device}] = r.Key
	}
	for _, r := range f.SenderKeys {
		s.senderKeys[senderKeyID{r.Group, r.Epoch, address{r.User, r.Device}}] = r.Record
	}
	for _, r := range f.Undistributed {
		if len(r.Users) > 0 {
			s.undistributed[groupEpoch{r.Group, r.Epoch}] = r.Users
		}
	}
	return s, nil
}

// loadState reads the device file; it returns (nil, nil) when there is none.
func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s, err := decodeState(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// saveState replaces the device file atomically: a crash leaves either the
// old or the new file, never a torn one. The temp file is created 0600 in the
// same directory (rename is only atomic within a file system) and synced
// before the rename; the directory is synced after it so the rename itself
// survives a power loss.
func saveState(path string, s *state) (err error) {
	b, err := s.encode()
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err = tmp.Write(b); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
