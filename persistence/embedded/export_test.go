package embedded

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// RawCounts counts the inbox, dedupe and expiry-index keys physically
// present, expired or not, so tests can see what the sweeper removed.
func (s *Store) RawCounts() (inbox, dedupe, expiry int, err error) {
	release, err := s.enter(context.Background())
	if err != nil {
		return 0, 0, 0, err
	}
	defer release()
	count := func(prefix byte) (int, error) {
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
		if err != nil {
			return 0, err
		}
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			n++
		}
		return n, closeIter(it)
	}
	if inbox, err = count(prefixInbox); err != nil {
		return
	}
	if dedupe, err = count(prefixDedupe); err != nil {
		return
	}
	expiry, err = count(prefixExpiry)
	return
}
