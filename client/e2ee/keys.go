package e2ee

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/util/medium"

	"github.com/courier-im/courier/protos/courierpb"
)

const (
	// MaxOneTimePrekeysPerUpload bounds KeyUpload's oneTime argument.
	MaxOneTimePrekeysPerUpload = 1000

	// keptSignedPrekeys is how many signed prekeys (the current one and
	// the newest replaced ones) stay usable: a prekey message built from a
	// bundle fetched just before a rotation must still be accepted.
	keptSignedPrekeys = 3

	// maxKeyID: libsignal's prekey ids are 24-bit and it treats 0xFFFFFF
	// as "no prekey", so ids stay below it. Ids start at 1 and only grow,
	// so an id is never reused; running out is an error, not a wrap.
	maxKeyID = medium.MaxValue - 1

	// Signal registration ids are in [1, 16380].
	maxRegistrationID = 16380
)

// newIdentity creates the state of a fresh device.
func newIdentity(userID string, deviceID uint32) (*state, error) {
	st := newState(userID, deviceID)
	kp, err := ecc.GenerateKeyPair()
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	st.identityPublic = kp.PublicKey().PublicKey()
	st.identityPrivate = kp.PrivateKey().Serialize()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("registration id: %w", err)
	}
	st.registrationID = binary.BigEndian.Uint32(b[:])%maxRegistrationID + 1
	st.nextSignedPreKeyID = 1
	st.nextPreKeyID = 1
	if err := addSignedPreKey(newTxn(st)); err != nil {
		return nil, err
	}
	return st, nil
}

// addSignedPreKey generates a signed prekey, makes it current and forgets
// all but the newest keptSignedPrekeys.
func addSignedPreKey(tx *txn) error {
	st := tx.st
	id := st.nextSignedPreKeyID
	if id == 0 || id > maxKeyID {
		return fmt.Errorf("signed prekey ids exhausted")
	}
	kp, err := ecc.GenerateKeyPair()
	if err != nil {
		return fmt.Errorf("signed prekey: %w", err)
	}
	// XEdDSA over the serialized (0x05-prefixed) public key: what
	// libsignal's bundle processing verifies.
	sig := ecc.CalculateSignature(tx.identityKeyPair().PrivateKey(), kp.PublicKey().Serialize())
	rec := record.NewSignedPreKey(id, time.Now().Unix(), kp, sig, serializer.SignedPreKeyRecord)
	if err := tx.StoreSignedPreKey(context.Background(), id, rec); err != nil {
		return err
	}
	st.currentSignedPreKey = id
	st.nextSignedPreKeyID = id + 1
	for old := range st.signedPreKeys {
		if old+keptSignedPrekeys <= id {
			delete(st.signedPreKeys, old)
		}
	}
	return nil
}

// RotateSignedPrekey replaces the current signed prekey with a fresh one.
// The previous keptSignedPrekeys-1 stay usable for prekey messages already
// in flight. Upload the new one with KeyUpload.
func (d *Device) RotateSignedPrekey() error {
	if err := d.update(addSignedPreKey); err != nil {
		return fmt.Errorf("e2ee: rotate signed prekey: %w", err)
	}
	return nil
}

// KeyUpload returns what the key directory needs (PUT /v1/keys): the
// identity key, the current signed prekey with its signature, and oneTime
// freshly generated one-time prekeys. The new prekeys' private halves are
// on disk before KeyUpload returns, so a bundle handed out by the server can
// always be answered; their ids are never reused.
func (d *Device) KeyUpload(oneTime int) (*courierpb.KeyUpload, error) {
	if oneTime < 0 || oneTime > MaxOneTimePrekeysPerUpload {
		return nil, fmt.Errorf("e2ee: key upload: %d one-time prekeys, want 0..%d", oneTime, MaxOneTimePrekeysPerUpload)
	}
	var up *courierpb.KeyUpload
	err := d.update(func(tx *txn) error {
		ctx := context.Background()
		st := tx.st
		spk, err := tx.LoadSignedPreKey(ctx, st.currentSignedPreKey)
		if err != nil {
			return err
		}
		if spk == nil {
			return fmt.Errorf("current signed prekey %d missing", st.currentSignedPreKey)
		}
		sig := spk.Signature()
		up = &courierpb.KeyUpload{
			RegistrationId:        st.registrationID,
			IdentityKey:           tx.identityKeyPair().PublicKey().Serialize(),
			SignedPrekeyId:        spk.ID(),
			SignedPrekey:          spk.KeyPair().PublicKey().Serialize(),
			SignedPrekeySignature: sig[:],
		}
		if uint64(st.nextPreKeyID)+uint64(oneTime) > uint64(maxKeyID)+1 {
			return fmt.Errorf("one-time prekey ids exhausted")
		}
		for range oneTime {
			id := st.nextPreKeyID
			kp, err := ecc.GenerateKeyPair()
			if err != nil {
				return fmt.Errorf("one-time prekey: %w", err)
			}
			if err := tx.StorePreKey(ctx, id, record.NewPreKey(id, kp, serializer.PreKeyRecord)); err != nil {
				return err
			}
			st.nextPreKeyID = id + 1
			up.OneTimePrekeys = append(up.OneTimePrekeys, &courierpb.OneTimePrekey{
				Id:        id,
				PublicKey: kp.PublicKey().Serialize(),
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2ee: key upload: %w", err)
	}
	return up, nil
}
