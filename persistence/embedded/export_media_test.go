package embedded

import (
	"context"

	"github.com/cockroachdb/pebble/v2"
)

// RawMediaCounts counts the blob, blob index and media usage keys
// physically present, expired or not.
func (s *Store) RawMediaCounts() (blobs, index, usage int, err error) {
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
	if blobs, err = count(prefixBlob); err != nil {
		return
	}
	if index, err = count(prefixBlobByRef); err != nil {
		return
	}
	usage, err = count(prefixMediaUsage)
	return
}
