package persistence

import (
	"context"
	"errors"

	"github.com/courier-im/courier/protos/courierpb"
)

// ErrConflict: a compare-and-set lost (another writer changed the record
// since it was read). Nothing was written; reload and retry.
var ErrConflict = errors.New("conflicting write")

// GroupStore keeps groups: one state record per group (metadata and
// membership), the group's log of numbered entries, dedupe records of group
// sends, the fan-out cursor, and an index from users to their groups.
//
// It is separate from Store so a Store implementation can be written (and
// pass its own conformance suite) before it keeps groups; a node that hosts
// groups requires its store to implement both. Implementations are safe for
// concurrent use and must pass storetest.RunGroups.
type GroupStore interface {
	// LoadGroup returns the stored state of a group or ErrNotFound.
	LoadGroup(ctx context.Context, groupID string) (*courierpb.GroupState, error)
	// CommitGroup applies c atomically: when it returns nil everything in c
	// survives a crash; when it fails nothing is visible.
	CommitGroup(ctx context.Context, c GroupCommit) error
	// GroupLog returns up to limit unexpired entries of a group's log with
	// group_seq > after, in ascending group_seq order. Entries at or below the
	// fan-out cursor may be gone.
	GroupLog(ctx context.Context, groupID string, after uint64, limit int) ([]*courierpb.GroupLogEntry, error)
	// GetGroupDedupe returns the record of (group, sender, clientMsgID) or
	// ErrNotFound.
	GetGroupDedupe(ctx context.Context, groupID, senderID, clientMsgID string) (GroupDedupe, error)
	// FanoutCursor returns the group_seq through which every log entry was
	// delivered to its members (0 when none was).
	FanoutCursor(ctx context.Context, groupID string) (uint64, error)
	// AdvanceFanout records that every log entry with group_seq <= through
	// reached its members. The cursor never moves back (a lower through is a
	// no-op). The store may then drop those entries from the log, and the
	// group no longer counts as PendingFanout unless entries above through
	// were committed.
	AdvanceFanout(ctx context.Context, groupID string, through uint64) error
	// PendingFanout returns up to limit groups whose log holds entries above
	// their fan-out cursor (a fan-out a crash or a passivation interrupted),
	// in no particular order.
	PendingFanout(ctx context.Context, limit int) ([]string, error)
	// ListUserGroups returns the ids of the groups userID is a member of
	// (as maintained by GroupCommit.Joined and Left), in no particular order.
	ListUserGroups(ctx context.Context, userID string) ([]string, error)
}

// GroupCommit is one atomic write of a group.
type GroupCommit struct {
	GroupID string
	// State, when set, replaces the stored state if the stored state's
	// version equals ExpectVersion (0: no state is stored yet); otherwise
	// the commit fails with ErrConflict and writes nothing. State.Version
	// must be the new version.
	State         *courierpb.GroupState
	ExpectVersion uint64
	// Entries are appended to the log (an existing group_seq is replaced).
	// They expire after the store's inbox TTL.
	Entries []*courierpb.GroupLogEntry
	// Dedupe records of the sends among Entries; they expire like inbox
	// dedupe records.
	Dedupe []GroupDedupe
	// Joined and Left update the user → groups index.
	Joined []string
	Left   []string
}

// GroupDedupe remembers that a sender's client_msg_id was stored in a
// group's log, and under which group_seq.
type GroupDedupe struct {
	GroupID     string
	SenderID    string
	ClientMsgID string
	GroupSeq    uint64
	StoredAtMs  int64
}
