package e2ee

import (
	"errors"
	"fmt"
	"sync"
)

// Device is one local device's Signal identity and all its protocol state
// (prekeys, 1:1 sessions, remote identities, group sender keys), persisted
// in one file. Every method is safe for concurrent use; calls are
// serialized by a mutex, and every call that changes state has written the
// file before it returns.
//
// Open a given file through one Device at a time: two Devices (or two
// processes) on the same file would overwrite each other's ratchet state.
type Device struct {
	path     string
	userID   string // immutable copies, readable without the lock
	deviceID uint32

	mu       sync.Mutex
	st       *state // live state; replaced, never modified, by update
	closed   bool
	onChange func(IdentityChange) error
}

// Open loads the device state stored at path, or, when the file does not
// exist, creates a fresh identity (identity key pair, registration id, first
// signed prekey) and writes it there before returning, so an identity that
// was handed out is never lost. The file's directory must exist.
// userID and deviceID must match the ones the file was created for.
func Open(path string, userID string, deviceID uint32) (*Device, error) {
	if userID == "" {
		return nil, errors.New("e2ee: open: empty user id")
	}
	st, err := loadState(path)
	if err != nil {
		return nil, fmt.Errorf("e2ee: open %s: %w", path, err)
	}
	if st == nil {
		st, err = newIdentity(userID, deviceID)
		if err != nil {
			return nil, fmt.Errorf("e2ee: open %s: create identity: %w", path, err)
		}
		if err := saveState(path, st); err != nil {
			return nil, fmt.Errorf("e2ee: open %s: write new identity: %w", path, err)
		}
	} else if st.userID != userID || st.deviceID != deviceID {
		return nil, fmt.Errorf("e2ee: open %s: file belongs to %s.%d, not %s.%d",
			path, st.userID, st.deviceID, userID, deviceID)
	}
	return &Device{path: path, userID: userID, deviceID: deviceID, st: st}, nil
}

// Close marks the Device closed; later calls fail with ErrClosed. State is
// already on disk after every call, so Close has nothing to flush.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

// UserID is the user this device belongs to.
func (d *Device) UserID() string { return d.userID }

// DeviceID is this device's number within its user.
func (d *Device) DeviceID() uint32 { return d.deviceID }

// IdentityKey returns this device's public identity key (33 bytes), e.g. to
// show a safety number.
func (d *Device) IdentityKey() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return newTxn(d.st).identityKeyPair().PublicKey().Serialize()
}

// RegistrationID returns this device's Signal registration id.
func (d *Device) RegistrationID() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.registrationID
}

// RemoteIdentity returns the identity key stored (trusted) for a remote
// device, and whether there is one.
func (d *Device) RemoteIdentity(userID string, deviceID uint32) ([]byte, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k, ok := d.st.identities[address{userID, deviceID}]
	return append([]byte(nil), k...), ok
}

// SetIdentityChangeHandler installs fn, called whenever an operation meets
// a remote device whose identity key differs from the stored one (see
// doc.go, "Trust"). fn runs while the Device is locked, before anything is
// stored: returning nil accepts the new key, returning an error rolls the
// operation back and makes it fail with an *IdentityChangedError. fn must
// not call methods of the same Device. Without a handler changes are
// accepted silently.
func (d *Device) SetIdentityChangeHandler(fn func(IdentityChange) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onChange = fn
}

// view runs fn on the live state under the lock, for read-only calls.
func (d *Device) view(fn func(st *state) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	return fn(d.st)
}

// update runs fn as a transaction: on a copy of the state, committed (file
// first, then memory) only if fn succeeds and the identity change handler
// accepts every change fn ran into. A panic inside fn (libsignal indexes
// into attacker-controlled bytes in places) becomes an error.
func (d *Device) update(fn func(tx *txn) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	tx := newTxn(d.st.clone())
	if err := protect(func() error { return fn(tx) }); err != nil {
		return err
	}
	if d.onChange != nil {
		for _, c := range tx.changes {
			if err := d.onChange(c); err != nil {
				return &IdentityChangedError{Change: c, Err: err}
			}
		}
	}
	if !tx.dirty {
		return nil
	}
	if err := saveState(d.path, tx.st); err != nil {
		return fmt.Errorf("e2ee: persist %s: %w", d.path, err)
	}
	d.st = tx.st
	return nil
}

// protect runs fn and turns a panic into an error.
func protect(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("signal library panicked: %v", r)
		}
	}()
	return fn()
}
