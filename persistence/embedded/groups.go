package embedded

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Group records (persistence.GroupStore). Key layout, continuing keys.go:
//
//	0x10 group state   str(groupID)                          -> courierpb.GroupState
//	0x11 group log     str(groupID) u64(groupSeq)            -> courierpb.GroupLogEntry (expires_at_ms set)
//	0x12 group dedupe  str(groupID) str(sender) str(clientMsgID) -> u64(groupSeq) i64(storedAtMs) i64(expiresAtMs)
//	0x13 fan-out cursor str(groupID)                         -> u64(through)
//	0x14 pending fan-out str(groupID)                        -> u64(highest group_seq committed)
//	0x15 user's group  str(userID) str(groupID)              -> empty
//
// Log entries and dedupe records are indexed in the expiry index (0x08) like
// inbox records. A group's writes that read before they write (the state's
// compare-and-set, the pending marker, the cursor) hold the group's stripe
// of casMu.
const (
	prefixGroupState   byte = 0x10
	prefixGroupLog     byte = 0x11
	prefixGroupDedupe  byte = 0x12
	prefixGroupCursor  byte = 0x13
	prefixGroupPending byte = 0x14
	prefixUserGroup    byte = 0x15
)

var _ persistence.GroupStore = (*Store)(nil)

func groupStateKey(groupID string) []byte { return appendStr([]byte{prefixGroupState}, groupID) }

func groupLogPrefix(groupID string) []byte { return appendStr([]byte{prefixGroupLog}, groupID) }

func groupLogKey(groupID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(groupLogPrefix(groupID), seq)
}

func groupDedupeKey(groupID, senderID, clientMsgID string) []byte {
	b := appendStr([]byte{prefixGroupDedupe}, groupID)
	b = appendStr(b, senderID)
	return appendStr(b, clientMsgID)
}

func groupCursorKey(groupID string) []byte { return appendStr([]byte{prefixGroupCursor}, groupID) }

func groupPendingKey(groupID string) []byte { return appendStr([]byte{prefixGroupPending}, groupID) }

func userGroupPrefix(userID string) []byte { return appendStr([]byte{prefixUserGroup}, userID) }

func userGroupKey(userID, groupID string) []byte { return appendStr(userGroupPrefix(userID), groupID) }

func encodeGroupDedupe(seq uint64, storedAtMs, expiresAtMs int64) []byte {
	b := make([]byte, 0, 24)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(storedAtMs))
	return binary.BigEndian.AppendUint64(b, uint64(expiresAtMs))
}

func decodeGroupDedupe(v []byte) (seq uint64, storedAtMs, expiresAtMs int64, err error) {
	if len(v) != 24 {
		return 0, 0, 0, errCorrupt
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), int64(binary.BigEndian.Uint64(v[16:])), nil
}

func decodeU64(v []byte) (uint64, error) {
	if len(v) != 8 {
		return 0, errCorrupt
	}
	return binary.BigEndian.Uint64(v), nil
}

// groupRecordExpiry reads the expiry of an expiring group record (for the
// sweeper).
func groupRecordExpiry(key, value []byte) (int64, bool, error) {
	switch key[0] {
	case prefixGroupLog:
		var e courierpb.GroupLogEntry
		if err := proto.Unmarshal(value, &e); err != nil {
			return 0, true, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		return e.GetExpiresAtMs(), true, nil
	case prefixGroupDedupe:
		_, _, exp, err := decodeGroupDedupe(value)
		return exp, true, err
	}
	return 0, false, nil
}

// LoadGroup implements persistence.GroupStore.
func (s *Store) LoadGroup(ctx context.Context, groupID string) (*courierpb.GroupState, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: load group %q: %w", groupID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	st, err := s.loadGroup(groupID)
	if err != nil {
		return nil, wrap(err)
	}
	return st, nil
}

func (s *Store) loadGroup(groupID string) (*courierpb.GroupState, error) {
	v, found, err := s.get(groupStateKey(groupID))
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, persistence.ErrNotFound
	}
	st := &courierpb.GroupState{}
	if err := proto.Unmarshal(v, st); err != nil {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	return st, nil
}

// CommitGroup implements persistence.GroupStore: one Pebble batch, synced.
func (s *Store) CommitGroup(ctx context.Context, c persistence.GroupCommit) error {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: commit group %q (%d entries): %w", c.GroupID, len(c.Entries), err)
	}
	if c.GroupID == "" {
		return wrap(errors.New("group id is empty"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	mu := s.casLock(groupStateKey(c.GroupID))
	mu.Lock()
	defer mu.Unlock()

	b := s.db.NewBatch()
	defer b.Close()
	if c.State != nil {
		if c.State.GroupId != c.GroupID {
			return wrap(fmt.Errorf("state names group %q", c.State.GroupId))
		}
		cur, err := s.loadGroup(c.GroupID)
		var stored uint64
		switch {
		case err == nil:
			stored = cur.GetVersion()
		case errors.Is(err, persistence.ErrNotFound):
		default:
			return wrap(err)
		}
		if stored != c.ExpectVersion {
			return wrap(fmt.Errorf("%w: stored version %d, expected %d", persistence.ErrConflict, stored, c.ExpectVersion))
		}
		v, err := proto.Marshal(c.State)
		if err != nil {
			return wrap(err)
		}
		if err := b.Set(groupStateKey(c.GroupID), v, nil); err != nil {
			return wrap(err)
		}
	}
	expiresAtMs := s.now().Add(s.ttl).UnixMilli()
	var maxSeq uint64
	for i, e := range c.Entries {
		if e == nil || e.GroupSeq == 0 {
			return wrap(fmt.Errorf("entry %d has no group_seq", i))
		}
		maxSeq = max(maxSeq, e.GroupSeq)
		stored := proto.Clone(e).(*courierpb.GroupLogEntry)
		stored.ExpiresAtMs = expiresAtMs
		v, err := proto.Marshal(stored)
		if err != nil {
			return wrap(err)
		}
		k := groupLogKey(c.GroupID, e.GroupSeq)
		if err := b.Set(k, v, nil); err != nil {
			return wrap(err)
		}
		if err := b.Set(expiryKey(expiresAtMs, k), nil, nil); err != nil {
			return wrap(err)
		}
	}
	for _, d := range c.Dedupe {
		k := groupDedupeKey(c.GroupID, d.SenderID, d.ClientMsgID)
		if err := b.Set(k, encodeGroupDedupe(d.GroupSeq, d.StoredAtMs, expiresAtMs), nil); err != nil {
			return wrap(err)
		}
		if err := b.Set(expiryKey(expiresAtMs, k), nil, nil); err != nil {
			return wrap(err)
		}
	}
	if maxSeq > 0 {
		v, found, err := s.get(groupPendingKey(c.GroupID))
		if err != nil {
			return wrap(err)
		}
		if found {
			prev, err := decodeU64(v)
			if err != nil {
				return wrap(err)
			}
			maxSeq = max(maxSeq, prev)
		}
		if err := b.Set(groupPendingKey(c.GroupID), binary.BigEndian.AppendUint64(nil, maxSeq), nil); err != nil {
			return wrap(err)
		}
	}
	for _, u := range c.Joined {
		if err := b.Set(userGroupKey(u, c.GroupID), nil, nil); err != nil {
			return wrap(err)
		}
	}
	for _, u := range c.Left {
		if err := b.Delete(userGroupKey(u, c.GroupID), nil); err != nil {
			return wrap(err)
		}
	}
	if b.Empty() {
		return nil
	}
	s.sweepMu.RLock()
	err = s.db.Apply(b, pebble.Sync)
	s.sweepMu.RUnlock()
	if err != nil {
		return wrap(err)
	}
	return nil
}

// GroupLog implements persistence.GroupStore.
func (s *Store) GroupLog(ctx context.Context, groupID string, after uint64, limit int) ([]*courierpb.GroupLogEntry, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: group log %q after %d limit %d: %w", groupID, after, limit, err)
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
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: groupLogKey(groupID, after+1),
		UpperBound: prefixEnd(groupLogPrefix(groupID)),
	})
	if err != nil {
		return nil, wrap(err)
	}
	nowMs := s.now().UnixMilli()
	var out []*courierpb.GroupLogEntry
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		e := &courierpb.GroupLogEntry{}
		if err := proto.Unmarshal(v, e); err != nil {
			_ = it.Close()
			return nil, wrap(fmt.Errorf("%w: %w", errCorrupt, err))
		}
		if e.ExpiresAtMs <= nowMs {
			continue
		}
		e.ExpiresAtMs = 0
		out = append(out, e)
	}
	if err := closeIter(it); err != nil {
		return nil, wrap(err)
	}
	return out, nil
}

// GetGroupDedupe implements persistence.GroupStore.
func (s *Store) GetGroupDedupe(ctx context.Context, groupID, senderID, clientMsgID string) (persistence.GroupDedupe, error) {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: get group dedupe %q<-%q %q: %w", groupID, senderID, clientMsgID, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.GroupDedupe{}, wrap(err)
	}
	defer release()
	v, found, err := s.get(groupDedupeKey(groupID, senderID, clientMsgID))
	if err != nil {
		return persistence.GroupDedupe{}, wrap(err)
	}
	if !found {
		return persistence.GroupDedupe{}, wrap(persistence.ErrNotFound)
	}
	seq, storedAt, expiresAt, err := decodeGroupDedupe(v)
	if err != nil {
		return persistence.GroupDedupe{}, wrap(err)
	}
	if expiresAt <= s.now().UnixMilli() {
		return persistence.GroupDedupe{}, wrap(persistence.ErrNotFound)
	}
	return persistence.GroupDedupe{GroupID: groupID, SenderID: senderID, ClientMsgID: clientMsgID, GroupSeq: seq, StoredAtMs: storedAt}, nil
}

// FanoutCursor implements persistence.GroupStore.
func (s *Store) FanoutCursor(ctx context.Context, groupID string) (uint64, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: fan-out cursor of %q: %w", groupID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	v, found, err := s.get(groupCursorKey(groupID))
	if err != nil {
		return 0, wrap(err)
	}
	if !found {
		return 0, nil
	}
	n, err := decodeU64(v)
	if err != nil {
		return 0, wrap(err)
	}
	return n, nil
}

// AdvanceFanout implements persistence.GroupStore. The log entries it
// passes are deleted with point tombstones (see DeleteRange), a large
// backlog with one range tombstone.
func (s *Store) AdvanceFanout(ctx context.Context, groupID string, through uint64) error {
	wrap := func(err error) error {
		return fmt.Errorf("embedded: advance fan-out of %q to %d: %w", groupID, through, err)
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	mu := s.casLock(groupStateKey(groupID))
	mu.Lock()
	defer mu.Unlock()
	var cur uint64
	v, found, err := s.get(groupCursorKey(groupID))
	if err != nil {
		return wrap(err)
	}
	if found {
		if cur, err = decodeU64(v); err != nil {
			return wrap(err)
		}
	}
	if through <= cur {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.Set(groupCursorKey(groupID), binary.BigEndian.AppendUint64(nil, through), nil); err != nil {
		return wrap(err)
	}
	pv, pending, err := s.get(groupPendingKey(groupID))
	if err != nil {
		return wrap(err)
	}
	if pending {
		last, err := decodeU64(pv)
		if err != nil {
			return wrap(err)
		}
		if last <= through {
			if err := b.Delete(groupPendingKey(groupID), nil); err != nil {
				return wrap(err)
			}
		}
	}
	start := groupLogKey(groupID, cur+1)
	end := prefixEnd(groupLogPrefix(groupID))
	if through < math.MaxUint64 {
		end = groupLogKey(groupID, through+1)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: start, UpperBound: end})
	if err != nil {
		return wrap(err)
	}
	backlog, n := false, 0
	for ok := it.First(); ok; ok = it.Next() {
		if n == pointDeleteLimit {
			backlog = true
			break
		}
		if err := b.Delete(it.Key(), nil); err != nil {
			_ = it.Close()
			return wrap(err)
		}
		n++
	}
	if err := closeIter(it); err != nil {
		return wrap(err)
	}
	if backlog {
		if err := b.DeleteRange(start, end, nil); err != nil {
			return wrap(err)
		}
	}
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		return wrap(err)
	}
	return nil
}

// PendingFanout implements persistence.GroupStore.
func (s *Store) PendingFanout(ctx context.Context, limit int) ([]string, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: pending fan-outs: %w", err) }
	if limit <= 0 {
		return nil, wrap(errors.New("limit must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	return s.scanNames([]byte{prefixGroupPending}, limit, wrap)
}

// ListUserGroups implements persistence.GroupStore.
func (s *Store) ListUserGroups(ctx context.Context, userID string) ([]string, error) {
	wrap := func(err error) error { return fmt.Errorf("embedded: groups of %q: %w", userID, err) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	return s.scanNames(userGroupPrefix(userID), math.MaxInt, wrap)
}

// scanNames returns the str() that follows prefix in each key under it.
func (s *Store) scanNames(prefix []byte, limit int, wrap func(error) error) ([]string, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, wrap(err)
	}
	var out []string
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		name, _, err := readStr(it.Key()[len(prefix):])
		if err != nil {
			_ = it.Close()
			return nil, wrap(err)
		}
		out = append(out, name)
	}
	if err := closeIter(it); err != nil {
		return nil, wrap(err)
	}
	return out, nil
}
