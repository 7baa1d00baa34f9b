package scylla

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"

	"github.com/gocql/gocql"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// CQL bigint is signed: inbox numbers and counters are kept below 2^63,
// which a counter advancing a million numbers a second reaches in 290,000
// years. Range and delete bounds above it are clamped.
const maxSeq = math.MaxInt64

// write is one row of a group commit, with its partition and an estimate
// of its size in a batch.
type write struct {
	partition string
	stmt      string
	args      []any
	bytes     int
}

// Append implements persistence.InboxStore.
//
// A CQL database has no multi-partition atomic write short of a logged
// batch (a batchlog write, the mutations, a batchlog delete: three times
// the work), but each partition's share of an unlogged batch is applied
// atomically. Append gets the guarantee that matters from that: a dedupe
// record, which makes a retried send answer "already stored", never exists
// without its entries, so a message acknowledged once is never lost by a
// retry.
//   - A record with entries for its recipient in this Append is written as
//     a marker beside those entries, in the same partition mutations
//     (marker.go): one round trip for both.
//   - A record without such entries goes to the dedupe table, and only
//     once every entry of the Append is stored.
//   - When a partition's rows cannot go in one mutation (AppendConcurrent,
//     or more than one batch's worth for a partition), the markers follow
//     the entries, as the dedupe table's rows do.
//
// The converse is weaker than the embedded store's: when Append fails after
// some entries were written (or with an unknown outcome), those entries
// may stay visible, and a retried send stores the message again under a
// new number; the recipient's SDK drops such a duplicate by
// (sender, client_msg_id). Acknowledged sends are never duplicated: they
// had all their writes confirmed.
//
// Every write is idempotent with a fixed key, so the driver may retry it.
// How the rows are sent depends on Options.AppendMode.
func (s *Store) Append(ctx context.Context, entries []persistence.InboxAppend, dedupe []persistence.DedupeRecord) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: append %d entries and %d dedupe records: %w", len(entries), len(dedupe), classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if len(entries) == 0 && len(dedupe) == 0 {
		return nil
	}

	rows := make([]write, 0, len(entries)+len(dedupe))
	var devices map[string][]uint32 // recipient → its partitions written here
	if len(dedupe) > 0 {
		devices = make(map[string][]uint32)
	}
	for i, e := range entries {
		if e.Entry == nil {
			return wrap(fmt.Errorf("entry %d for %q/%d is nil", i, e.UserID, e.DeviceID))
		}
		seq := e.Entry.GetInboxSeq()
		if seq > maxSeq {
			return wrap(fmt.Errorf("inbox_seq %d of %q/%d is above 2^63-1", seq, e.UserID, e.DeviceID))
		}
		b, err := proto.Marshal(e.Entry)
		if err != nil {
			return wrap(err)
		}
		rows = append(rows, write{
			partition: inboxPartition(e.UserID, e.DeviceID),
			stmt:      s.stmts.insertEntry,
			args:      []any{e.UserID, int64(e.DeviceID), int64(seq), b},
			bytes:     len(e.UserID) + len(b) + 32,
		})
		if devs := devices[e.UserID]; devices != nil && !slices.Contains(devs, e.DeviceID) {
			devices[e.UserID] = append(devs, e.DeviceID)
		}
	}

	var markers, table []write
	for _, d := range dedupe {
		devs := devices[d.RecipientID]
		if len(devs) == 0 {
			table = append(table, write{
				partition: d.RecipientID + "\x00" + d.SenderID,
				stmt:      s.stmts.insertDedupe,
				args:      []any{d.RecipientID, d.SenderID, d.ClientMsgID, d.StoredAtMs},
				bytes:     len(d.RecipientID) + len(d.SenderID) + len(d.ClientMsgID) + 32,
			})
			continue
		}
		b := encodeMarker(d, devs)
		seq := markerSeq(d.SenderID, d.ClientMsgID)
		for _, dev := range devs {
			markers = append(markers, write{
				partition: inboxPartition(d.RecipientID, dev),
				stmt:      s.stmts.insertEntry,
				args:      []any{d.RecipientID, int64(dev), seq, b},
				bytes:     len(d.RecipientID) + len(b) + 32,
			})
		}
	}

	// First the entries, with their markers when each partition's rows go
	// out as one mutation; then whatever must wait for every entry.
	first, later := rows, markers
	if all := append(rows, markers...); s.oneMutationPerPartition(all) {
		first, later = all, nil
	}
	if len(entries) == 0 {
		first = append(first, table...)
	} else {
		later = append(later, table...)
	}
	if err := s.writeAll(ctx, first); err != nil {
		return wrap(err)
	}
	if err := s.writeAll(ctx, later); err != nil {
		return wrap(fmt.Errorf("entries stored, dedupe records not: %w", err))
	}
	return nil
}

// inboxPartition names one device inbox partition in a write.
func inboxPartition(userID string, deviceID uint32) string {
	return userID + "\x00" + strconv.FormatUint(uint64(deviceID), 10)
}

// oneMutationPerPartition reports whether writeAll sends each partition's
// rows of rows as a single mutation, so that they are applied together or
// not at all.
func (s *Store) oneMutationPerPartition(rows []write) bool {
	parts := partitions(rows)
	if s.coal != nil && fits(rows, parts) {
		return true
	}
	return s.mode != AppendConcurrent && len(batches(rows)) == parts
}

// writeAll stores rows, concurrently, and returns the first error after
// every request has finished (none is left running behind the caller).
func (s *Store) writeAll(ctx context.Context, rows []write) error {
	if len(rows) == 0 {
		return nil
	}
	if s.coal != nil {
		if parts := partitions(rows); fits(rows, parts) {
			return s.coal.write(ctx, rows, parts)
		}
	}
	var units []func(context.Context) error
	switch s.mode {
	case AppendConcurrent:
		for _, r := range rows {
			units = append(units, func(ctx context.Context) error {
				return s.query(ctx, r.stmt, r.args...).Exec()
			})
		}
	default:
		for _, b := range batches(rows) {
			units = append(units, func(ctx context.Context) error { return s.execBatch(ctx, b) })
		}
	}
	if len(units) == 1 {
		return units[0](ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		sem   = make(chan struct{}, maxConcurrentWrites)
	)
	for _, u := range units {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := u(ctx); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel() // the Append fails anyway: stop sending the rest
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// partitions counts the distinct partitions rows write to.
func partitions(rows []write) int {
	n := 0
	for i, r := range rows {
		if !slices.ContainsFunc(rows[:i], func(o write) bool { return o.partition == r.partition }) {
			n++
		}
	}
	return n
}

// batches groups rows by partition, in their order, and cuts each
// partition's rows into unlogged batches under maxBatchBytes and
// maxBatchRows. A single-partition unlogged batch is one mutation, applied
// atomically and in isolation on each replica. A row too big for a batch
// of its own goes alone (a batch of one).
func batches(rows []write) [][]write {
	var order []string
	byPart := make(map[string][]write)
	for _, r := range rows {
		if _, ok := byPart[r.partition]; !ok {
			order = append(order, r.partition)
		}
		byPart[r.partition] = append(byPart[r.partition], r)
	}
	var out [][]write
	for _, p := range order {
		var cur []write
		size := 0
		for _, r := range byPart[p] {
			if len(cur) > 0 && (size+r.bytes > maxBatchBytes || len(cur) == maxBatchRows) {
				out = append(out, cur)
				cur, size = nil, 0
			}
			cur = append(cur, r)
			size += r.bytes
		}
		out = append(out, cur)
	}
	return out
}

func (s *Store) execBatch(ctx context.Context, rows []write) error {
	if len(rows) == 1 {
		r := rows[0]
		return s.query(ctx, r.stmt, r.args...).Exec()
	}
	b := s.sess.Session.Batch(gocql.UnloggedBatch).WithContext(ctx)
	for _, r := range rows {
		b.Entries = append(b.Entries, gocql.BatchEntry{Stmt: r.stmt, Args: r.args, Idempotent: true})
	}
	return b.Exec()
}

// Range implements persistence.InboxStore.
func (s *Store) Range(ctx context.Context, userID string, deviceID uint32, after uint64, limit int) ([]*courierpb.InboxEntry, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: range inbox %q/%d after %d limit %d: %w", userID, deviceID, after, limit, classify(err))
	}
	if limit <= 0 {
		return nil, wrap(errors.New("limit must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	if after >= maxSeq {
		return nil, nil
	}
	var out []*courierpb.InboxEntry
	var corrupt error
	q := s.query(ctx, s.stmts.rangeInbox, userID, int64(deviceID), int64(after), limit)
	err = s.pages(ctx, q, limit, func(it *gocql.Iter) bool {
		var seq int64
		var b []byte
		if !it.Scan(&seq, &b) {
			return false
		}
		e := &courierpb.InboxEntry{}
		if err := proto.Unmarshal(b, e); err != nil && corrupt == nil {
			corrupt = fmt.Errorf("entry %d does not decode: %w", seq, err)
		}
		out = append(out, e)
		return true
	})
	if err == nil {
		err = corrupt
	}
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// DeleteRange implements persistence.InboxStore with one range tombstone.
func (s *Store) DeleteRange(ctx context.Context, userID string, deviceID uint32, after, through uint64) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: delete inbox %q/%d (%d, %d]: %w", userID, deviceID, after, through, classify(err))
	}
	if after >= through || after >= maxSeq {
		return nil
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	through = min(through, maxSeq)
	if s.coal != nil {
		row := write{partition: inboxPartition(userID, deviceID), stmt: s.stmts.deleteRange,
			args: []any{userID, int64(deviceID), int64(after), int64(through)}, bytes: len(userID) + 48}
		if err := s.coal.write(ctx, []write{row}, 1); err != nil {
			return wrap(err)
		}
		return nil
	}
	if err := s.query(ctx, s.stmts.deleteRange, userID, int64(deviceID), int64(after), int64(through)).Exec(); err != nil {
		return wrap(err)
	}
	return nil
}

// DeleteInbox implements persistence.InboxStore with a partition tombstone.
func (s *Store) DeleteInbox(ctx context.Context, userID string, deviceID uint32) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: delete inbox %q/%d: %w", userID, deviceID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if err := s.query(ctx, s.stmts.deleteInbox, userID, int64(deviceID)).Exec(); err != nil {
		return wrap(err)
	}
	return nil
}

// GetDedupe implements persistence.InboxStore: the marker in the inbox
// partitions of devices (concurrently), and the dedupe table when no
// partition has one.
func (s *Store) GetDedupe(ctx context.Context, recipientID string, devices []uint32, senderID, clientMsgID string) (persistence.DedupeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: get dedupe %q<-%q %q: %w", recipientID, senderID, clientMsgID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.DedupeRecord{}, wrap(err)
	}
	defer release()
	rec := persistence.DedupeRecord{RecipientID: recipientID, SenderID: senderID, ClientMsgID: clientMsgID}
	found, err := s.markers(ctx, recipientID, devices, senderID, clientMsgID)
	if err != nil {
		return persistence.DedupeRecord{}, wrap(err)
	}
	if len(found) > 0 {
		storedAt, ok := markedRecord(devices, found)
		if !ok {
			return persistence.DedupeRecord{}, wrap(fmt.Errorf("%w: the message's append did not complete on every device", persistence.ErrNotFound))
		}
		rec.StoredAtMs = storedAt
		return rec, nil
	}
	if err := s.query(ctx, s.stmts.getDedupe, recipientID, senderID, clientMsgID).Scan(&rec.StoredAtMs); err != nil {
		return persistence.DedupeRecord{}, wrap(err)
	}
	return rec, nil
}

// markers reads the marker of (senderID, clientMsgID) in each device's
// inbox, and returns those found, by device. A marker of another record
// that hashed to the same place is not found.
func (s *Store) markers(ctx context.Context, recipientID string, devices []uint32, senderID, clientMsgID string) (map[uint32]marker, error) {
	seq := markerSeq(senderID, clientMsgID)
	var (
		mu    sync.Mutex
		found = make(map[uint32]marker)
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, maxConcurrentWrites)
	)
	for _, dev := range devices {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var b []byte
			err := s.query(ctx, s.stmts.getMarker, recipientID, int64(dev), seq).Scan(&b)
			var m marker
			if err == nil {
				m, err = decodeMarker(b)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, gocql.ErrNotFound):
			case err != nil:
				if first == nil {
					first = fmt.Errorf("read marker in device %d inbox: %w", dev, err)
				}
			case m.senderID == senderID && m.clientMsgID == clientMsgID:
				found[dev] = m
			}
		})
	}
	wg.Wait()
	return found, first
}
