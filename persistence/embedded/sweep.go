package embedded

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// sweepLoop deletes due records every interval until Close. Reads already
// hide expired records, so the sweeper only reclaims space and a missed or
// failed round costs nothing but disk.
func (s *Store) sweepLoop(interval time.Duration) {
	defer close(s.sweepDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case <-t.C:
		}
		n, err := s.sweep()
		if errors.Is(err, persistence.ErrClosed) {
			return
		}
		if err != nil {
			s.log.Error("sweep expired records", "deleted", n, "err", err)
			continue
		}
		if n > 0 {
			s.log.Debug("swept expired records", "deleted", n)
		}
	}
}

// sweep deletes every record that is due now, one bounded chunk at a time,
// and returns how many it deleted.
func (s *Store) sweep() (int, error) {
	total := 0
	for {
		select {
		case <-s.stopSweep:
			return total, nil
		default:
		}
		n, more, err := s.sweepChunk()
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// sweepChunk deletes up to sweepChunkSize due records and their index keys.
// more reports whether further due index keys remain.
func (s *Store) sweepChunk() (deleted int, more bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, false, persistence.ErrClosed
	}
	nowMs := s.now().UnixMilli()
	due, more, err := s.dueIndexKeys(nowMs)
	if err != nil || len(due) == 0 {
		return 0, false, err
	}

	// Holding sweepMu exclusively from the re-read to the delete means no
	// Append can slip a fresh record under a key judged expired.
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	budget := sweepChunkSize
	for _, ik := range due {
		target, _ := expiryTarget(ik)
		if isInboxPrefix(target) {
			n, done, err := s.sweepInbox(b, target, nowMs, budget)
			if err != nil {
				return 0, false, err
			}
			deleted += n
			budget = max(budget-n, 1)
			if !done {
				more = true // the rest of this inbox next chunk
				break
			}
			if err := b.Delete(ik, nil); err != nil {
				return 0, false, err
			}
			continue
		}
		v, found, err := s.get(target)
		if err != nil {
			return 0, false, err
		}
		if found {
			expiresAtMs, err := recordExpiry(target, v)
			if err != nil {
				// Leave an unreadable record for a human rather than guess,
				// but drop its index key so the sweeper does not spin on it.
				s.log.Error("sweeper skipped unreadable record", "key", fmt.Sprintf("%x", target), "err", err)
			} else if expiresAtMs <= nowMs {
				if err := b.Delete(target, nil); err != nil {
					return 0, false, err
				}
				deleted++
			}
		}
		if err := b.Delete(ik, nil); err != nil {
			return 0, false, err
		}
	}
	// Losing a sweep in a crash only means sweeping again, so it does not pay
	// for its own fsync.
	if err := s.db.Apply(b, pebble.NoSync); err != nil {
		return 0, false, err
	}
	return deleted, more, nil
}

// sweepInbox adds to b the deletes of an inbox's expired entries, oldest
// first, up to limit. It stops at the first entry not yet due: entries
// expire in the order they were appended, and one that a replacement made
// younger holds back the rest only until its own bucket comes due. done is
// false when limit cut the scan short.
func (s *Store) sweepInbox(b *pebble.Batch, prefix []byte, nowMs int64, limit int) (deleted int, done bool, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, false, err
	}
	done = true
	for ok := it.First(); ok; ok = it.Next() {
		expiresAtMs, err := recordExpiry(it.Key(), it.Value())
		if err != nil {
			s.log.Error("sweeper skipped unreadable record", "key", fmt.Sprintf("%x", it.Key()), "err", err)
			continue
		}
		if expiresAtMs > nowMs {
			break
		}
		if deleted == limit {
			done = false
			break
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			_ = it.Close()
			return 0, false, err
		}
		deleted++
	}
	if err := closeIter(it); err != nil {
		return 0, false, err
	}
	return deleted, done, nil
}

// dueIndexKeys returns up to sweepChunkSize expiry index keys due at nowMs.
func (s *Store) dueIndexKeys(nowMs int64) (keys [][]byte, more bool, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixExpiry},
		UpperBound: expiryUpperBound(nowMs),
	})
	if err != nil {
		return nil, false, err
	}
	ok := it.First()
	for ; ok && len(keys) < sweepChunkSize; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	more = ok
	if err := closeIter(it); err != nil {
		return nil, false, err
	}
	return keys, more, nil
}

// recordExpiry reads the expiry stored in an expiring record's value.
func recordExpiry(key, value []byte) (int64, error) {
	switch key[0] {
	case prefixInbox:
		var se courierpb.StoredEntry
		if err := proto.Unmarshal(value, &se); err != nil {
			return 0, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		return se.GetExpiresAtMs(), nil
	case prefixDedupe:
		_, expiresAtMs, err := decodeDedupe(value)
		return expiresAtMs, err
	default:
		if exp, ok, err := groupRecordExpiry(key, value); ok {
			return exp, err
		}
		if exp, ok, err := mediaRecordExpiry(key, value); ok {
			return exp, err
		}
		return 0, fmt.Errorf("%w: expiry index points at record type %#x", errCorrupt, key[0])
	}
}
