package scylla

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// Handles are claimed under their folded key (persistence.HandleKey: case
// and ASCII look-alikes), so "Casey" and "casey" are one handle; the users
// row keeps the spelling it registered with.
//
// Keyspaces written before folding claimed handles by exact spelling.
// foldLegacyHandles claims those under their folded key once (a marker in
// secrets), so a new registration collides with them too; where two old
// handles fold alike, the first claim wins and each is still found by its
// exact spelling (GetUserByHandle tries that first). Exact rows are
// never removed: a folded key has no capitals, 0, 1 or i, so it never
// equals an old handle it does not belong to.

const handlesFoldedMarker = "scylla/handles-folded-v1"

// foldLegacyHandles scans the handles table once per keyspace. Two nodes
// running it at once do no harm: every claim is INSERT ... IF NOT EXISTS.
func (s *Store) foldLegacyHandles(ctx context.Context) error {
	wrap := func(err error) error { return fmt.Errorf("scylla: fold legacy handles: %w", classify(err)) }
	var marker []byte
	err := s.query(ctx, s.stmts.getSecret, handlesFoldedMarker).Scan(&marker)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, gocql.ErrNotFound):
		return wrap(err)
	}
	it := s.sess.Session.Query(`SELECT handle, user_id FROM handles`).WithContext(ctx).PageSize(1000).Iter()
	var handle, id string
	folded := 0
	for it.Scan(&handle, &id) {
		key := persistence.HandleKey(handle)
		if key == handle {
			continue
		}
		current := map[string]any{}
		applied, err := s.sess.Session.Query(s.stmts.claimHandle, key, id).WithContext(ctx).MapScanCAS(current)
		if err != nil {
			_ = it.Close()
			return wrap(err)
		}
		if applied {
			folded++
		} else if owner, _ := current["user_id"].(string); owner != id {
			s.log.Warn("two handles stored before case folding fold alike; the second is found by its exact spelling only",
				"handle", handle, "user_id", id, "folded_owner", owner)
		}
	}
	if err := it.Close(); err != nil {
		return wrap(err)
	}
	if _, err := s.sess.Session.Query(s.stmts.insertSecret, handlesFoldedMarker, []byte("1")).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return wrap(err)
	}
	if folded > 0 {
		s.log.Info("claimed handles stored before case folding under their folded keys", "handles", folded)
	}
	return nil
}
