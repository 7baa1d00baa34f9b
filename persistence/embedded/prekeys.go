package embedded

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// The key directory. One-time prekeys are single-use: a take removes the
// first key of the device's pool under the device's stripe lock, so two
// takes in this process never return the same key (the store is one
// process's).

// PutDeviceKeys implements persistence.KeyStore.
func (s *Store) PutDeviceKeys(ctx context.Context, userID string, deviceID uint32, k persistence.DeviceKeys) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: put keys of %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	key := devKeysKey(userID, deviceID)
	mu := s.casLock(key)
	mu.Lock()
	defer mu.Unlock()
	var prev []byte
	if old, found, err := s.get(key); err != nil {
		return nil, wrap(err)
	} else if found {
		pk, err := decodeDeviceKeys(old)
		if err != nil {
			return nil, wrap(err)
		}
		prev = pk.IdentityKey
	}
	v, err := proto.Marshal(&courierpb.KeyUpload{
		RegistrationId: k.RegistrationID, IdentityKey: k.IdentityKey,
		SignedPrekeyId: k.SignedPrekeyID, SignedPrekey: k.SignedPrekey, SignedPrekeySignature: k.SignedPrekeySignature,
	})
	if err != nil {
		return nil, wrap(err)
	}
	if err := s.db.Set(key, v, pebble.Sync); err != nil {
		return nil, wrap(err)
	}
	return prev, nil
}

// GetDeviceKeys implements persistence.KeyStore.
func (s *Store) GetDeviceKeys(ctx context.Context, userID string, deviceID uint32) (persistence.DeviceKeys, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: get keys of %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.DeviceKeys{}, wrap(err)
	}
	defer release()
	v, found, err := s.get(devKeysKey(userID, deviceID))
	switch {
	case err != nil:
		return persistence.DeviceKeys{}, wrap(err)
	case !found:
		return persistence.DeviceKeys{}, wrap(persistence.ErrNotFound)
	}
	k, err := decodeDeviceKeys(v)
	if err != nil {
		return persistence.DeviceKeys{}, wrap(err)
	}
	return k, nil
}

func decodeDeviceKeys(v []byte) (persistence.DeviceKeys, error) {
	var u courierpb.KeyUpload
	if err := proto.Unmarshal(v, &u); err != nil {
		return persistence.DeviceKeys{}, fmt.Errorf("decode device keys: %w", err)
	}
	return persistence.DeviceKeys{
		RegistrationID: u.RegistrationId, IdentityKey: u.IdentityKey,
		SignedPrekeyID: u.SignedPrekeyId, SignedPrekey: u.SignedPrekey, SignedPrekeySignature: u.SignedPrekeySignature,
	}, nil
}

// AddOneTimePrekeys implements persistence.KeyStore.
func (s *Store) AddOneTimePrekeys(ctx context.Context, userID string, deviceID uint32, keys []persistence.OneTimePrekey) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: add prekeys of %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	b := s.db.NewBatch()
	defer b.Close()
	for _, k := range keys {
		if err := b.Set(prekeyKey(userID, deviceID, k.ID), k.PublicKey, nil); err != nil {
			return wrap(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// TakeOneTimePrekey implements persistence.KeyStore.
func (s *Store) TakeOneTimePrekey(ctx context.Context, userID string, deviceID uint32) (persistence.OneTimePrekey, bool, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: take prekey of %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.OneTimePrekey{}, false, wrap(err)
	}
	defer release()
	prefix := prekeyPrefix(userID, deviceID)
	mu := s.casLock(prefix)
	mu.Lock()
	defer mu.Unlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return persistence.OneTimePrekey{}, false, wrap(err)
	}
	if !it.First() {
		if err := closeIter(it); err != nil {
			return persistence.OneTimePrekey{}, false, wrap(err)
		}
		return persistence.OneTimePrekey{}, false, nil
	}
	key := append([]byte(nil), it.Key()...)
	pk := persistence.OneTimePrekey{ID: binary.BigEndian.Uint32(key[len(prefix):]), PublicKey: append([]byte(nil), it.Value()...)}
	if err := closeIter(it); err != nil {
		return persistence.OneTimePrekey{}, false, wrap(err)
	}
	if err := s.db.Delete(key, pebble.Sync); err != nil {
		return persistence.OneTimePrekey{}, false, wrap(err)
	}
	return pk, true, nil
}

// CountOneTimePrekeys implements persistence.KeyStore.
func (s *Store) CountOneTimePrekeys(ctx context.Context, userID string, deviceID uint32) (int, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: count prekeys of %q/%d: %w", userID, deviceID, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	prefix := prekeyPrefix(userID, deviceID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, wrap(err)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := closeIter(it); err != nil {
		return 0, wrap(err)
	}
	return n, nil
}

// DeleteDeviceKeys implements persistence.KeyStore.
func (s *Store) DeleteDeviceKeys(ctx context.Context, userID string, deviceID uint32) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: delete keys of %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	b := s.db.NewBatch()
	defer b.Close()
	prefix := prekeyPrefix(userID, deviceID)
	if err := b.DeleteRange(prefix, prefixEnd(prefix), nil); err != nil {
		return wrap(err)
	}
	if err := b.Delete(devKeysKey(userID, deviceID), nil); err != nil {
		return wrap(err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// DeleteDevice implements persistence.UserStore.
func (s *Store) DeleteDevice(ctx context.Context, userID string, deviceID uint32) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: delete device %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if err := s.db.Delete(deviceKey(userID, deviceID), pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}
