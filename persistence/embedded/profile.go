package embedded

import (
	"context"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/courier-im/courier/persistence"
)

// GetProfile implements persistence.ProfileStore.
func (s *Store) GetProfile(ctx context.Context, userID string) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: get profile of %q: %w", userID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	v, found, err := s.get(profileKey(userID))
	switch {
	case err != nil:
		return nil, wrap(err)
	case !found:
		return nil, wrap(persistence.ErrNotFound)
	}
	return v, nil
}

// PutProfile implements persistence.ProfileStore.
func (s *Store) PutProfile(ctx context.Context, userID string, profile []byte) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: put profile of %q: %w", userID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if profile == nil {
		profile = []byte{}
	}
	if err := s.db.Set(profileKey(userID), profile, pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}
