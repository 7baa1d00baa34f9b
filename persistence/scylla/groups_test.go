package scylla_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/scylla"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
	"github.com/courier-im/courier/persistence/storetest"
	"github.com/courier-im/courier/protos/courierpb"
)

var _ persistence.GroupStore = (*scylla.Store)(nil)

func TestGroupsConformance(t *testing.T) {
	base := scyllatest.Options(t)
	// Create the keyspace and schema once, before the suite's parallel
	// subtests open their stores on it.
	open(t, base)
	storetest.RunGroups(t, func(t *testing.T, o storetest.Options) (persistence.Store, storetest.Reopen) {
		opts := base
		opts.InboxTTL = o.InboxTTL
		return open(t, opts), func(t *testing.T) persistence.Store { return open(t, opts) }
	})
}

// TestGroupLogCrossesBuckets pages a log whose entries span several
// partitions (buckets of 1024 group_seqs), with empty buckets between them,
// and drops most of it with AdvanceFanout.
func TestGroupLogCrossesBuckets(t *testing.T) {
	s := open(t, scyllatest.Options(t))
	ctx := t.Context()
	const g = "bucketed"
	seqs := []uint64{1, 2, 1023, 1024, 1025, 2047, 5000, 5001, 9000}
	c := persistence.GroupCommit{GroupID: g}
	for _, q := range seqs {
		c.Entries = append(c.Entries, &courierpb.GroupLogEntry{GroupSeq: q, Entry: &courierpb.InboxEntry{GroupSeq: q}})
	}
	if err := s.CommitGroup(ctx, c); err != nil {
		t.Fatal(err)
	}
	read := func(after uint64, limit int) []uint64 {
		t.Helper()
		var got []uint64
		for {
			page, err := s.GroupLog(ctx, g, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				got = append(got, e.GroupSeq)
			}
			if len(page) < limit {
				return got
			}
			after = page[len(page)-1].GroupSeq
		}
	}
	check := func(what string, got, want []uint64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: %v, want %v", what, got, want)
			}
		}
	}
	for _, limit := range []int{1, 2, 3, 100} {
		check("whole log", read(0, limit), seqs)
	}
	check("after 1024", read(1024, 2), seqs[4:])
	if err := s.AdvanceFanout(ctx, g, 5000); err != nil {
		t.Fatal(err)
	}
	check("after the cursor", read(5000, 2), []uint64{5001, 9000})
	check("from 0 after advancing", read(0, 2), []uint64{5001, 9000})
	if err := s.AdvanceFanout(ctx, g, 9000); err != nil {
		t.Fatal(err)
	}
	pending, err := s.PendingFanout(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range pending {
		if id == g {
			t.Fatal("still pending after the cursor reached the last entry")
		}
	}
}

// TestGroupConflictUndoesEverything checks what the conformance suite does
// not: a commit that loses its compare-and-set puts back the index rows it
// deleted (Left), and takes nothing of the earlier, successful commits with
// it (their entries, their commit marks, the pending state).
func TestGroupConflictUndoesEverything(t *testing.T) {
	s := open(t, scyllatest.Options(t))
	ctx := t.Context()
	const g, u = "undo", "member"
	state := func(v uint64) *courierpb.GroupState { return &courierpb.GroupState{GroupId: g, Version: v} }
	entry := func(q uint64) *courierpb.GroupLogEntry {
		return &courierpb.GroupLogEntry{GroupSeq: q, Entry: &courierpb.InboxEntry{GroupSeq: q}}
	}
	if err := s.CommitGroup(ctx, persistence.GroupCommit{GroupID: g, State: state(1), Joined: []string{u},
		Entries: []*courierpb.GroupLogEntry{entry(1), entry(2)}}); err != nil {
		t.Fatal(err)
	}
	err := s.CommitGroup(ctx, persistence.GroupCommit{GroupID: g, State: state(5000), ExpectVersion: 4,
		Entries: []*courierpb.GroupLogEntry{entry(5000)}, Left: []string{u}})
	if !errors.Is(err, persistence.ErrConflict) {
		t.Fatalf("stale commit: %v, want ErrConflict", err)
	}
	if got, err := s.ListUserGroups(ctx, u); err != nil || len(got) != 1 || got[0] != g {
		t.Fatalf("index after an undone leave = (%v, %v), want [%s]", got, err, g)
	}
	log, err := s.GroupLog(ctx, g, 0, 10)
	if err != nil || len(log) != 2 || log[0].GroupSeq != 1 || log[1].GroupSeq != 2 {
		t.Fatalf("log after an undone commit = (%v, %v), want entries 1 and 2", log, err)
	}
	pending, err := s.PendingFanout(ctx, 1000)
	if err != nil || !slices.Contains(pending, g) {
		t.Fatalf("PendingFanout = (%v, %v), want %q among them", pending, err, g)
	}
	// The winner's next commit still applies.
	if err := s.CommitGroup(ctx, persistence.GroupCommit{GroupID: g, State: state(3), ExpectVersion: 1,
		Entries: []*courierpb.GroupLogEntry{entry(3)}, Left: []string{u}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ListUserGroups(ctx, u); err != nil || len(got) != 0 {
		t.Fatalf("index after the leave = (%v, %v), want none", got, err)
	}
	if err := s.AdvanceFanout(ctx, g, 3); err != nil {
		t.Fatal(err)
	}
	if pending, err := s.PendingFanout(ctx, 1000); err != nil || slices.Contains(pending, g) {
		t.Fatalf("PendingFanout after the fan-out = (%v, %v), want %q gone", pending, err, g)
	}
}
