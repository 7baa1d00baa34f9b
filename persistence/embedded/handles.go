package embedded

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/courier-im/courier/persistence"
)

// Handles are claimed under their folded key (persistence.HandleKey:
// case and ASCII look-alikes), so "Casey" and "casey" are one handle; the
// user record keeps the spelling it registered with.
//
// Stores written before folding keyed handles by their exact spelling.
// foldLegacyHandles indexes those under their folded key once, so a new
// registration collides with them too; where two old handles fold alike
// (both "casey" and "Casey" were registered), the first in key order gets
// the folded key and each is still found by its exact spelling
// (lookupHandle tries that first). Exact keys are never removed: a folded key has no
// capitals, 0, 1 or i, so it never equals an old key it does not belong
// to.

// handlesFoldedMarker records that foldLegacyHandles ran on this store.
var handlesFoldedMarker = secretKey("embedded/handles-folded-v1")

func exactHandleKey(handle string) []byte {
	return appendStr([]byte{prefixHandle}, handle)
}

// lookupHandle finds the user id claiming handle: an old handle of that
// exact spelling first (one whose folded key another old handle may hold),
// else its folded key. A spelling that is its own folded form has one key.
func (s *Store) lookupHandle(handle string) ([]byte, bool, error) {
	if persistence.HandleKey(handle) != handle {
		if id, found, err := s.get(exactHandleKey(handle)); err != nil || found {
			return id, found, err
		}
	}
	return s.get(handleKey(handle))
}

// foldLegacyHandles indexes handles stored by exact spelling under their
// folded keys, once per store (handlesFoldedMarker).
func (s *Store) foldLegacyHandles() error {
	if _, done, err := s.get(handlesFoldedMarker); err != nil || done {
		return err
	}
	s.userMu.Lock()
	defer s.userMu.Unlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixHandle}, UpperBound: []byte{prefixHandle + 1}})
	if err != nil {
		return fmt.Errorf("embedded: fold handles: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	claimed := map[string][]byte{} // folded keys claimed by this pass
	folded := 0
	for it.First(); it.Valid(); it.Next() {
		handle, err := decodeHandleKey(it.Key())
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("embedded: fold handles: %w", err)
		}
		fk := handleKey(handle)
		if bytes.Equal(fk, it.Key()) {
			continue
		}
		owner, taken := claimed[string(fk)]
		if !taken {
			var err error
			if owner, taken, err = s.get(fk); err != nil {
				_ = it.Close()
				return fmt.Errorf("embedded: fold handles: %w", err)
			}
		}
		if taken {
			if !bytes.Equal(owner, it.Value()) {
				s.log.Warn("two handles stored before case folding fold alike; the second is found by its exact spelling only",
					"handle", handle, "user_id", string(it.Value()), "folded_owner", string(owner))
			}
			continue
		}
		id := bytes.Clone(it.Value())
		claimed[string(fk)] = id
		if err := b.Set(fk, id, nil); err != nil {
			_ = it.Close()
			return fmt.Errorf("embedded: fold handles: %w", err)
		}
		folded++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("embedded: fold handles: %w", err)
	}
	if err := b.Set(handlesFoldedMarker, []byte("1"), nil); err != nil {
		return fmt.Errorf("embedded: fold handles: %w", err)
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return fmt.Errorf("embedded: fold handles: %w", err)
	}
	if folded > 0 {
		s.log.Info("indexed handles stored before case folding under their folded keys", "handles", folded)
	}
	return nil
}

// decodeHandleKey is the handle of a handle key.
func decodeHandleKey(k []byte) (string, error) {
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)-1-w) != n {
		return "", fmt.Errorf("bad handle key %x: %w", k, errCorrupt)
	}
	return string(k[1+w:]), nil
}
