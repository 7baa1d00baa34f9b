package scylla

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// takeCandidates is how many prekeys one take round reads; concurrent takes
// try them in random order so they rarely contend for the same row.
const takeCandidates = 16

// PutDeviceKeys implements persistence.KeyStore. Only the device itself
// writes its keys, so read-then-write needs no compare-and-set.
func (s *Store) PutDeviceKeys(ctx context.Context, userID string, deviceID uint32, k persistence.DeviceKeys) ([]byte, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: put keys of %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	var prev []byte
	err = s.query(ctx, s.stmts.getDeviceKeys, userID, int64(deviceID)).Scan(new(int64), &prev, new(int64), new([]byte), new([]byte))
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return nil, wrap(err)
	}
	err = s.query(ctx, s.stmts.putDeviceKeys, userID, int64(deviceID), int64(k.RegistrationID), k.IdentityKey,
		int64(k.SignedPrekeyID), k.SignedPrekey, k.SignedPrekeySignature).Idempotent(true).Exec()
	if err != nil {
		return nil, wrap(err)
	}
	return prev, nil
}

// GetDeviceKeys implements persistence.KeyStore.
func (s *Store) GetDeviceKeys(ctx context.Context, userID string, deviceID uint32) (persistence.DeviceKeys, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: get keys of %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.DeviceKeys{}, wrap(err)
	}
	defer release()
	var k persistence.DeviceKeys
	var reg, spkID int64
	err = s.query(ctx, s.stmts.getDeviceKeys, userID, int64(deviceID)).Scan(&reg, &k.IdentityKey, &spkID, &k.SignedPrekey, &k.SignedPrekeySignature)
	if err != nil {
		if errors.Is(err, gocql.ErrNotFound) {
			return persistence.DeviceKeys{}, wrap(persistence.ErrNotFound)
		}
		return persistence.DeviceKeys{}, wrap(err)
	}
	k.RegistrationID, k.SignedPrekeyID = uint32(reg), uint32(spkID)
	return k, nil
}

// AddOneTimePrekeys implements persistence.KeyStore: one unlogged batch
// (one partition).
func (s *Store) AddOneTimePrekeys(ctx context.Context, userID string, deviceID uint32, keys []persistence.OneTimePrekey) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: add prekeys of %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	rows := make([]write, len(keys))
	for i, k := range keys {
		rows[i] = write{stmt: s.stmts.putPrekey, args: []any{userID, int64(deviceID), int64(k.ID), k.PublicKey}}
	}
	if len(rows) == 0 {
		return nil
	}
	if err := s.execBatch(ctx, rows); err != nil {
		return wrap(err)
	}
	return nil
}

// TakeOneTimePrekey implements persistence.KeyStore: read a few candidates,
// then DELETE ... IF EXISTS one of them; the take whose delete applied owns
// the key, a take that lost every race reads again.
func (s *Store) TakeOneTimePrekey(ctx context.Context, userID string, deviceID uint32) (persistence.OneTimePrekey, bool, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: take prekey of %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.OneTimePrekey{}, false, wrap(err)
	}
	defer release()
	for round := 0; ; round++ {
		var cands []persistence.OneTimePrekey
		it := s.query(ctx, s.stmts.listPrekeys, userID, int64(deviceID)).PageSize(takeCandidates).Iter()
		var id int64
		var pub []byte
		for it.Scan(&id, &pub) {
			cands = append(cands, persistence.OneTimePrekey{ID: uint32(id), PublicKey: append([]byte(nil), pub...)})
		}
		if err := it.Close(); err != nil {
			return persistence.OneTimePrekey{}, false, wrap(err)
		}
		if len(cands) == 0 {
			return persistence.OneTimePrekey{}, false, nil
		}
		rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
		for _, c := range cands {
			applied, err := s.sess.Session.Query(s.stmts.takePrekey, userID, int64(deviceID), int64(c.ID)).
				WithContext(ctx).MapScanCAS(map[string]any{})
			if err != nil {
				// Unknown outcome: the key may be gone or not; never hand
				// out one this take may not own.
				return persistence.OneTimePrekey{}, false, wrap(err)
			}
			if applied {
				return c, true, nil
			}
		}
		if round >= 16 {
			return persistence.OneTimePrekey{}, false, wrap(fmt.Errorf("%w: lost every race for a prekey", persistence.ErrUnavailable))
		}
	}
}

// CountOneTimePrekeys implements persistence.KeyStore.
func (s *Store) CountOneTimePrekeys(ctx context.Context, userID string, deviceID uint32) (int, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: count prekeys of %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	var n int64
	if err := s.query(ctx, s.stmts.countPrekeys, userID, int64(deviceID)).Scan(&n); err != nil {
		return 0, wrap(err)
	}
	return int(n), nil
}

// DeleteDeviceKeys implements persistence.KeyStore.
func (s *Store) DeleteDeviceKeys(ctx context.Context, userID string, deviceID uint32) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: delete keys of %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if err := s.query(ctx, s.stmts.deletePrekeys, userID, int64(deviceID)).Idempotent(true).Exec(); err != nil {
		return wrap(err)
	}
	if err := s.query(ctx, s.stmts.deleteDeviceKeys, userID, int64(deviceID)).Idempotent(true).Exec(); err != nil {
		return wrap(err)
	}
	return nil
}

// DeleteDevice implements persistence.UserStore.
func (s *Store) DeleteDevice(ctx context.Context, userID string, deviceID uint32) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: delete device %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if err := s.query(ctx, s.stmts.deleteDevice, userID, int64(deviceID)).Idempotent(true).Exec(); err != nil {
		return wrap(err)
	}
	return nil
}
