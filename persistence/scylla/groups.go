package scylla

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Groups (persistence.GroupStore), on the tables of
// migrations/0002_groups.cql:
//
//	group_states  (group_id) version, state          the state, replaced by CAS
//	group_log     ((group_id, bucket), group_seq)    log entries, inbox TTL
//	group_dedupe  ((group_id, sender_id), client_msg_id) dedupe records, inbox TTL
//	group_marks   ((group_id), kind, seq DESC)       kind 0: fan-out cursors,
//	                                                 kind 1: highest group_seq of each commit
//	group_pending ((shard), group_id)                groups that may need a fan-out
//	user_groups   ((user_id), group_id)              the user → groups index
//
// The log is cut into buckets of groupBucketSize group_seqs so no partition
// grows without bound; readers walk buckets from the one holding after+1 up
// to the one holding the highest committed group_seq (the top kind-1 mark).
//
// The cursor and the highest committed group_seq are kept as clustering
// rows, highest first, and only ever added (cursor rows below the cursor and
// commit rows at or below it are pruned with range tombstones): the value
// read is the highest row, so neither can move back when two writers race,
// without an LWT.
//
// # Ordering a commit
//
// CQL cannot make the state's compare-and-set (a Paxos round on one
// partition) and the writes to other partitions atomic together. The state
// CAS is therefore the commit point, and everything else is written before
// it, as idempotent writes with fixed keys and one client timestamp ts:
//
//  1. log entries, dedupe records, the commit's kind-1 mark, the index rows
//     (Joined inserted, Left deleted), concurrently;
//  2. the pending hint (when the commit has entries), once its mark is stored;
//  3. then, when the commit carries a state, the CAS
//     (INSERT ... IF NOT EXISTS when ExpectVersion is 0, else
//     UPDATE ... IF version = ?).
//
// Writing the state last means a state a reader loads always has all of its
// commit's entries, dedupe records and index rows behind it: an acknowledged
// commit never loses anything, and a grain that reloads after any failure
// finds its log complete up to what the state says. The reverse order would
// leave a committed state whose events were never written.
//
// When phase 1 fails, or the CAS does not apply (ErrConflict), the commit's
// rows are deleted again, best effort, with USING TIMESTAMP ts (a tombstone
// wins over a cell of the same timestamp), and Left rows are re-inserted at
// ts+1. Using the commit's own timestamp means the undo shadows only this
// commit's cells and whatever was older, never a later write of a racing
// commit. group_seqs come from a sequence leased by LWT, so two commits never
// share a log entry or a kind-1 mark, and the undo of one cannot delete the
// other's entries. The pending hint is left in place: PendingFanout checks
// every hint against the marks (highest kind-1 above highest kind-0) before
// reporting it, and drops hints that no longer hold.
//
// What a reader may still see of a commit that failed:
//   - between phase 1 and its undo (milliseconds), or forever if the process
//     dies in between or the undo itself fails, the entries of a commit that
//     lost its CAS or never reached it are in GroupLog until the inbox TTL or
//     until the fan-out cursor passes them. A lost CAS means two activations
//     of one group raced (what the CAS exists to catch); a crash in that
//     window is the one case where a member can get an event of a commit
//     that was never acknowledged. Its sends are not acknowledged, so no
//     sender is told "stored" for it, and a retried send is deduplicated by
//     the clients by (sender, client_msg_id), as with Append.
//   - a commit without a state has no commit point: like Append, a failure
//     may leave some of its rows visible (a retry rewrites the same cells:
//     same group_seqs, same keys). Dedupe records are never the only thing
//     written: the actor stores them together with their entries.
//   - an unknown CAS outcome (timeout) is resolved by reading the version at
//     SERIAL (which completes an in-flight Paxos round): the new version
//     means the commit applied (nil), anything else is undone as above; a
//     failed read leaves everything in place and returns ErrUnavailable.
const (
	groupBucketSize = 1024
	// groupPendingShards is how many partitions group_pending is spread over.
	groupPendingShards = 16
	// maxBucketDeletes bounds the log buckets one AdvanceFanout tombstones;
	// entries in older buckets are left to their TTL.
	maxBucketDeletes = 64
	// undoTimeout bounds the best-effort undo of a failed commit, which runs
	// even when the caller's context has ended.
	undoTimeout = 5 * time.Second

	markCursor    int8 = 0
	markCommitted int8 = 1
)

var _ persistence.GroupStore = (*Store)(nil)

// groupStatements are the group tables' CQL. Plain writes carry USING
// TIMESTAMP so a failed commit's undo can shadow exactly its own cells.
type groupStatements struct {
	getState, getVersion, createState, casState string
	insertLog, deleteLog, rangeLog, dropLog     string
	insertDedupe, deleteDedupe, getDedupe       string
	insertCommitted, insertCursor, deleteMark   string
	topMark, pruneMarks, pruneMarksThrough      string
	insertPending, deletePending, listPending   string
	joinUser, leaveUser, listUserGroups         string
}

func buildGroupStatements(ttlSec int) groupStatements {
	return groupStatements{
		getState:    `SELECT state FROM group_states WHERE group_id = ?`,
		getVersion:  `SELECT version FROM group_states WHERE group_id = ?`,
		createState: `INSERT INTO group_states (group_id, version, state) VALUES (?, ?, ?) IF NOT EXISTS`,
		casState:    `UPDATE group_states SET version = ?, state = ? WHERE group_id = ? IF version = ?`,

		insertLog: fmt.Sprintf(`INSERT INTO group_log (group_id, bucket, group_seq, entry) VALUES (?, ?, ?, ?) USING TTL %d AND TIMESTAMP ?`, ttlSec),
		deleteLog: `DELETE FROM group_log USING TIMESTAMP ? WHERE group_id = ? AND bucket = ? AND group_seq = ?`,
		rangeLog:  `SELECT entry FROM group_log WHERE group_id = ? AND bucket = ? AND group_seq > ? ORDER BY group_seq ASC LIMIT ?`,
		dropLog:   `DELETE FROM group_log WHERE group_id = ? AND bucket = ? AND group_seq > ? AND group_seq <= ?`,

		insertDedupe: fmt.Sprintf(`INSERT INTO group_dedupe (group_id, sender_id, client_msg_id, group_seq, stored_at_ms) VALUES (?, ?, ?, ?, ?) USING TTL %d AND TIMESTAMP ?`, ttlSec),
		deleteDedupe: `DELETE FROM group_dedupe USING TIMESTAMP ? WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?`,
		getDedupe:    `SELECT group_seq, stored_at_ms FROM group_dedupe WHERE group_id = ? AND sender_id = ? AND client_msg_id = ?`,

		// A commit's mark lives as long as its entries.
		insertCommitted:   fmt.Sprintf(`INSERT INTO group_marks (group_id, kind, seq) VALUES (?, %d, ?) USING TTL %d AND TIMESTAMP ?`, markCommitted, ttlSec),
		insertCursor:      fmt.Sprintf(`INSERT INTO group_marks (group_id, kind, seq) VALUES (?, %d, ?)`, markCursor),
		deleteMark:        `DELETE FROM group_marks USING TIMESTAMP ? WHERE group_id = ? AND kind = ? AND seq = ?`,
		topMark:           `SELECT seq FROM group_marks WHERE group_id = ? AND kind = ? LIMIT 1`,
		pruneMarks:        `DELETE FROM group_marks WHERE group_id = ? AND kind = ? AND seq < ?`,
		pruneMarksThrough: `DELETE FROM group_marks WHERE group_id = ? AND kind = ? AND seq <= ?`,

		insertPending: `INSERT INTO group_pending (shard, group_id) VALUES (?, ?) USING TIMESTAMP ?`,
		deletePending: `DELETE FROM group_pending USING TIMESTAMP ? WHERE shard = ? AND group_id = ?`,
		listPending:   `SELECT group_id FROM group_pending WHERE shard = ?`,

		joinUser:       `INSERT INTO user_groups (user_id, group_id) VALUES (?, ?) USING TIMESTAMP ?`,
		leaveUser:      `DELETE FROM user_groups USING TIMESTAMP ? WHERE user_id = ? AND group_id = ?`,
		listUserGroups: `SELECT group_id FROM user_groups WHERE user_id = ?`,
	}
}

func groupBucket(seq uint64) int64 { return int64(seq / groupBucketSize) }

func pendingShard(groupID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(groupID))
	return int(h.Sum32() % groupPendingShards)
}

// groupStmts caches the group statements per TTL (in seconds), so they stay
// out of the shared statements struct and are built once.
var groupStmts sync.Map // int -> *groupStatements

func (s *Store) gst() *groupStatements {
	if v, ok := groupStmts.Load(s.ttlSec); ok {
		return v.(*groupStatements)
	}
	st := buildGroupStatements(s.ttlSec)
	v, _ := groupStmts.LoadOrStore(s.ttlSec, &st)
	return v.(*groupStatements)
}

// LoadGroup implements persistence.GroupStore.
func (s *Store) LoadGroup(ctx context.Context, groupID string) (*courierpb.GroupState, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: load group %q: %w", groupID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	var b []byte
	if err := s.query(ctx, s.gst().getState, groupID).Scan(&b); err != nil {
		return nil, wrap(err)
	}
	st := &courierpb.GroupState{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, wrap(fmt.Errorf("stored state does not decode: %w", err))
	}
	return st, nil
}

// CommitGroup implements persistence.GroupStore; see the comment at the top
// of this file for the order of its writes.
func (s *Store) CommitGroup(ctx context.Context, c persistence.GroupCommit) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: commit group %q (%d entries): %w", c.GroupID, len(c.Entries), classify(err))
	}
	if c.GroupID == "" {
		return wrap(errors.New("group id is empty"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	st := s.gst()

	var stateBytes []byte
	if c.State != nil {
		if c.State.GroupId != c.GroupID {
			return wrap(fmt.Errorf("state names group %q", c.State.GroupId))
		}
		if c.State.Version > maxSeq || c.ExpectVersion > maxSeq {
			return wrap(fmt.Errorf("version %d or %d is above 2^63-1", c.State.Version, c.ExpectVersion))
		}
		if stateBytes, err = proto.Marshal(c.State); err != nil {
			return wrap(err)
		}
	}

	ts := time.Now().UnixMicro()
	var rows, undo []write
	var top uint64
	for i, e := range c.Entries {
		if e == nil || e.GroupSeq == 0 {
			return wrap(fmt.Errorf("entry %d has no group_seq", i))
		}
		if e.GroupSeq > maxSeq {
			return wrap(fmt.Errorf("group_seq %d is above 2^63-1", e.GroupSeq))
		}
		top = max(top, e.GroupSeq)
		b, err := proto.Marshal(e)
		if err != nil {
			return wrap(err)
		}
		part := fmt.Sprintf("l\x00%s\x00%d", c.GroupID, groupBucket(e.GroupSeq))
		rows = append(rows, write{part, st.insertLog,
			[]any{c.GroupID, groupBucket(e.GroupSeq), int64(e.GroupSeq), b, ts}, len(c.GroupID) + len(b) + 40})
		undo = append(undo, write{part, st.deleteLog,
			[]any{ts, c.GroupID, groupBucket(e.GroupSeq), int64(e.GroupSeq)}, len(c.GroupID) + 40})
	}
	for _, d := range c.Dedupe {
		if d.GroupSeq > maxSeq {
			return wrap(fmt.Errorf("dedupe group_seq %d is above 2^63-1", d.GroupSeq))
		}
		part := "d\x00" + c.GroupID + "\x00" + d.SenderID
		n := len(c.GroupID) + len(d.SenderID) + len(d.ClientMsgID) + 40
		rows = append(rows, write{part, st.insertDedupe,
			[]any{c.GroupID, d.SenderID, d.ClientMsgID, int64(d.GroupSeq), d.StoredAtMs, ts}, n})
		undo = append(undo, write{part, st.deleteDedupe, []any{ts, c.GroupID, d.SenderID, d.ClientMsgID}, n})
	}
	if top > 0 {
		part := "m\x00" + c.GroupID
		rows = append(rows, write{part, st.insertCommitted, []any{c.GroupID, int64(top), ts}, len(c.GroupID) + 32})
		undo = append(undo, write{part, st.deleteMark, []any{ts, c.GroupID, markCommitted, int64(top)}, len(c.GroupID) + 32})
	}
	for _, u := range c.Joined {
		part := "u\x00" + u
		rows = append(rows, write{part, st.joinUser, []any{u, c.GroupID, ts}, len(u) + len(c.GroupID) + 32})
		undo = append(undo, write{part, st.leaveUser, []any{ts, u, c.GroupID}, len(u) + len(c.GroupID) + 32})
	}
	for _, u := range c.Left {
		part := "u\x00" + u
		rows = append(rows, write{part, st.leaveUser, []any{ts, u, c.GroupID}, len(u) + len(c.GroupID) + 32})
		undo = append(undo, write{part, st.joinUser, []any{u, c.GroupID, ts + 1}, len(u) + len(c.GroupID) + 32})
	}

	// Phase 1: everything but the state.
	if err := s.writeAll(ctx, rows); err != nil {
		if c.State != nil {
			s.undoCommit(ctx, c.GroupID, undo)
		}
		return wrap(err)
	}
	// The pending hint goes after the mark is stored, with a timestamp taken
	// then: AdvanceFanout and PendingFanout delete a hint only with a
	// timestamp taken before they read the marks, so a hint they can shadow
	// has its mark visible to their read (see AdvanceFanout).
	if top > 0 {
		shard := pendingShard(c.GroupID)
		if err := s.query(ctx, st.insertPending, shard, c.GroupID, time.Now().UnixMicro()).Exec(); err != nil {
			if c.State != nil {
				s.undoCommit(ctx, c.GroupID, undo)
			}
			return wrap(err)
		}
	}
	if c.State == nil {
		return nil
	}

	// Phase 2: the state's compare-and-set, the commit point. LWTs are not
	// marked idempotent: a driver retry of an applied CAS would not apply
	// and look like a conflict.
	var q *gocql.Query
	if c.ExpectVersion == 0 {
		q = s.sess.Session.Query(st.createState, c.GroupID, int64(c.State.Version), stateBytes)
	} else {
		q = s.sess.Session.Query(st.casState, int64(c.State.Version), stateBytes, c.GroupID, int64(c.ExpectVersion))
	}
	applied, casErr := q.WithContext(ctx).MapScanCAS(map[string]any{})
	switch {
	case casErr == nil && applied:
		return nil
	case casErr == nil:
		s.undoCommit(ctx, c.GroupID, undo)
		return wrap(fmt.Errorf("%w: stored version is not %d", persistence.ErrConflict, c.ExpectVersion))
	case !isUnavailable(casErr):
		s.undoCommit(ctx, c.GroupID, undo)
		return wrap(casErr)
	}
	// Unknown outcome: a SERIAL read completes any Paxos round in flight
	// and tells whether this commit's version is the stored one.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var stored int64
	err = s.query(rctx, st.getVersion, c.GroupID).Consistency(gocql.LocalSerial).Scan(&stored)
	switch {
	case err == nil && uint64(stored) == c.State.Version && c.State.Version != c.ExpectVersion:
		return nil
	case err == nil && uint64(stored) != c.ExpectVersion:
		s.undoCommit(ctx, c.GroupID, undo)
		return wrap(fmt.Errorf("%w: stored version %d, expected %d", persistence.ErrConflict, stored, c.ExpectVersion))
	case err == nil, errors.Is(err, gocql.ErrNotFound) && c.ExpectVersion == 0:
		// The state is still the expected one: the CAS did not apply.
		s.undoCommit(ctx, c.GroupID, undo)
		return wrap(casErr)
	case errors.Is(err, gocql.ErrNotFound):
		s.undoCommit(ctx, c.GroupID, undo)
		return wrap(fmt.Errorf("%w: no state stored, expected version %d", persistence.ErrConflict, c.ExpectVersion))
	}
	return wrap(casErr) // still unknown: leave everything in place
}

// undoCommit deletes a failed commit's phase-1 rows, best effort, on a
// context of its own (the caller's may be what ended the commit).
func (s *Store) undoCommit(ctx context.Context, groupID string, undo []write) {
	if len(undo) == 0 {
		return
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if err := s.writeAll(uctx, undo); err != nil {
		s.log.Warn("undoing a failed group commit failed; its rows stay until their TTL or the fan-out cursor passes them",
			"group", groupID, "rows", len(undo), "err", err)
	}
}

// topMark reads the highest mark of a kind (0 when there is none).
func (s *Store) topMark(ctx context.Context, groupID string, kind int8) (uint64, error) {
	var seq int64
	err := s.query(ctx, s.gst().topMark, groupID, kind).Scan(&seq)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return uint64(seq), nil
}

// GroupLog implements persistence.GroupStore: it walks the log's buckets
// from the one holding after+1 up to the one holding the highest committed
// group_seq, following each bucket's page state.
func (s *Store) GroupLog(ctx context.Context, groupID string, after uint64, limit int) ([]*courierpb.GroupLogEntry, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: group log %q after %d limit %d: %w", groupID, after, limit, classify(err))
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
	last, err := s.topMark(ctx, groupID, markCommitted)
	if err != nil {
		return nil, wrap(err)
	}
	st := s.gst()
	var out []*courierpb.GroupLogEntry
	var corrupt error
	for b := groupBucket(after + 1); b <= groupBucket(last) && len(out) < limit; b++ {
		want := limit - len(out)
		q := s.query(ctx, st.rangeLog, groupID, b, int64(after), want)
		err := s.pages(ctx, q, want, func(it *gocql.Iter) bool {
			var raw []byte
			if !it.Scan(&raw) {
				return false
			}
			e := &courierpb.GroupLogEntry{}
			if err := proto.Unmarshal(raw, e); err != nil && corrupt == nil {
				corrupt = fmt.Errorf("a log entry does not decode: %w", err)
			}
			e.ExpiresAtMs = 0
			out = append(out, e)
			return true
		})
		if err == nil {
			err = corrupt
		}
		if err != nil {
			return nil, wrap(err)
		}
	}
	return out, nil
}

// GetGroupDedupe implements persistence.GroupStore.
func (s *Store) GetGroupDedupe(ctx context.Context, groupID, senderID, clientMsgID string) (persistence.GroupDedupe, error) {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: get group dedupe %q<-%q %q: %w", groupID, senderID, clientMsgID, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return persistence.GroupDedupe{}, wrap(err)
	}
	defer release()
	var seq int64
	rec := persistence.GroupDedupe{GroupID: groupID, SenderID: senderID, ClientMsgID: clientMsgID}
	if err := s.query(ctx, s.gst().getDedupe, groupID, senderID, clientMsgID).Scan(&seq, &rec.StoredAtMs); err != nil {
		return persistence.GroupDedupe{}, wrap(err)
	}
	rec.GroupSeq = uint64(seq)
	return rec, nil
}

// FanoutCursor implements persistence.GroupStore.
func (s *Store) FanoutCursor(ctx context.Context, groupID string) (uint64, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: fan-out cursor of %q: %w", groupID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return 0, wrap(err)
	}
	defer release()
	n, err := s.topMark(ctx, groupID, markCursor)
	if err != nil {
		return 0, wrap(err)
	}
	return n, nil
}

// AdvanceFanout implements persistence.GroupStore: it adds a cursor row
// (the highest row is the cursor, so a racing lower advance cannot move it
// back), prunes the marks it makes useless, clears the pending hint when nothing above
// the cursor was committed, and drops the passed log entries with one range
// tombstone per bucket.
func (s *Store) AdvanceFanout(ctx context.Context, groupID string, through uint64) error {
	wrap := func(err error) error {
		return fmt.Errorf("scylla: advance fan-out of %q to %d: %w", groupID, through, classify(err))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return wrap(err)
	}
	defer release()
	through = min(through, maxSeq)
	cur, err := s.topMark(ctx, groupID, markCursor)
	if err != nil {
		return wrap(err)
	}
	if through <= cur {
		return nil
	}
	st := s.gst()
	if err := s.query(ctx, st.insertCursor, groupID, int64(through)).Exec(); err != nil {
		return wrap(err)
	}
	// Everything from here on is cleanup: the cursor is what counts.
	if err := s.query(ctx, st.pruneMarks, groupID, markCursor, int64(through)).Exec(); err != nil {
		return wrap(err)
	}
	// A pending hint with a timestamp after readAt survives the delete below
	// (it is newer than the tombstone); a hint timestamped before readAt was
	// written after its commit's kind-1 mark was stored (CommitGroup), so
	// the read below sees that mark and keeps the hint if it is above the
	// cursor. (This assumes client clocks agree to well under a commit's
	// round trip; a skewed clock can at worst drop a hint, which delays the
	// resumption of that group's fan-out after a crash until it is
	// activated by anything else.)
	readAt := time.Now().UnixMicro()
	last, err := s.topMark(ctx, groupID, markCommitted)
	if err != nil {
		return wrap(err)
	}
	// Commit marks at or below the cursor are no longer needed (their
	// entries reached everyone). Marks above it stay, even below the
	// highest: the highest may belong to a commit that is still undone
	// after losing its CAS, and the marks below must then still bound the
	// log.
	if err := s.query(ctx, st.pruneMarksThrough, groupID, markCommitted, int64(through)).Exec(); err != nil {
		return wrap(err)
	}
	if last <= through {
		if err := s.query(ctx, st.deletePending, readAt, pendingShard(groupID), groupID).Exec(); err != nil {
			return wrap(err)
		}
	}
	hi := min(through, last)
	if hi <= cur {
		return nil
	}
	var drops []write
	from := max(groupBucket(cur+1), groupBucket(hi)-maxBucketDeletes+1)
	for b := from; b <= groupBucket(hi); b++ {
		drops = append(drops, write{fmt.Sprintf("l\x00%s\x00%d", groupID, b), st.dropLog,
			[]any{groupID, b, int64(cur), int64(hi)}, len(groupID) + 40})
	}
	if err := s.writeAll(ctx, drops); err != nil {
		return wrap(err)
	}
	return nil
}

// PendingFanout implements persistence.GroupStore. It reads the pending
// hints shard by shard and reports a group only when its highest committed
// group_seq is above its cursor; a hint that no longer holds (its commit
// was undone, or its entries expired) is deleted.
func (s *Store) PendingFanout(ctx context.Context, limit int) ([]string, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: pending fan-outs: %w", classify(err)) }
	if limit <= 0 {
		return nil, wrap(errors.New("limit must be positive"))
	}
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	st := s.gst()
	var out []string
	for shard := 0; shard < groupPendingShards && len(out) < limit; shard++ {
		var hints []string
		err := s.pages(ctx, s.query(ctx, st.listPending, shard), 0, func(it *gocql.Iter) bool {
			var id string
			if !it.Scan(&id) {
				return false
			}
			hints = append(hints, id)
			return true
		})
		if err != nil {
			return nil, wrap(err)
		}
		for _, id := range hints {
			if len(out) == limit {
				break
			}
			readAt := time.Now().UnixMicro()
			last, err := s.topMark(ctx, id, markCommitted)
			if err != nil {
				return nil, wrap(err)
			}
			cur, err := s.topMark(ctx, id, markCursor)
			if err != nil {
				return nil, wrap(err)
			}
			if last > cur {
				out = append(out, id)
				continue
			}
			if err := s.query(ctx, st.deletePending, readAt, shard, id).Exec(); err != nil {
				return nil, wrap(err)
			}
		}
	}
	return out, nil
}

// ListUserGroups implements persistence.GroupStore.
func (s *Store) ListUserGroups(ctx context.Context, userID string) ([]string, error) {
	wrap := func(err error) error { return fmt.Errorf("scylla: groups of %q: %w", userID, classify(err)) }
	release, err := s.enter(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	defer release()
	var out []string
	err = s.pages(ctx, s.query(ctx, s.gst().listUserGroups, userID), 0, func(it *gocql.Iter) bool {
		var id string
		if !it.Scan(&id) {
			return false
		}
		out = append(out, id)
		return true
	})
	if err != nil {
		return nil, wrap(err)
	}
	return out, nil
}
