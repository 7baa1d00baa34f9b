// Package embedded implements persistence.Store on an embedded Pebble
// database in a local directory, for single-node deployments and tests.
//
// Every write is committed with pebble.Sync, so a nil error means the write
// is in the fsync'd WAL. Writers are not serialised by this package: Pebble's
// commit pipeline groups the WAL syncs of concurrent commits, which is what
// makes many small concurrent Appends cheap. The few read-modify-write
// operations (handle claim, sequence leases, secrets) take a mutex, which is
// enough because Pebble's directory lock keeps any other process out.
//
// Expiring records (inbox entries and dedupe records) are hidden from reads
// as soon as they expire and are physically deleted by a background sweeper
// owned by the Store.
package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Options configures Open. The zero value is usable.
type Options struct {
	// InboxTTL is how long inbox entries and dedupe records live after their
	// Append. Default persistence.DefaultInboxTTL.
	InboxTTL time.Duration
	// Now is the clock used for expiry. Default time.Now; tests replace it
	// to expire records without sleeping.
	Now func() time.Time
	// Logger receives the store's and Pebble's logs. Default slog.Default().
	Logger *slog.Logger
	// SweepInterval is how often expired records are physically deleted.
	// Default one minute.
	SweepInterval time.Duration
	// CacheSize is the size of Pebble's block cache in bytes. Default 64 MiB.
	CacheSize int64
	// SyncInterval is the least time between two WAL syncs: commits that
	// arrive meanwhile wait and share the next sync. Default 1ms;
	// negative syncs as soon as asked.
	SyncInterval time.Duration
}

const (
	defaultSweepInterval = time.Minute
	defaultCacheSize     = 64 << 20
	// defaultSyncInterval: every message costs several fsync'd commits
	// (inbox entry, receipt, deletes). Under moderate load they arrive a
	// little apart and each took its own fdatasync, a tenth of the server's
	// CPU at 3,000 msgs/s; waiting up to a millisecond lets them share
	// one, for a latency cost far below a network round trip.
	defaultSyncInterval = time.Millisecond
	// sweepChunkSize bounds how many due records the sweeper handles while
	// holding writers off, so an Append never waits behind a long sweep.
	sweepChunkSize = 512
	casStripes     = 64
	// blindDeleteLimit is the widest DeleteRange that deletes every number
	// in the range without looking which exist. Acks of a connected device
	// cover a few consecutive numbers: writing their tombstones costs less
	// than the iterator that would find them (which opens every overlapping
	// sstable). A tombstone for a number that was never used is harmless
	// and dropped by compaction.
	blindDeleteLimit = 64
	// pointDeleteLimit is the largest DeleteRange done with point
	// tombstones; see DeleteRange.
	pointDeleteLimit = 1024
)

// Store is a persistence.Store backed by Pebble. It is safe for concurrent
// use. Close must be called to stop the sweeper and release the directory.
type Store struct {
	db  *pebble.DB
	ttl time.Duration
	now func() time.Time
	log *slog.Logger

	// mu is held shared by every operation for its whole duration, and
	// exclusively by Close, so Close waits for in-flight calls instead of
	// pulling the database out from under them (Pebble panics when used
	// after Close).
	mu     sync.RWMutex
	closed bool

	// userMu makes CreateUser's check-and-set of the handle atomic. Account
	// creation is rare, so one lock costs nothing.
	userMu sync.Mutex
	// casMu stripes the read-modify-write of sequence counters and secrets
	// by key, so grains activating at once do not queue behind one fsync.
	casMu   [casStripes]sync.Mutex
	casSeed maphash.Seed

	// sweepMu stops the sweeper's read-check-delete from racing an Append
	// that replaces the record it is about to delete. Appends hold it shared
	// and so still commit concurrently; the sweeper holds it exclusively for
	// one bounded chunk at a time.
	sweepMu sync.RWMutex

	stopSweep chan struct{}
	sweepDone chan struct{}
}

var _ persistence.Store = (*Store)(nil)

var errUserExists = errors.New("user id already registered")

// Open opens (creating if needed) the store in dir and starts its sweeper.
func Open(dir string, opts Options) (*Store, error) {
	if opts.InboxTTL <= 0 {
		opts.InboxTTL = persistence.DefaultInboxTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = defaultSweepInterval
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = defaultCacheSize
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = defaultSyncInterval
	}
	syncInterval := max(opts.SyncInterval, 0)
	log := opts.Logger.With("component", "embedded-store")
	popts := &pebble.Options{
		CacheSize: opts.CacheSize,
		// A new store has no older binaries to stay readable by, so take the
		// newest stable on-disk format rather than Pebble's conservative
		// default.
		FormatMajorVersion: pebble.FormatNewest,
		// Inbox entries live briefly (deleted on ack): a larger memtable lets
		// most of them die before they are ever flushed and compacted.
		MemTableSize:       32 << 20,
		Logger:             pebbleLogger{log: opts.Logger.With("component", "pebble")},
		WALMinSyncInterval: func() time.Duration { return syncInterval },
	}
	// Every new message checks its dedupe record, which almost never exists:
	// bloom filters answer those misses without reading sstable blocks.
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	s := &Store{
		db:        db,
		ttl:       opts.InboxTTL,
		now:       opts.Now,
		log:       log,
		casSeed:   maphash.MakeSeed(),
		stopSweep: make(chan struct{}),
		sweepDone: make(chan struct{}),
	}
	if err := s.foldLegacyHandles(); err != nil {
		_ = db.Close()
		return nil, err
	}
	go s.sweepLoop(opts.SweepInterval)
	return s, nil
}

// Close stops the sweeper, waits for in-flight calls and closes the
// database. Calls after Close, including a second Close, fail with
// persistence.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("embedded: close: %w", persistence.ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()

	close(s.stopSweep)
	<-s.sweepDone

	// New calls now fail fast; taking the lock waits out the ones already
	// running.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close: %w", err)
	}
	return nil
}

// enter admits one operation; the returned release must be called when it
// no longer touches the database.
func (s *Store) enter(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, persistence.ErrClosed
	}
	return s.mu.RUnlock, nil
}

// get returns a copy of key's value; found is false when the key is absent.
// The copy is never nil when found, so an empty stored value stays
// distinguishable from a missing one.
func (s *Store) get(key []byte) (value []byte, found bool, err error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	value = append([]byte{}, v...)
	if err := closer.Close(); err != nil {
		return nil, false, err
	}
	return value, true, nil
}

func (s *Store) casLock(key []byte) *sync.Mutex {
	return &s.casMu[maphash.Bytes(s.casSeed, key)%casStripes]
}

// CreateUser implements persistence.UserStore. Retrying a CreateUser whose
// user already holds the handle succeeds, so a caller unsure whether its
// first attempt landed can simply retry.
func (s *Store) CreateUser(ctx context.Context, u persistence.User) error {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: create user %q with handle %q: %w", u.ID, u.Handle, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()

	s.userMu.Lock()
	defer s.userMu.Unlock()
	owner, taken, err := s.get(handleKey(u.Handle))
	if err != nil {
		return wrap(err)
	}
	if taken {
		if string(owner) == u.ID {
			return nil
		}
		return wrap(persistence.ErrHandleTaken)
	}
	// Overwriting an existing user would orphan its handle's index entry.
	if _, exists, err := s.get(userKey(u.ID)); err != nil {
		return wrap(err)
	} else if exists {
		return wrap(errUserExists)
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(handleKey(u.Handle), []byte(u.ID), nil); err != nil {
		return wrap(err)
	}
	if err := b.Set(userKey(u.ID), encodeUser(u.Handle, u.CreatedAt), nil); err != nil {
		return wrap(err)
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// GetUser implements persistence.UserStore.
func (s *Store) GetUser(ctx context.Context, userID string) (persistence.User, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: get user %q: %w", userID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	defer release()
	u, err := s.getUser(userID)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	return u, nil
}

func (s *Store) getUser(userID string) (persistence.User, error) {
	v, found, err := s.get(userKey(userID))
	if err != nil {
		return persistence.User{}, err
	}
	if !found {
		return persistence.User{}, persistence.ErrNotFound
	}
	handle, createdAt, err := decodeUser(v)
	if err != nil {
		return persistence.User{}, err
	}
	return persistence.User{ID: userID, Handle: handle, CreatedAt: createdAt}, nil
}

// GetUserByHandle implements persistence.UserStore.
func (s *Store) GetUserByHandle(ctx context.Context, handle string) (persistence.User, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: get user by handle %q: %w", handle, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	defer release()
	id, found, err := s.lookupHandle(handle)
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	if !found {
		return persistence.User{}, wrap(persistence.ErrNotFound)
	}
	u, err := s.getUser(string(id))
	if errors.Is(err, persistence.ErrNotFound) {
		// CreateUser writes both records in one batch, so a dangling handle
		// means damage, not a user that does not exist.
		err = fmt.Errorf("handle points at missing user %q: %w", id, errCorrupt)
	}
	if err != nil {
		return persistence.User{}, wrap(err)
	}
	return u, nil
}

// PutDevice implements persistence.UserStore.
func (s *Store) PutDevice(ctx context.Context, d persistence.Device) error {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: put device %q/%d: %w", d.UserID, d.DeviceID, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if err := s.db.Set(deviceKey(d.UserID, d.DeviceID), encodeDevice(d.SecretHash, d.CreatedAt), pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// GetDevice implements persistence.UserStore.
func (s *Store) GetDevice(ctx context.Context, userID string, deviceID uint32) (persistence.Device, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: get device %q/%d: %w", userID, deviceID, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.Device{}, wrap(err)
	}
	defer release()
	v, found, err := s.get(deviceKey(userID, deviceID))
	if err != nil {
		return persistence.Device{}, wrap(err)
	}
	if !found {
		return persistence.Device{}, wrap(persistence.ErrNotFound)
	}
	hash, createdAt, err := decodeDevice(v)
	if err != nil {
		return persistence.Device{}, wrap(err)
	}
	return persistence.Device{UserID: userID, DeviceID: deviceID, SecretHash: hash, CreatedAt: createdAt}, nil
}

// ListDevices implements persistence.UserStore. Device keys end in the
// big-endian device id, so iteration order is DeviceID order.
func (s *Store) ListDevices(ctx context.Context, userID string) ([]persistence.Device, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: list devices of %q: %w", userID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	prefix := devicePrefix(userID)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, wrap(err)
	}
	var out []persistence.Device
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != len(prefix)+4 {
			_ = it.Close()
			return nil, wrap(errCorrupt)
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		hash, createdAt, err := decodeDevice(v)
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		out = append(out, persistence.Device{
			UserID:     userID,
			DeviceID:   binary.BigEndian.Uint32(k[len(prefix):]),
			SecretHash: hash,
			CreatedAt:  createdAt,
		})
	}
	if err := closeIter(it); err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// closeIter closes it and reports the first error it met.
func closeIter(it *pebble.Iterator) error {
	return errors.Join(it.Error(), it.Close())
}

// Append implements persistence.InboxStore. All entries and records go into
// one batch, so the write is atomic and takes a single WAL sync (shared with
// whatever other commits Pebble groups it with).
func (s *Store) Append(ctx context.Context, entries []persistence.InboxAppend, dedupe []persistence.DedupeRecord) error {
	return s.append(ctx, entries, dedupe, pebble.Sync)
}

// AppendLazy implements persistence.LazyAppender: Append without the WAL
// sync. Pebble has one write-ahead log, in commit order, so whatever a
// later synced commit makes durable includes this write.
func (s *Store) AppendLazy(ctx context.Context, entries []persistence.InboxAppend) error {
	return s.append(ctx, entries, nil, pebble.NoSync)
}

func (s *Store) append(ctx context.Context, entries []persistence.InboxAppend, dedupe []persistence.DedupeRecord, durability *pebble.WriteOptions) error {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: append %d entries and %d dedupe records: %w", len(entries), len(dedupe), err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	if len(entries) == 0 && len(dedupe) == 0 {
		return nil
	}
	expiresAtMs := s.now().Add(s.ttl).UnixMilli()
	bucketMs := inboxExpiryBucket(expiresAtMs)

	b := s.db.NewBatch()
	defer b.Close()
	var key, lastInbox []byte
	for i, e := range entries {
		if e.Entry == nil {
			return wrap(fmt.Errorf("entry %d for %q/%d is nil", i, e.UserID, e.DeviceID))
		}
		v, err := proto.Marshal(&courierpb.StoredEntry{Entry: e.Entry, ExpiresAtMs: expiresAtMs})
		if err != nil {
			return wrap(err)
		}
		// The batch copies keys and values: one buffer holds the entry's key
		// and then its inbox's expiry index key.
		key = appendInboxPrefix(key[:0], e.UserID, e.DeviceID)
		n := len(key)
		key = binary.BigEndian.AppendUint64(key, e.Entry.GetInboxSeq())
		if err := b.Set(key, v, nil); err != nil {
			return wrap(err)
		}
		if bytes.Equal(key[:n], lastInbox) {
			continue // this batch already indexed the inbox
		}
		lastInbox = append(lastInbox[:0], key[:n]...)
		if err := b.Set(appendExpiryKey(key[len(key):], bucketMs, key[:n]), nil, nil); err != nil {
			return wrap(err)
		}
	}
	for _, d := range dedupe {
		k := dedupeKey(d.RecipientID, d.SenderID, d.ClientMsgID)
		if err := b.Set(k, encodeDedupe(d.StoredAtMs, expiresAtMs), nil); err != nil {
			return wrap(err)
		}
		if err := b.Set(expiryKey(expiresAtMs, k), nil, nil); err != nil {
			return wrap(err)
		}
	}

	s.sweepMu.RLock()
	err = s.db.Apply(b, durability)
	s.sweepMu.RUnlock()
	if err != nil {
		return wrap(err)
	}
	return nil
}

// Range implements persistence.InboxStore. limit must be positive: a zero
// limit is almost certainly a caller bug that would otherwise look like an
// empty inbox.
func (s *Store) Range(ctx context.Context, userID string, deviceID uint32, after uint64, limit int) ([]*courierpb.InboxEntry, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: range inbox %q/%d after %d limit %d: %w", userID, deviceID, after, limit, err)
	}
	if limit <= 0 {
		return nil, wrap(errors.New("limit must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	if after == math.MaxUint64 {
		return nil, nil
	}
	prefix := inboxPrefix(userID, deviceID)
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: inboxKey(userID, deviceID, after+1),
		UpperBound: prefixEnd(prefix),
	})
	if err != nil {
		return nil, wrap(err)
	}
	nowMs := s.now().UnixMilli()
	var out []*courierpb.InboxEntry
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		var se courierpb.StoredEntry
		if err := proto.Unmarshal(v, &se); err != nil {
			_ = it.Close()
			return nil, wrap(fmt.Errorf("%w: %w", errCorrupt, err))
		}
		if se.GetExpiresAtMs() <= nowMs {
			continue
		}
		if se.GetEntry() == nil {
			_ = it.Close()
			return nil, wrap(errCorrupt)
		}
		out = append(out, se.GetEntry())
	}
	if err := closeIter(it); err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// deleteDurability: acked entries are deleted without an fsync of their own
// (see persistence.InboxStore.DeleteRange). At light load every commit
// syncs alone, so this halves the fsyncs of a 1:1 message (two of its four
// commits are deletes), and an ack no longer waits for the disk.
var deleteDurability = pebble.NoSync

// DeleteRange implements persistence.InboxStore.
//
// An ack normally covers a handful of entries, and those get point
// tombstones. Range tombstones would be simpler, but Pebble re-fragments every
// range tombstone in the memtable on the first read after each new one, so a
// range tombstone per ack would make every read slower as the ack rate grows.
// Only a backlog larger than pointDeleteLimit takes one.
func (s *Store) DeleteRange(ctx context.Context, userID string, deviceID uint32, after, upTo uint64) error {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: delete inbox %q/%d (%d, %d]: %w", userID, deviceID, after, upTo, err)
	}
	if after >= upTo {
		return nil
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	prefix := inboxPrefix(userID, deviceID)
	if after > 0 && upTo-after <= blindDeleteLimit {
		b := s.db.NewBatch()
		defer b.Close()
		// The batch copies each key: one buffer serves them all.
		for seq := after + 1; seq <= upTo; seq++ {
			if err := b.Delete(binary.BigEndian.AppendUint64(prefix, seq), nil); err != nil {
				return wrap(err)
			}
		}
		if err := s.db.Apply(b, deleteDurability); err != nil {
			return wrap(err)
		}
		return nil
	}
	start := prefix
	if after > 0 {
		start = inboxKey(userID, deviceID, after+1)
	}
	end := prefixEnd(prefix)
	if upTo < math.MaxUint64 {
		end = inboxKey(userID, deviceID, upTo+1)
	}

	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return wrap(err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	backlog := false
	for ok := it.First(); ok; ok = it.Next() {
		if b.Count() == pointDeleteLimit {
			backlog = true
			break
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			_ = it.Close()
			return wrap(err)
		}
	}
	if err := closeIter(it); err != nil {
		return wrap(err)
	}
	if backlog {
		err = s.db.DeleteRange(start, end, deleteDurability)
	} else if !b.Empty() {
		err = s.db.Apply(b, deleteDurability)
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// DeleteInbox implements persistence.InboxStore. Dropping a whole inbox is
// rare (device removal), so one range tombstone is the right tool here.
func (s *Store) DeleteInbox(ctx context.Context, userID string, deviceID uint32) error {
	wrap := func(err error) error { return fmt.Errorf("embedded: delete inbox %q/%d: %w", userID, deviceID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	start := inboxPrefix(userID, deviceID)
	if err := s.db.DeleteRange(start, prefixEnd(start), pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// GetDedupe implements persistence.InboxStore. Records are kept apart from
// the inboxes (Append writes both in one batch), so devices do not matter.
func (s *Store) GetDedupe(ctx context.Context, recipientID string, _ []uint32, senderID, clientMsgID string) (persistence.DedupeRecord, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: get dedupe %q<-%q %q: %w", recipientID, senderID, clientMsgID, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.DedupeRecord{}, wrap(err)
	}
	defer release()
	v, found, err := s.get(dedupeKey(recipientID, senderID, clientMsgID))
	if err != nil {
		return persistence.DedupeRecord{}, wrap(err)
	}
	if !found {
		return persistence.DedupeRecord{}, wrap(persistence.ErrNotFound)
	}
	storedAtMs, expiresAtMs, err := decodeDedupe(v)
	if err != nil {
		return persistence.DedupeRecord{}, wrap(err)
	}
	if expiresAtMs <= s.now().UnixMilli() {
		return persistence.DedupeRecord{}, wrap(persistence.ErrNotFound)
	}
	return persistence.DedupeRecord{
		RecipientID: recipientID,
		SenderID:    senderID,
		ClientMsgID: clientMsgID,
		StoredAtMs:  storedAtMs,
	}, nil
}

// LeaseBlock implements persistence.SequenceStore. The counter stores the
// last number handed out; the stripe lock makes read-increment-write a
// compare-and-set within this process, and Pebble's directory lock rules out
// other processes.
func (s *Store) LeaseBlock(ctx context.Context, counter string, size uint64) (first, last uint64, err error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: lease %d from counter %q: %w", size, counter, err)
	}
	if size == 0 {
		return 0, 0, wrap(errors.New("size must be positive"))
	}
	key, prev, done, err := s.lockCounter(ctx, counter)
	if err != nil {
		return 0, 0, wrap(err)
	}
	defer done()
	if prev > math.MaxUint64-size {
		return 0, 0, wrap(errors.New("counter exhausted"))
	}
	first, last = prev+1, prev+size
	if err := s.db.Set(key, binary.BigEndian.AppendUint64(nil, last), pebble.Sync); err != nil {
		return 0, 0, wrap(err)
	}
	return first, last, nil
}

// LastLeased implements persistence.SequenceStore. The stripe lock orders
// it after a lease in flight on the same counter.
func (s *Store) LastLeased(ctx context.Context, counter string) (uint64, error) {
	_, last, done, err := s.lockCounter(ctx, counter)
	if err != nil {
		return 0, fmt.Errorf("embedded: read counter %q: %w", counter, err)
	}
	done()
	return last, nil
}

// lockCounter admits an operation on a counter, takes the counter's stripe
// lock and reads the last number leased (0 if none). done releases both.
func (s *Store) lockCounter(ctx context.Context, counter string) (key []byte, last uint64, done func(), err error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, 0, nil, err
	}
	key = sequenceKey(counter)
	mu := s.casLock(key)
	mu.Lock()
	done = func() { mu.Unlock(); release() }
	v, found, err := s.get(key)
	switch {
	case err != nil:
		done()
		return nil, 0, nil, err
	case !found:
		return key, 0, done, nil
	case len(v) != 8:
		done()
		return nil, 0, nil, errCorrupt
	}
	return key, binary.BigEndian.Uint64(v), done, nil
}

// LoadSecret implements persistence.SecretStore.
func (s *Store) LoadSecret(ctx context.Context, name string) ([]byte, error) {
	release, err := s.enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("embedded: load secret %q: %w", name, err)
	}
	defer release()
	v, found, err := s.get(secretKey(name))
	switch {
	case err != nil:
		return nil, fmt.Errorf("embedded: load secret %q: %w", name, err)
	case !found:
		return nil, persistence.ErrNotFound
	}
	return v, nil
}

// DeleteSecret implements persistence.SecretStore. Under the lock
// LoadOrStoreSecret takes, so one racing it sees the value or nothing.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	release, err := s.enter(ctx)
	if err != nil {
		return fmt.Errorf("embedded: delete secret %q: %w", name, err)
	}
	defer release()
	key := secretKey(name)
	mu := s.casLock(key)
	mu.Lock()
	defer mu.Unlock()
	if err := s.db.Delete(key, pebble.Sync); err != nil {
		return fmt.Errorf("embedded: delete secret %q: %w", name, err)
	}
	return nil
}

// LoadOrStoreSecret implements persistence.SecretStore.
func (s *Store) LoadOrStoreSecret(ctx context.Context, name string, candidate []byte) ([]byte, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: load or store secret %q: %w", name, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	key := secretKey(name)
	mu := s.casLock(key)
	mu.Lock()
	defer mu.Unlock()
	v, found, err := s.get(key)
	if err != nil {
		return nil, wrap(err)
	}
	if found {
		return v, nil
	}
	if err := s.db.Set(key, candidate, pebble.Sync); err != nil {
		return nil, wrap(err)
	}
	return append([]byte{}, candidate...), nil
}
