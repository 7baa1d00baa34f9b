package scylla

import (
	"context"
	"time"
)

// WriteLegacyHandle writes what a binary before handle folding wrote for a
// registration: the handle claimed by its exact spelling, and the user row.
// It also forgets that the keyspace's handles were folded, so the next
// Open folds again.
func (s *Store) WriteLegacyHandle(ctx context.Context, handle, userID string, at time.Time) error {
	if err := s.query(ctx, "INSERT INTO handles (handle, user_id) VALUES (?, ?)", handle, userID).Exec(); err != nil {
		return err
	}
	if err := s.query(ctx, s.stmts.insertUser, userID, handle, at).Exec(); err != nil {
		return err
	}
	return s.query(ctx, "DELETE FROM secrets WHERE name = ?", handlesFoldedMarker).Exec()
}
