package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/courier-im/courier/persistence"
)

// Media records (persistence.MediaStore). Key layout, continuing keys.go
// and groups.go:
//
//	0x16 blob          str(digest)                  -> v1 i64(size) str(ownerID) time(createdAt) time(lastReferenced)
//	0x17 blob by ref   stime(lastReferenced) str(digest) -> empty
//	0x18 media usage   str(userID) str(day)         -> i64(total) i64(expiresAtMs)
//
// time() is keys.go's appendTime (seconds, nanoseconds); stime() is the same
// instant with the sign bit of the seconds flipped, so byte order is time
// order across the epoch too.
//
// The by-ref index (0x17) is exact: every write of a blob record replaces
// its index key in the same batch, under the blob's stripe of casMu, so
// ExpiredBlobs is one ordered scan of the index up to the cutoff, read on a
// snapshot together with the records it names.
//
// Usage records are indexed in the expiry index (0x08) like inbox records:
// reads hide them MediaUsageTTL after their last add, and the sweeper
// deletes them.
const (
	prefixBlob       byte = 0x16
	prefixBlobByRef  byte = 0x17
	prefixMediaUsage byte = 0x18
)

var _ persistence.MediaStore = (*Store)(nil)

func blobKey(digest string) []byte { return appendStr([]byte{prefixBlob}, digest) }

func appendSortableTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// blobRefBound is the exclusive upper bound of index keys referenced
// before t.
func blobRefBound(t time.Time) []byte {
	return appendSortableTime([]byte{prefixBlobByRef}, t)
}

func blobRefKey(lastReferenced time.Time, digest string) []byte {
	return appendStr(blobRefBound(lastReferenced), digest)
}

func mediaUsageKey(userID, day string) []byte {
	return appendStr(appendStr([]byte{prefixMediaUsage}, userID), day)
}

func encodeBlob(b persistence.Blob) []byte {
	v := make([]byte, 0, 1+8+binary.MaxVarintLen64+len(b.OwnerID)+24)
	v = append(v, valueFormatV1)
	v = binary.BigEndian.AppendUint64(v, uint64(b.Size))
	v = appendStr(v, b.OwnerID)
	v = appendTime(v, b.CreatedAt)
	return appendTime(v, b.LastReferenced)
}

func decodeBlob(digest string, v []byte) (persistence.Blob, error) {
	if len(v) < 9 || v[0] != valueFormatV1 {
		return persistence.Blob{}, errCorrupt
	}
	b := persistence.Blob{Digest: digest, Size: int64(binary.BigEndian.Uint64(v[1:]))}
	rest := v[9:]
	var err error
	if b.OwnerID, rest, err = readStr(rest); err != nil {
		return persistence.Blob{}, err
	}
	if b.CreatedAt, rest, err = readTime(rest); err != nil {
		return persistence.Blob{}, err
	}
	if b.LastReferenced, rest, err = readTime(rest); err != nil {
		return persistence.Blob{}, err
	}
	if len(rest) != 0 {
		return persistence.Blob{}, errCorrupt
	}
	return b, nil
}

func encodeMediaUsage(total, expiresAtMs int64) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, uint64(total))
	return binary.BigEndian.AppendUint64(b, uint64(expiresAtMs))
}

func decodeMediaUsage(v []byte) (total, expiresAtMs int64, err error) {
	if len(v) != 16 {
		return 0, 0, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), nil
}

// mediaRecordExpiry reads the expiry of an expiring media record (for the
// sweeper).
func mediaRecordExpiry(key, value []byte) (int64, bool, error) {
	if key[0] != prefixMediaUsage {
		return 0, false, nil
	}
	_, exp, err := decodeMediaUsage(value)
	return exp, true, err
}

// validDay reports whether day is a date in the "2006-01-02" form.
func validDay(day string) error {
	if _, err := time.Parse(time.DateOnly, day); err != nil || len(day) != len(time.DateOnly) {
		return fmt.Errorf("day %q: want YYYY-MM-DD", day)
	}
	return nil
}

// getBlob reads a blob record; found is false when there is none.
func (s *Store) getBlob(digest string) (b persistence.Blob, found bool, err error) {
	v, found, err := s.get(blobKey(digest))
	if err != nil || !found {
		return persistence.Blob{}, false, err
	}
	b, err = decodeBlob(digest, v)
	if err != nil {
		return persistence.Blob{}, false, err
	}
	return b, true, nil
}

// writeBlob stores b and moves its index key from prev (when the record
// existed) in one synced batch.
func (s *Store) writeBlob(b persistence.Blob, prev *persistence.Blob) error {
	batch := s.db.NewBatch()
	defer batch.Close()
	if prev != nil {
		if err := batch.Delete(blobRefKey(prev.LastReferenced, b.Digest), nil); err != nil {
			return err
		}
	}
	if err := batch.Set(blobKey(b.Digest), encodeBlob(b), nil); err != nil {
		return err
	}
	if err := batch.Set(blobRefKey(b.LastReferenced, b.Digest), nil, nil); err != nil {
		return err
	}
	return s.db.Apply(batch, pebble.Sync)
}

// PutBlob implements persistence.MediaStore. The blob's stripe lock makes
// the read and the write one step, so of concurrent publishes of one
// digest exactly one creates the record.
func (s *Store) PutBlob(ctx context.Context, b persistence.Blob) (persistence.Blob, bool, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: put blob %q: %w", b.Digest, err) }
	if b.Digest == "" {
		return persistence.Blob{}, false, wrap(errors.New("digest is empty"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.Blob{}, false, wrap(err)
	}
	defer release()
	mu := s.casLock(blobKey(b.Digest))
	mu.Lock()
	defer mu.Unlock()
	cur, found, err := s.getBlob(b.Digest)
	if err != nil {
		return persistence.Blob{}, false, wrap(err)
	}
	if !found {
		b.CreatedAt, b.LastReferenced = b.CreatedAt.UTC(), b.LastReferenced.UTC()
		if err := s.writeBlob(b, nil); err != nil {
			return persistence.Blob{}, false, wrap(err)
		}
		return b, false, nil
	}
	if !b.LastReferenced.After(cur.LastReferenced) {
		return cur, true, nil
	}
	next := cur
	next.LastReferenced = b.LastReferenced.UTC()
	if err := s.writeBlob(next, &cur); err != nil {
		return persistence.Blob{}, false, wrap(err)
	}
	return next, true, nil
}

// GetBlob implements persistence.MediaStore.
func (s *Store) GetBlob(ctx context.Context, digest string) (persistence.Blob, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: get blob %q: %w", digest, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.Blob{}, wrap(err)
	}
	defer release()
	b, found, err := s.getBlob(digest)
	switch {
	case err != nil:
		return persistence.Blob{}, wrap(err)
	case !found:
		return persistence.Blob{}, wrap(persistence.ErrNotFound)
	}
	return b, nil
}

// TouchBlob implements persistence.MediaStore.
func (s *Store) TouchBlob(ctx context.Context, digest string, at time.Time) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: touch blob %q: %w", digest, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	mu := s.casLock(blobKey(digest))
	mu.Lock()
	defer mu.Unlock()
	cur, found, err := s.getBlob(digest)
	switch {
	case err != nil:
		return wrap(err)
	case !found:
		return wrap(persistence.ErrNotFound)
	case !at.After(cur.LastReferenced):
		return nil
	}
	next := cur
	next.LastReferenced = at.UTC()
	if err := s.writeBlob(next, &cur); err != nil {
		return wrap(err)
	}
	return nil
}

// ExpiredBlobs implements persistence.MediaStore: the oldest-referenced
// blobs first, from the by-ref index.
func (s *Store) ExpiredBlobs(ctx context.Context, cutoff time.Time, limit int) ([]persistence.Blob, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: blobs referenced before %s (limit %d): %w", cutoff.UTC().Format(time.RFC3339Nano), limit, err)
	}
	if limit <= 0 {
		return nil, wrap(errors.New("limit must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	// The index and the records it names, as of one instant.
	snap := s.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixBlobByRef}, UpperBound: blobRefBound(cutoff)})
	if err != nil {
		return nil, wrap(err)
	}
	var out []persistence.Blob
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		k := it.Key()
		if len(k) < 1+12 {
			_ = it.Close()
			return nil, wrap(errCorrupt)
		}
		digest, rest, err := readStr(k[1+12:])
		if err != nil || len(rest) != 0 {
			_ = it.Close()
			return nil, wrap(errCorrupt)
		}
		v, closer, err := snap.Get(blobKey(digest))
		if errors.Is(err, pebble.ErrNotFound) {
			// Record and index key are written together; an index key
			// without its record is damage, but not a reason to stop
			// expiring everything else.
			s.log.Error("blob index names a missing blob", "digest", digest)
			continue
		}
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		b, err := decodeBlob(digest, v)
		_ = closer.Close()
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		out = append(out, b)
	}
	if err := closeIter(it); err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// DeleteBlob implements persistence.MediaStore.
func (s *Store) DeleteBlob(ctx context.Context, digest string) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: delete blob %q: %w", digest, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	mu := s.casLock(blobKey(digest))
	mu.Lock()
	defer mu.Unlock()
	cur, found, err := s.getBlob(digest)
	if err != nil {
		return wrap(err)
	}
	if !found {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Delete(blobKey(digest), nil); err != nil {
		return wrap(err)
	}
	if err := b.Delete(blobRefKey(cur.LastReferenced, digest), nil); err != nil {
		return wrap(err)
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// AddMediaUsage implements persistence.MediaStore: read, add and write
// under the record's stripe lock. Each add moves the record's expiry to
// MediaUsageTTL from now.
func (s *Store) AddMediaUsage(ctx context.Context, userID, day string, bytes int64) (int64, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: add %d bytes to the media usage of %q on %s: %w", bytes, userID, day, err)
	}
	if err := validDay(day); err != nil {
		return 0, wrap(err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	key := mediaUsageKey(userID, day)
	mu := s.casLock(key)
	mu.Lock()
	defer mu.Unlock()
	now := s.now()
	total, err := s.mediaUsage(key, now.UnixMilli())
	if err != nil {
		return 0, wrap(err)
	}
	if bytes > 0 && total > math.MaxInt64-bytes || bytes < 0 && total < math.MinInt64-bytes {
		return 0, wrap(errors.New("usage overflows"))
	}
	total += bytes
	expiresAtMs := now.Add(persistence.MediaUsageTTL).UnixMilli()
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(key, encodeMediaUsage(total, expiresAtMs), nil); err != nil {
		return 0, wrap(err)
	}
	if err := b.Set(expiryKey(expiresAtMs, key), nil, nil); err != nil {
		return 0, wrap(err)
	}
	// Shared with other writers, exclusive for the sweeper: it cannot
	// delete this record between judging it expired and deleting it.
	s.sweepMu.RLock()
	err = s.db.Apply(b, pebble.Sync)
	s.sweepMu.RUnlock()
	if err != nil {
		return 0, wrap(err)
	}
	return total, nil
}

// MediaUsage implements persistence.MediaStore.
func (s *Store) MediaUsage(ctx context.Context, userID, day string) (int64, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: media usage of %q on %s: %w", userID, day, err)
	}
	if err := validDay(day); err != nil {
		return 0, wrap(err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	total, err := s.mediaUsage(mediaUsageKey(userID, day), s.now().UnixMilli())
	if err != nil {
		return 0, wrap(err)
	}
	return total, nil
}

// mediaUsage reads a usage record; an expired or missing one is 0.
func (s *Store) mediaUsage(key []byte, nowMs int64) (int64, error) {
	v, found, err := s.get(key)
	if err != nil || !found {
		return 0, err
	}
	total, expiresAtMs, err := decodeMediaUsage(v)
	if err != nil {
		return 0, err
	}
	if expiresAtMs <= nowMs {
		return 0, nil
	}
	return total, nil
}
