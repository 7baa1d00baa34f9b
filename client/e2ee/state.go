package e2ee

import "maps"

// address names one remote device.
type address struct {
	user   string
	device uint32
}

// senderKeyID names one sender key: the sender's chain in one group epoch.
type senderKeyID struct {
	group  string
	epoch  uint64
	sender address
}

// state is everything a Device knows. Records are kept as libsignal's own
// serialized bytes and are never modified in place, so a shallow copy of the
// maps (clone) is a snapshot: an operation works on a clone and the clone
// replaces the live state only after it was written to disk. A failed or
// rejected operation therefore leaves neither memory nor file half-changed.
type state struct {
	userID   string
	deviceID uint32

	registrationID  uint32
	identityPublic  [32]byte
	identityPrivate [32]byte

	signedPreKeys       map[uint32][]byte // id -> libsignal SignedPreKey record
	currentSignedPreKey uint32
	nextSignedPreKeyID  uint32

	preKeys      map[uint32][]byte // id -> libsignal PreKey record; unused one-time prekeys only
	nextPreKeyID uint32
	sessions     map[address][]byte     // libsignal Session record
	identities   map[address][]byte     // 33-byte identity key seen for that device (TOFU)
	senderKeys   map[senderKeyID][]byte // libsignal SenderKey record
	// undistributed: users this device's sender key of a group epoch has
	// not reached (undistributed.go); sorted, never modified in place.
	undistributed map[groupEpoch][]string
}

func newState(userID string, deviceID uint32) *state {
	return &state{
		userID:        userID,
		deviceID:      deviceID,
		signedPreKeys: map[uint32][]byte{},
		preKeys:       map[uint32][]byte{},
		sessions:      map[address][]byte{},
		identities:    map[address][]byte{},
		senderKeys:    map[senderKeyID][]byte{},
		undistributed: map[groupEpoch][]string{},
	}
}

func (s *state) clone() *state {
	c := *s
	c.signedPreKeys = maps.Clone(s.signedPreKeys)
	c.preKeys = maps.Clone(s.preKeys)
	c.sessions = maps.Clone(s.sessions)
	c.identities = maps.Clone(s.identities)
	c.senderKeys = maps.Clone(s.senderKeys)
	c.undistributed = maps.Clone(s.undistributed)
	return &c
}

func (s *state) self() address { return address{s.userID, s.deviceID} }
