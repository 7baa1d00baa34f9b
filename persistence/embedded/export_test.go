package embedded

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// rawCounts counts the keys physically present under each one-byte prefix,
// expired or not, so tests can see what the sweeper removed.
func (s *Store) rawCounts(prefixes ...byte) ([]int, error) {
	release, err := s.enter(context.Background())
	if err != nil {
		return nil, err
	}
	defer release()
	counts := make([]int, len(prefixes))
	for i, prefix := range prefixes {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			counts[i]++
		}
		if err := closeIter(it); err != nil {
			return nil, err
		}
	}
	return counts, nil
}

// RawCounts counts the inbox, dedupe and expiry-index keys physically
// present, expired or not.
func (s *Store) RawCounts() (inbox, dedupe, expiry int, err error) {
	c, err := s.rawCounts(prefixInbox, prefixDedupe, prefixExpiry)
	if err != nil {
		return 0, 0, 0, err
	}
	return c[0], c[1], c[2], nil
}
