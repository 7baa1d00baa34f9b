package scylla

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// Media (persistence.MediaStore), on the tables of migrations/0005_media.cql:
//
//	media_blobs   (digest) size, owner_id, created_at, last_referenced
//	media_by_day  ((day, shard), last_referenced, digest)  blobs by the UTC day of a reference
//	media_days    ((bucket 0), day)                       the days media_by_day may hold rows for
//	media_usage   ((user_id, day), add_id) bytes          one row per add, MediaUsageTTL
//
// # Blob records
//
// Every write of a media_blobs row is a lightweight transaction: PutBlob
// creates with INSERT ... IF NOT EXISTS, so of concurrent publishes of one
// digest (from any node) exactly one reports a new blob, and
// LastReferenced moves with UPDATE ... SET last_referenced = ? IF
// last_referenced < ?, so it never moves back whatever order racing
// references land in. Deletes are DELETE ... IF EXISTS: mixing plain
// writes, stamped with a client clock, with Paxos-stamped ones on the same
// cells would let a skewed clock reorder them. LWTs cost four round trips
// instead of one, which media can afford: a blob is published or
// re-referenced once per media message sent, far less often than messages
// are stored, and a touch that would not move LastReferenced forward is
// answered from a plain read without Paxos.
//
// # Finding expired blobs without a scan
//
// media_by_day indexes blobs by the UTC day of their LastReferenced, each
// day split into mediaDayShards partitions clustered by the reference
// time. A write of LastReferenced first writes the row of the new
// reference (and its day into media_days), then the record, so a record's
// current reference always has its row; the rows of earlier references it
// leaves behind are deleted by ExpiredBlobs when it meets them.
// ExpiredBlobs reads the days in media_days up to the cutoff's day, oldest
// first, reads each day's shards up to the cutoff, and re-reads the record
// of every row, trusting only the record:
//
//   - no record (deleted): the row is deleted;
//   - the record is referenced later than the row: the row is stale and
//     deleted; the blob is returned if the record is expired (its current
//     row, also before the cutoff, is then kept);
//   - the record is referenced at the row's time: the row is current, kept,
//     and the blob returned;
//   - the record is referenced earlier than the row (a reference in flight,
//     or one that failed after writing its row): the row is kept, and the
//     blob returned if the record is expired.
//
// A day before the cutoff's day whose shards were all read and left empty
// is removed from media_days, so drained days are not read again. Deletes
// of index rows and days carry the time the row (or day) was read as their
// write timestamp, so they never shadow a row rewritten after that read.
//
// What this leaves: an index row deleted because its record was missing
// while a publish of that digest was between its index write and its
// INSERT leaves that record unindexed, never expired. That takes a publish
// whose LastReferenced is already before the cutoff, which a server
// stamping references with its own clock never makes.
//
// # Usage
//
// media_usage holds one row per AddMediaUsage, keyed by a timeuuid the
// writer picks, with a TTL of MediaUsageTTL; the total is SUM(bytes) of the
// (user, day) partition, read after the insert. Counters were the other
// option: one cell per (user, day), but a counter increment is not
// idempotent (a retried or timed-out increment may count twice), and
// counters cannot carry a TTL, so every day's cells would need a cleanup
// job of their own. Rows are idempotent (a retry rewrites the same row),
// expire by themselves, and a user's day holds one row per upload, a few
// hundred at most under any sane quota, which one partition read sums.
const (
	// mediaDayShards is how many partitions one day of media_by_day is
	// spread over: at most this many reads per day walked. It is part of
	// the on-disk layout; changing it strands rows in shards no longer read.
	mediaDayShards = 32
	// maxMediaAttempts bounds the compare-and-set rounds of one call.
	maxMediaAttempts = 16
	// mediaReadConcurrency bounds the index reads ExpiredBlobs has in flight.
	mediaReadConcurrency = 8
)

var _ persistence.MediaStore = (*Store)(nil)

// msTime is t as a CQL timestamp stores it: whole milliseconds, UTC.
func msTime(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// mediaDay is the UTC day of t, in days since the epoch.
func mediaDay(t time.Time) int {
	ms := t.UnixMilli()
	d := ms / (24 * 3600 * 1000)
	if ms < 0 && ms%(24*3600*1000) != 0 {
		d--
	}
	return int(d)
}

func mediaShard(digest string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(digest))
	return int(h.Sum32() % mediaDayShards)
}

// blobFromRow reads a record out of a failed CAS's row; ok is false when
// the row does not carry one.
func blobFromRow(digest string, row map[string]any) (b persistence.Blob, ok bool) {
	size, ok1 := row["size"].(int64)
	owner, ok2 := row["owner_id"].(string)
	created, ok3 := row["created_at"].(time.Time)
	last, ok4 := row["last_referenced"].(time.Time)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return persistence.Blob{}, false
	}
	return persistence.Blob{Digest: digest, Size: size, OwnerID: owner, CreatedAt: created.UTC(), LastReferenced: last.UTC()}, true
}

// readBlob reads a record at consistency c; found is false when there is
// none. LOCAL_SERIAL also completes a Paxos round in flight.
func (s *Store) readBlob(ctx context.Context, digest string, c gocql.Consistency) (b persistence.Blob, found bool, err error) {
	b.Digest = digest
	err = s.query(ctx, s.stmts.getBlob, digest).Consistency(c).Scan(&b.Size, &b.OwnerID, &b.CreatedAt, &b.LastReferenced)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return persistence.Blob{}, false, nil
	case err != nil:
		return persistence.Blob{}, false, err
	}
	b.CreatedAt, b.LastReferenced = b.CreatedAt.UTC(), b.LastReferenced.UTC()
	return b, true, nil
}

// indexBlob writes the index row of a reference at lastReferenced, then
// its day, before the record says so. In that order a day's row in
// media_days is always written after the index rows it covers, so
// ExpiredBlobs, which deletes a day it found empty with the time it began
// reading as the delete's timestamp, never deletes the day of a row
// written after that read began.
func (s *Store) indexBlob(ctx context.Context, digest string, lastReferenced time.Time) error {
	day := mediaDay(lastReferenced)
	if err := s.query(ctx, s.stmts.indexBlob, day, mediaShard(digest), lastReferenced, digest).Exec(); err != nil {
		return err
	}
	return s.query(ctx, s.stmts.insertMediaDay, day).Exec()
}

// PutBlob implements persistence.MediaStore. A plain read answers a
// re-publish that would not move LastReferenced forward. Otherwise the
// index row of b.LastReferenced goes first; then the record is created,
// or, when it exists, its LastReferenced moved forward (forwardBlob).
//
// A create whose outcome is unknown (a CAS timeout) is settled by reading
// the record at LOCAL_SERIAL: a record with b's owner, size and creation
// time is taken as this call's own, so a caller retrying its own publish
// is told it created the blob.
func (s *Store) PutBlob(ctx context.Context, b persistence.Blob) (persistence.Blob, bool, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: put blob %q: %w", b.Digest, classify(err)) }
	if b.Digest == "" {
		return persistence.Blob{}, false, wrap(errors.New("digest is empty"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.Blob{}, false, wrap(err)
	}
	defer release()
	b.CreatedAt, b.LastReferenced = msTime(b.CreatedAt), msTime(b.LastReferenced)
	// A record a quorum read sees exists: no LWT needed to tell.
	if cur, found, err := s.readBlob(ctx, b.Digest, gocql.LocalQuorum); err != nil {
		return persistence.Blob{}, false, wrap(err)
	} else if found && !b.LastReferenced.After(cur.LastReferenced) {
		return cur, true, nil
	}
	if err := s.indexBlob(ctx, b.Digest, b.LastReferenced); err != nil {
		return persistence.Blob{}, false, wrap(err)
	}
	for attempt := 0; ; attempt++ {
		if attempt == maxMediaAttempts {
			return persistence.Blob{}, false, wrap(fmt.Errorf("%w: lost %d races for the record", persistence.ErrUnavailable, attempt))
		}
		row := map[string]any{}
		applied, err := s.sess.Session.Query(s.stmts.insertBlob, b.Digest, b.Size, b.OwnerID, b.CreatedAt, b.LastReferenced).
			WithContext(ctx).MapScanCAS(row)
		var cur persistence.Blob
		found := false
		switch {
		case err == nil && applied:
			return b, false, nil
		case err == nil:
			cur, found = blobFromRow(b.Digest, row)
			if !found {
				if cur, found, err = s.readBlob(ctx, b.Digest, gocql.LocalSerial); err != nil {
					return persistence.Blob{}, false, wrap(err)
				}
			}
		case isUnavailable(err) && ctx.Err() == nil && attempt < 3:
			casErr := err
			if cur, found, err = s.readBlob(ctx, b.Digest, gocql.LocalSerial); err != nil {
				return persistence.Blob{}, false, wrap(errors.Join(casErr, err))
			}
			if found && cur.OwnerID == b.OwnerID && cur.Size == b.Size && cur.CreatedAt.Equal(b.CreatedAt) &&
				!cur.LastReferenced.Before(b.LastReferenced) {
				return cur, false, nil
			}
		default:
			return persistence.Blob{}, false, wrap(err)
		}
		if found {
			stored, found, err := s.forwardBlob(ctx, cur, b.LastReferenced)
			if err != nil {
				return persistence.Blob{}, false, wrap(err)
			}
			if found {
				return stored, true, nil
			}
		}
		// Deleted between the attempts: publish it again.
		if err := backoff(ctx, attempt); err != nil {
			return persistence.Blob{}, false, wrap(err)
		}
	}
}

// forwardBlob moves cur's LastReferenced forward to at by compare-and-set
// and returns the record as stored; found is false when the record is gone.
// The index row of at's day must already be written.
func (s *Store) forwardBlob(ctx context.Context, cur persistence.Blob, at time.Time) (persistence.Blob, bool, error) {
	for attempt := 0; ; attempt++ {
		if !at.After(cur.LastReferenced) {
			return cur, true, nil
		}
		if attempt == maxMediaAttempts {
			return persistence.Blob{}, false, fmt.Errorf("%w: lost %d races to move the last reference", persistence.ErrUnavailable, attempt)
		}
		applied, err := s.sess.Session.Query(s.stmts.forwardBlob, at, cur.Digest, at).WithContext(ctx).MapScanCAS(map[string]any{})
		switch {
		case err == nil && applied:
			cur.LastReferenced = at
			return cur, true, nil
		case err == nil, isUnavailable(err) && ctx.Err() == nil && attempt < 3:
			// Lost to a later reference, a delete, or an unknown outcome:
			// read what is stored (completing any Paxos round in flight).
			var found bool
			var rerr error
			if cur, found, rerr = s.readBlob(ctx, cur.Digest, gocql.LocalSerial); rerr != nil {
				return persistence.Blob{}, false, errors.Join(err, rerr)
			}
			if !found {
				return persistence.Blob{}, false, nil
			}
		default:
			return persistence.Blob{}, false, err
		}
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return persistence.Blob{}, false, err
			}
		}
	}
}

// GetBlob implements persistence.MediaStore.
func (s *Store) GetBlob(ctx context.Context, digest string) (persistence.Blob, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: get blob %q: %w", digest, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.Blob{}, wrap(err)
	}
	defer release()
	b, found, err := s.readBlob(ctx, digest, gocql.LocalQuorum)
	switch {
	case err != nil:
		return persistence.Blob{}, wrap(err)
	case !found:
		return persistence.Blob{}, wrap(persistence.ErrNotFound)
	}
	return b, nil
}

// TouchBlob implements persistence.MediaStore: a plain read answers a
// missing blob and a touch that would not move forward; otherwise the new
// day's index row, then the compare-and-set.
func (s *Store) TouchBlob(ctx context.Context, digest string, at time.Time) error {
	wrap := func(err error) error { return fmt.Errorf("scylla: touch blob %q: %w", digest, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	at = msTime(at)
	cur, found, err := s.readBlob(ctx, digest, gocql.LocalQuorum)
	switch {
	case err != nil:
		return wrap(err)
	case !found:
		return wrap(persistence.ErrNotFound)
	case !at.After(cur.LastReferenced):
		return nil
	}
	if err := s.indexBlob(ctx, digest, at); err != nil {
		return wrap(err)
	}
	_, found, err = s.forwardBlob(ctx, cur, at)
	switch {
	case err != nil:
		return wrap(err)
	case !found:
		return wrap(persistence.ErrNotFound)
	}
	return nil
}

// DeleteBlob implements persistence.MediaStore: the record (by LWT), then
// the index row of its day. Should the second step fail, ExpiredBlobs
// deletes the row when it meets it.
func (s *Store) DeleteBlob(ctx context.Context, digest string) error {
	wrap := func(err error) error { return fmt.Errorf("scylla: delete blob %q: %w", digest, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	readAt := time.Now().UnixMicro()
	cur, found, err := s.readBlob(ctx, digest, gocql.LocalQuorum)
	if err != nil {
		return wrap(err)
	}
	if !found {
		return nil
	}
	if _, err := s.sess.Session.Query(s.stmts.deleteBlob, digest).WithContext(ctx).MapScanCAS(map[string]any{}); err != nil {
		return wrap(err)
	}
	if err := s.query(ctx, s.stmts.unindexBlob, readAt, mediaDay(cur.LastReferenced), mediaShard(digest), cur.LastReferenced, digest).Exec(); err != nil {
		return wrap(err)
	}
	return nil
}

// ExpiredBlobs implements persistence.MediaStore; see the top of this file.
// Blobs come oldest day first.
func (s *Store) ExpiredBlobs(ctx context.Context, cutoff time.Time, limit int) ([]persistence.Blob, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: blobs referenced before %s (limit %d): %w", cutoff.UTC().Format(time.RFC3339Nano), limit, classify(err))
	}
	if limit <= 0 {
		return nil, wrap(errors.New("limit must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	// References are stored in whole milliseconds, rounded down: one stored
	// as the cutoff's own millisecond may be after a cutoff inside it, so
	// compare with the cutoff rounded down too (never expire early).
	cutoff = msTime(cutoff)
	cutoffDay := mediaDay(cutoff)

	var days []int
	err = s.pages(ctx, s.query(ctx, s.stmts.listMediaDays, cutoffDay), 0, func(it *gocql.Iter) bool {
		var d int
		if !it.Scan(&d) {
			return false
		}
		days = append(days, d)
		return true
	})
	if err != nil {
		return nil, wrap(err)
	}
	w := expiryWalk{s: s, cutoff: cutoff, limit: limit, seen: map[string]bool{}}
	for _, day := range days {
		if w.full() {
			break
		}
		dayReadAt := time.Now().UnixMicro()
		drained, err := w.walkDay(ctx, day)
		if err != nil {
			return nil, wrap(err)
		}
		if drained && day < cutoffDay {
			if err := s.query(ctx, s.stmts.deleteMediaDay, dayReadAt, day).Exec(); err != nil {
				return nil, wrap(err)
			}
		}
	}
	return w.out, nil
}

// expiryWalk is one ExpiredBlobs call's progress.
type expiryWalk struct {
	s      *Store
	cutoff time.Time
	limit  int
	out    []persistence.Blob
	seen   map[string]bool
}

func (w *expiryWalk) full() bool { return len(w.out) >= w.limit }

// indexPage is one page of an index partition's rows before the cutoff.
type indexPage struct {
	rows []indexRow
	// next is the page state of the following page; empty at the end.
	next []byte
	// readAt is when the page was asked for (µs), the timestamp of the
	// deletes of its rows.
	readAt int64
	err    error
}

type indexRow struct {
	last   time.Time
	digest string
}

// readIndexPage reads one page of (day, shard) from state.
func (w *expiryWalk) readIndexPage(ctx context.Context, day, shard int, state []byte) indexPage {
	s := w.s
	p := indexPage{readAt: time.Now().UnixMicro()}
	it := s.query(ctx, s.stmts.listDayIndex, day, shard, w.cutoff).PageSize(pageSize).PageState(state).Iter()
	var r indexRow
	for it.Scan(&r.last, &r.digest) {
		p.rows = append(p.rows, r)
	}
	p.next = it.PageState()
	p.err = it.Close()
	return p
}

// walkDay walks every shard of day (until the walk is full) and reports
// whether it read all of them and left no row behind. The first pages of
// the shards are read concurrently: most shards of a day are small or
// empty, so this is most of the reading.
func (w *expiryWalk) walkDay(ctx context.Context, day int) (drained bool, err error) {
	first := make([]indexPage, mediaDayShards)
	sem := make(chan struct{}, mediaReadConcurrency)
	var wg sync.WaitGroup
	for shard := range first {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			first[shard] = w.readIndexPage(ctx, day, shard, nil)
		})
	}
	wg.Wait()
	drained = true
	for shard := range first {
		if w.full() {
			return false, nil
		}
		kept, complete, err := w.walkShard(ctx, day, shard, first[shard])
		if err != nil {
			return false, err
		}
		if kept > 0 || !complete {
			drained = false
		}
	}
	return drained, nil
}

// walkShard checks the rows of one index partition against their records,
// from its first page on, until the partition ends or the walk is full.
func (w *expiryWalk) walkShard(ctx context.Context, day, shard int, p indexPage) (kept int, complete bool, err error) {
	s := w.s
	for {
		if p.err != nil {
			return 0, false, p.err
		}
		for i, r := range p.rows {
			if w.full() {
				return kept + len(p.rows) - i, false, nil
			}
			b, found, err := s.readBlob(ctx, r.digest, gocql.LocalQuorum)
			if err != nil {
				return 0, false, err
			}
			if !found || b.LastReferenced.After(r.last) {
				if err := s.query(ctx, s.stmts.unindexBlob, p.readAt, day, shard, r.last, r.digest).Exec(); err != nil {
					return 0, false, err
				}
			} else {
				kept++
			}
			if found && b.LastReferenced.Before(w.cutoff) && !w.seen[b.Digest] {
				w.seen[b.Digest] = true
				w.out = append(w.out, b)
			}
		}
		if len(p.next) == 0 {
			return kept, true, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, false, err
		}
		p = w.readIndexPage(ctx, day, shard, p.next)
	}
}

// AddMediaUsage implements persistence.MediaStore: one row for this add,
// then the partition's sum (see the top of this file).
func (s *Store) AddMediaUsage(ctx context.Context, userID, day string, bytes int64) (int64, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: add %d bytes to the media usage of %q on %s: %w", bytes, userID, day, classify(err))
	}
	if err := validDay(day); err != nil {
		return 0, wrap(err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	if bytes != 0 {
		if err := s.query(ctx, s.stmts.insertUsage, userID, day, gocql.TimeUUID(), bytes).Exec(); err != nil {
			return 0, wrap(err)
		}
	}
	total, err := s.mediaUsage(ctx, userID, day)
	if err != nil {
		return 0, wrap(err)
	}
	return total, nil
}

// MediaUsage implements persistence.MediaStore.
func (s *Store) MediaUsage(ctx context.Context, userID, day string) (int64, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: media usage of %q on %s: %w", userID, day, classify(err))
	}
	if err := validDay(day); err != nil {
		return 0, wrap(err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	total, err := s.mediaUsage(ctx, userID, day)
	if err != nil {
		return 0, wrap(err)
	}
	return total, nil
}

func (s *Store) mediaUsage(ctx context.Context, userID, day string) (int64, error) {
	var total int64
	err := s.query(ctx, s.stmts.sumUsage, userID, day).Scan(&total)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, nil
	}
	return total, err
}

// validDay reports whether day is a date in the "2006-01-02" form.
func validDay(day string) error {
	if _, err := time.Parse(time.DateOnly, day); err != nil || len(day) != len(time.DateOnly) {
		return fmt.Errorf("day %q: want YYYY-MM-DD", day)
	}
	return nil
}
