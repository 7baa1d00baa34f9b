package scylla

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// LeaseBlock implements persistence.SequenceStore with a compare-and-set
// loop: read the last number handed out, then advance it with
// UPDATE ... IF last = <what was read>. A lost race returns the current
// value (a failed CAS carries the row on Cassandra and ScyllaDB alike), so
// the next attempt needs no extra read.
//
// An attempt whose outcome is unknown (a CAS timeout) is never returned to
// the caller: the loop re-reads and leases past whatever it did. At worst a
// block is skipped; two callers never get overlapping blocks.
func (s *Store) LeaseBlock(ctx context.Context, counter string, size uint64) (first, last uint64, err error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: lease %d from counter %q: %w", size, counter, classify(err))
	}
	if size == 0 {
		return 0, 0, wrap(errors.New("size must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, 0, wrap(err)
	}
	defer release()

	cur, exists, err := s.readCounter(ctx, counter)
	if err != nil {
		return 0, 0, wrap(err)
	}
	for attempt := 0; ; attempt++ {
		if cur > maxSeq-int64(min(size, maxSeq)) {
			return 0, 0, wrap(errors.New("counter exhausted"))
		}
		next := cur + int64(size)
		var q *gocql.Query
		if exists {
			q = s.sess.Session.Query(s.stmts.casSeq, next, counter, cur)
		} else {
			q = s.sess.Session.Query(s.stmts.createSequence, counter, next)
		}
		current := map[string]any{}
		applied, err := q.WithContext(ctx).MapScanCAS(current)
		switch {
		case err == nil && applied:
			return uint64(cur) + 1, uint64(next), nil
		case err == nil:
			// Lost the race: the failed CAS says what the counter is now.
			v, ok := current["last"].(int64)
			if !ok {
				if cur, exists, err = s.readCounter(ctx, counter); err != nil {
					return 0, 0, wrap(err)
				}
			} else {
				cur, exists = v, true
			}
		case isUnavailable(err) && ctx.Err() == nil && attempt < 3:
			// Unknown outcome or contention timeout: read the truth again
			// (SERIAL completes any Paxos round in flight) and go on.
			if cur, exists, err = s.readCounter(ctx, counter); err != nil {
				return 0, 0, wrap(err)
			}
		default:
			return 0, 0, wrap(err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return 0, 0, wrap(err)
		}
	}
}

// LastLeased implements persistence.SequenceStore with a plain LOCAL_QUORUM
// read, not a SERIAL one: a lease hands out numbers only after its CAS
// applied, and an applied CAS has committed at LOCAL_QUORUM, so a quorum
// read sees every lease that returned. A proposal left uncommitted by a
// leaser that timed out may be missed, but no one handed out its numbers,
// and the next lease completes it and leases past it. Skipping the Paxos
// prepare matters: every device that comes online asks this.
func (s *Store) LastLeased(ctx context.Context, counter string) (uint64, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return 0, fmt.Errorf("scylla: read counter %q: %w", counter, classify(err))
	}
	defer release()
	var last int64
	switch err := s.query(ctx, s.stmts.getSequence, counter).Scan(&last); {
	case errors.Is(err, gocql.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("scylla: read counter %q: %w", counter, classify(err))
	}
	return uint64(last), nil
}

// readCounter reads a counter at SERIAL consistency, so an accepted but
// uncommitted Paxos proposal is completed and seen, not missed.
func (s *Store) readCounter(ctx context.Context, counter string) (last int64, exists bool, err error) {
	err = s.query(ctx, s.stmts.getSequence, counter).Consistency(gocql.LocalSerial).Scan(&last)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return last, true, nil
}

// backoff sleeps a little, growing with attempt and jittered, so racing
// leasers stop colliding on the same Paxos round.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(1+rand.IntN(1<<min(attempt, 5))) * time.Millisecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// LoadOrStoreSecret implements persistence.SecretStore: INSERT ... IF NOT
// EXISTS, then, unless it applied, read the stored value at SERIAL
// consistency (a read that cannot miss a committed or in-flight write).
func (s *Store) LoadOrStoreSecret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: load or store secret %q: %w", name, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	value := candidate
	if value == nil {
		value = []byte{}
	}
	applied, casErr := s.sess.Session.Query(s.stmts.insertSecret, name, value).WithContext(ctx).MapScanCAS(map[string]any{})
	if casErr == nil && applied {
		return append([]byte{}, value...), nil
	}
	if casErr != nil && !isUnavailable(casErr) {
		return nil, wrap(casErr)
	}
	// Not applied, or unknown: whatever is stored now is the answer.
	var stored []byte
	if err := s.query(ctx, s.stmts.getSecret, name).Consistency(gocql.LocalSerial).Scan(&stored); err != nil {
		if errors.Is(err, gocql.ErrNotFound) && casErr != nil {
			return nil, wrap(casErr)
		}
		if errors.Is(err, gocql.ErrNotFound) {
			err = fmt.Errorf("secret vanished after a failed insert: %w", persistence.ErrUnavailable)
		}
		return nil, wrap(err)
	}
	if stored == nil {
		stored = []byte{}
	}
	return stored, nil
}

// LoadSecret implements persistence.SecretStore: a read at SERIAL
// consistency, as secrets are written by Paxos.
func (s *Store) LoadSecret(ctx context.Context, name string) ([]byte, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("scylla: load secret %q: %w", name, err)
	}
	defer release()
	var v []byte
	if err := s.query(ctx, s.stmts.getSecret, name).Consistency(gocql.LocalSerial).Scan(&v); err != nil {
		if errors.Is(err, gocql.ErrNotFound) {
			return nil, persistence.ErrNotFound
		}
		return nil, fmt.Errorf("scylla: load secret %q: %w", name, classify(err))
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// DeleteSecret implements persistence.SecretStore: DELETE ... IF EXISTS,
// so it is ordered with the INSERT ... IF NOT EXISTS of LoadOrStoreSecret.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	wrap := func(err error) error { return fmt.Errorf("scylla: delete secret %q: %w", name, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	// Not applied means there was nothing to delete.
	if _, err := s.sess.Session.Query(s.stmts.deleteSecret, name).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return wrap(err)
	}
	return nil
}
