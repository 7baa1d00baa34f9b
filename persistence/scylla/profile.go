package scylla

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// GetProfile implements persistence.ProfileStore.
func (s *Store) GetProfile(ctx context.Context, userID string) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: get profile of %q: %w", userID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	var v []byte
	if err := s.query(ctx, s.stmts.getProfile, userID).Scan(&v); err != nil {
		if errors.Is(err, gocql.ErrNotFound) {
			return nil, wrap(persistence.ErrNotFound)
		}
		return nil, wrap(err)
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// PutProfile implements persistence.ProfileStore. A plain upsert: the
// record is replaced whole, so a driver retry writes the same bytes again.
func (s *Store) PutProfile(ctx context.Context, userID string, profile []byte) error {
	wrap := func(err error) error { return fmt.Errorf("scylla: put profile of %q: %w", userID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if profile == nil {
		profile = []byte{}
	}
	if err := s.query(ctx, s.stmts.putProfile, userID, profile).Exec(); err != nil {
		return wrap(err)
	}
	return nil
}
