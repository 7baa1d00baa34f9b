package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// RunGroups runs the conformance suite of persistence.GroupStore against
// stores built by factory; every store it returns must implement
// persistence.GroupStore. Like Run, subtests run in parallel and namespace
// every identifier, so stores may share one backing database.
func RunGroups(t *testing.T, factory Factory) {
	groups := []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"StateCompareAndSet", testGroupState},
		{"Log", testGroupLog},
		{"CommitIsAtomic", testGroupCommitAtomic},
		{"Dedupe", testGroupDedupe},
		{"FanoutCursor", testGroupCursor},
		{"PendingFanout", testGroupPending},
		{"UserGroups", testUserGroups},
		{"ConcurrentCommits", testGroupConcurrent},
		{"TTL", testGroupTTL},
		{"Reopen", testGroupReopen},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			g.run(t, factory)
		})
	}
}

func groupStore(t *testing.T, s persistence.Store) persistence.GroupStore {
	t.Helper()
	gs, ok := s.(persistence.GroupStore)
	if !ok {
		t.Fatalf("%T does not implement persistence.GroupStore", s)
	}
	return gs
}

func newGroupFixture(t *testing.T, factory Factory, opts Options) (*fixture, persistence.GroupStore) {
	f := newFixture(t, factory, opts)
	return f, groupStore(t, f.s)
}

func groupState(id string, version uint64, subject string, members ...string) *courierpb.GroupState {
	st := &courierpb.GroupState{
		GroupId: id, Version: version, CreateId: "c-" + id, CreatorUserId: members[0], CreatedAtMs: 1_700_000_000_000,
		Subject: subject, Description: "about " + subject, SenderKeyEpoch: version,
		Settings: &courierpb.GroupSettings{AddMembers: courierpb.GroupPermission_GROUP_PERMISSION_ALL_MEMBERS},
	}
	for i, m := range members {
		role := courierpb.GroupRole_GROUP_ROLE_MEMBER
		if i == 0 {
			role = courierpb.GroupRole_GROUP_ROLE_CREATOR
		}
		st.Members = append(st.Members, &courierpb.GroupMemberState{
			UserId: m, Role: role, AddedBy: members[0], JoinedAtMs: int64(i),
			Spans: []*courierpb.SeqSpan{{From: 1}},
		})
	}
	return st
}

// logEntry builds a distinguishable group log entry.
func logEntry(seq uint64, tag string) *courierpb.GroupLogEntry {
	return &courierpb.GroupLogEntry{
		GroupSeq: seq,
		Entry: &courierpb.InboxEntry{
			Kind: courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE, FromUserId: "sender-" + tag, FromDeviceId: 3,
			ClientMsgId: fmt.Sprintf("gm-%s-%d", tag, seq), Ciphertext: fmt.Appendf(nil, "group ct %s %d \x00\xff", tag, seq),
			GroupId: "g-" + tag, GroupSeq: seq, SenderKeyEpoch: 7,
		},
		PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: "u-" + tag, DeviceId: 2, Ciphertext: []byte("dev " + tag)}},
	}
}

func commitEntries(t *testing.T, gs persistence.GroupStore, groupID, tag string, seqs ...uint64) {
	t.Helper()
	c := persistence.GroupCommit{GroupID: groupID}
	for _, s := range seqs {
		c.Entries = append(c.Entries, logEntry(s, tag))
	}
	if err := gs.CommitGroup(ctx(t), c); err != nil {
		t.Fatalf("CommitGroup(%q, %v): %v", groupID, seqs, err)
	}
}

// groupLogAll pages through a group's log with a small limit.
func groupLogAll(t *testing.T, gs persistence.GroupStore, groupID string, after uint64) []*courierpb.GroupLogEntry {
	t.Helper()
	var all []*courierpb.GroupLogEntry
	for {
		page, err := gs.GroupLog(ctx(t), groupID, after, 2)
		if err != nil {
			t.Fatalf("GroupLog(%q, after %d): %v", groupID, after, err)
		}
		if len(page) > 2 {
			t.Fatalf("GroupLog with limit 2 returned %d entries", len(page))
		}
		all = append(all, page...)
		if len(page) < 2 {
			return all
		}
		after = page[len(page)-1].GroupSeq
	}
}

func checkLog(t *testing.T, what string, got []*courierpb.GroupLogEntry, tag string, want ...uint64) {
	t.Helper()
	var seqs []uint64
	for _, e := range got {
		seqs = append(seqs, e.GroupSeq)
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("%s: group_seqs %v, want %v", what, seqs, want)
	}
	for i, e := range got {
		if w := logEntry(want[i], tag); !proto.Equal(e, w) {
			t.Fatalf("%s: entry %d is %v, want %v", what, want[i], e, w)
		}
	}
}

func testGroupState(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	g, other := f.id("g"), f.id("g1")
	if _, err := gs.LoadGroup(c, g); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("LoadGroup of a new group: %v, want ErrNotFound", err)
	}
	v1 := groupState(g, 1, "one", f.id("a"), f.id("b"))
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, State: v1}); err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := gs.LoadGroup(c, g)
	if err != nil || !proto.Equal(got, v1) {
		t.Fatalf("LoadGroup = (%v, %v), want %v", got, err, v1)
	}
	// A second creation (expect 0) and a stale writer (expect 7) lose.
	for _, expect := range []uint64{0, 7} {
		err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, State: groupState(g, 9, "lost", f.id("x")), ExpectVersion: expect})
		if !errors.Is(err, persistence.ErrConflict) {
			t.Fatalf("commit expecting version %d over version 1: %v, want ErrConflict", expect, err)
		}
	}
	v5 := groupState(g, 5, "five", f.id("a"), f.id("c"), f.id("d"))
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, State: v5, ExpectVersion: 1}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got, err := gs.LoadGroup(c, g); err != nil || !proto.Equal(got, v5) {
		t.Fatalf("LoadGroup after update = (%v, %v), want %v", got, err, v5)
	}
	// "g" and "g1" are prefixes of each other and must not share a record.
	if _, err := gs.LoadGroup(c, other); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("LoadGroup(%q): %v, want ErrNotFound", other, err)
	}
	// A commit without a state leaves it alone.
	commitEntries(t, gs, g, "s", 6)
	if got, err := gs.LoadGroup(c, g); err != nil || !proto.Equal(got, v5) {
		t.Fatalf("LoadGroup after an entries-only commit = (%v, %v), want %v", got, err, v5)
	}
}

func testGroupLog(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	g, other := f.id("g"), f.id("g1")
	commitEntries(t, gs, g, "l", 1, 2, 3)
	commitEntries(t, gs, g, "l", 5, 7)
	commitEntries(t, gs, other, "o", 4)
	checkLog(t, "whole log", groupLogAll(t, gs, g, 0), "l", 1, 2, 3, 5, 7)
	checkLog(t, "after 3", groupLogAll(t, gs, g, 3), "l", 5, 7)
	checkLog(t, "after 4", groupLogAll(t, gs, g, 4), "l", 5, 7)
	checkLog(t, "after 7", groupLogAll(t, gs, g, 7), "l")
	checkLog(t, "other group", groupLogAll(t, gs, other, 0), "o", 4)
	// Re-committing a group_seq replaces it (a retried write).
	commitEntries(t, gs, g, "l", 5)
	checkLog(t, "after replacing 5", groupLogAll(t, gs, g, 0), "l", 1, 2, 3, 5, 7)
	if _, err := gs.GroupLog(ctx(t), g, 0, 0); err == nil {
		t.Fatal("GroupLog with limit 0 succeeded")
	}
}

func testGroupCommitAtomic(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	g, u := f.id("g"), f.id("u")
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, State: groupState(g, 1, "s", u)}); err != nil {
		t.Fatal(err)
	}
	err := gs.CommitGroup(c, persistence.GroupCommit{
		GroupID: g, State: groupState(g, 3, "s3", u), ExpectVersion: 2,
		Entries: []*courierpb.GroupLogEntry{logEntry(2, "a"), logEntry(3, "a")},
		Dedupe:  []persistence.GroupDedupe{{GroupID: g, SenderID: u, ClientMsgID: "m", GroupSeq: 2, StoredAtMs: 5}},
		Joined:  []string{f.id("j")},
		Left:    []string{u},
	})
	if !errors.Is(err, persistence.ErrConflict) {
		t.Fatalf("conflicting commit: %v, want ErrConflict", err)
	}
	checkLog(t, "log after a failed commit", groupLogAll(t, gs, g, 0), "a")
	if _, err := gs.GetGroupDedupe(c, g, u, "m"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("dedupe record of a failed commit: %v, want ErrNotFound", err)
	}
	if got, err := gs.ListUserGroups(c, f.id("j")); err != nil || len(got) != 0 {
		t.Fatalf("index of a failed commit: (%v, %v), want none", got, err)
	}
	if got, err := gs.PendingFanout(c, 1<<20); err != nil || slices.Contains(got, g) {
		t.Fatalf("a failed commit left %q pending: (%v, %v)", g, got, err)
	}
}

func testGroupDedupe(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	g, a, b := f.id("g"), f.id("a"), f.id("b")
	rec := persistence.GroupDedupe{GroupID: g, SenderID: a, ClientMsgID: "m1", GroupSeq: 42, StoredAtMs: 1_700_000_000_123}
	if _, err := gs.GetGroupDedupe(c, g, a, "m1"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("GetGroupDedupe before: %v, want ErrNotFound", err)
	}
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, Entries: []*courierpb.GroupLogEntry{logEntry(42, "d")}, Dedupe: []persistence.GroupDedupe{rec}}); err != nil {
		t.Fatal(err)
	}
	if got, err := gs.GetGroupDedupe(c, g, a, "m1"); err != nil || got != rec {
		t.Fatalf("GetGroupDedupe = (%+v, %v), want %+v", got, err, rec)
	}
	for _, miss := range [][3]string{{g, b, "m1"}, {g, a, "m2"}, {f.id("g1"), a, "m1"}} {
		if _, err := gs.GetGroupDedupe(c, miss[0], miss[1], miss[2]); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetGroupDedupe(%q): %v, want ErrNotFound", miss, err)
		}
	}
}

func testGroupCursor(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	g := f.id("g")
	if n, err := gs.FanoutCursor(c, g); err != nil || n != 0 {
		t.Fatalf("FanoutCursor of a new group = (%d, %v), want 0", n, err)
	}
	commitEntries(t, gs, g, "c", 1, 2, 3, 4, 5)
	if err := gs.AdvanceFanout(c, g, 3); err != nil {
		t.Fatal(err)
	}
	if n, err := gs.FanoutCursor(c, g); err != nil || n != 3 {
		t.Fatalf("FanoutCursor = (%d, %v), want 3", n, err)
	}
	if err := gs.AdvanceFanout(c, g, 2); err != nil {
		t.Fatal(err)
	}
	if n, err := gs.FanoutCursor(c, g); err != nil || n != 3 {
		t.Fatalf("FanoutCursor after moving back = (%d, %v), want 3", n, err)
	}
	// Entries above the cursor stay.
	checkLog(t, "log above the cursor", groupLogAll(t, gs, g, 3), "c", 4, 5)
	if err := gs.AdvanceFanout(c, g, 5); err != nil {
		t.Fatal(err)
	}
	commitEntries(t, gs, g, "c", 6)
	checkLog(t, "log above cursor 5", groupLogAll(t, gs, g, 5), "c", 6)
	if n, err := gs.FanoutCursor(c, f.id("g1")); err != nil || n != 0 {
		t.Fatalf("FanoutCursor of another group = (%d, %v), want 0", n, err)
	}
}

func testGroupPending(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	g, h := f.id("g"), f.id("h")
	pending := func(id string) bool {
		t.Helper()
		got, err := gs.PendingFanout(c, 1<<20)
		if err != nil {
			t.Fatalf("PendingFanout: %v", err)
		}
		return slices.Contains(got, id)
	}
	if pending(g) {
		t.Fatal("a group without entries is pending")
	}
	// A state-only commit (creation without events) is nothing to fan out.
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: h, State: groupState(h, 1, "s", f.id("u"))}); err != nil {
		t.Fatal(err)
	}
	if pending(h) {
		t.Fatal("a state-only commit made the group pending")
	}
	commitEntries(t, gs, g, "p", 1, 2)
	if !pending(g) {
		t.Fatal("a group with entries above its cursor is not pending")
	}
	if err := gs.AdvanceFanout(c, g, 1); err != nil {
		t.Fatal(err)
	}
	if !pending(g) {
		t.Fatal("the group stopped being pending with entry 2 not fanned out")
	}
	if err := gs.AdvanceFanout(c, g, 2); err != nil {
		t.Fatal(err)
	}
	if pending(g) {
		t.Fatal("the group is still pending after its fan-out caught up")
	}
	commitEntries(t, gs, g, "p", 3)
	if !pending(g) {
		t.Fatal("a new entry did not make the group pending again")
	}
	if got, err := gs.PendingFanout(c, 1); err != nil || len(got) != 1 {
		t.Fatalf("PendingFanout(limit 1) = (%v, %v), want one group", got, err)
	}
}

func testUserGroups(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	a, a1, b := f.id("a"), f.id("a1"), f.id("b")
	g1, g2 := f.id("g1"), f.id("g2")
	list := func(u string) []string {
		t.Helper()
		got, err := gs.ListUserGroups(c, u)
		if err != nil {
			t.Fatalf("ListUserGroups(%q): %v", u, err)
		}
		slices.Sort(got)
		return got
	}
	if got := list(a); len(got) != 0 {
		t.Fatalf("groups of a new user: %v", got)
	}
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g1, Joined: []string{a, b}}); err != nil {
		t.Fatal(err)
	}
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g2, Joined: []string{a, a1}}); err != nil {
		t.Fatal(err)
	}
	if got, want := list(a), []string{g1, g2}; !slices.Equal(got, want) {
		t.Fatalf("groups of a = %v, want %v", got, want)
	}
	if got, want := list(a1), []string{g2}; !slices.Equal(got, want) {
		t.Fatalf("groups of a1 = %v, want %v", got, want)
	}
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g1, Left: []string{a, f.id("nobody")}}); err != nil {
		t.Fatal(err)
	}
	if got, want := list(a), []string{g2}; !slices.Equal(got, want) {
		t.Fatalf("groups of a after leaving g1 = %v, want %v", got, want)
	}
	if got, want := list(b), []string{g1}; !slices.Equal(got, want) {
		t.Fatalf("groups of b = %v, want %v", got, want)
	}
}

func testGroupConcurrent(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	c := ctx(t)
	g := f.id("g")
	if err := gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, State: groupState(g, 1, "s", f.id("u"))}); err != nil {
		t.Fatal(err)
	}
	// Racers all expect version 1: exactly one wins.
	const racers = 8
	var wg sync.WaitGroup
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			errs[i] = gs.CommitGroup(c, persistence.GroupCommit{GroupID: g, State: groupState(g, uint64(10+i), "r", f.id("u")), ExpectVersion: 1})
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("racers %d and %d both won the compare-and-set", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, persistence.ErrConflict):
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no racer won")
	}
	if st, err := gs.LoadGroup(c, g); err != nil || st.Version != uint64(10+won) {
		t.Fatalf("LoadGroup = (%v, %v), want the winner's version %d", st, err, 10+won)
	}
}

func testGroupTTL(t *testing.T, factory Factory) {
	// As testTTL: CQL expiry has second granularity, so a 1 s TTL can end
	// within milliseconds of the write and the first read miss the entry.
	const ttl = 3 * time.Second
	const wait = ttl + 1500*time.Millisecond
	f, gs := newGroupFixture(t, factory, Options{InboxTTL: ttl})
	c := ctx(t)
	g, u := f.id("g"), f.id("u")
	if err := gs.CommitGroup(c, persistence.GroupCommit{
		GroupID: g, State: groupState(g, 1, "kept", u),
		Entries: []*courierpb.GroupLogEntry{logEntry(1, "t")},
		Dedupe:  []persistence.GroupDedupe{{GroupID: g, SenderID: u, ClientMsgID: "m", GroupSeq: 1, StoredAtMs: 1}},
		Joined:  []string{u},
	}); err != nil {
		t.Fatal(err)
	}
	checkLog(t, "before expiry", groupLogAll(t, gs, g, 0), "t", 1)
	sleep(t, wait)
	checkLog(t, "after expiry", groupLogAll(t, gs, g, 0), "t")
	if _, err := gs.GetGroupDedupe(c, g, u, "m"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("GetGroupDedupe after expiry: %v, want ErrNotFound", err)
	}
	// Groups themselves and the index do not expire.
	if st, err := gs.LoadGroup(c, g); err != nil || st.Subject != "kept" {
		t.Fatalf("LoadGroup after the TTL = (%v, %v)", st, err)
	}
	if got, err := gs.ListUserGroups(c, u); err != nil || !slices.Equal(got, []string{g}) {
		t.Fatalf("ListUserGroups after the TTL = (%v, %v)", got, err)
	}
}

func testGroupReopen(t *testing.T, factory Factory) {
	f, gs := newGroupFixture(t, factory, Options{})
	if f.reopen == nil {
		t.Skip("implementation cannot reopen")
	}
	c := ctx(t)
	g, u := f.id("g"), f.id("u")
	st := groupState(g, 3, "durable", u, f.id("v"))
	rec := persistence.GroupDedupe{GroupID: g, SenderID: u, ClientMsgID: "m", GroupSeq: 2, StoredAtMs: 9}
	if err := gs.CommitGroup(c, persistence.GroupCommit{
		GroupID: g, State: st,
		Entries: []*courierpb.GroupLogEntry{logEntry(1, "r"), logEntry(2, "r"), logEntry(3, "r")},
		Dedupe:  []persistence.GroupDedupe{rec}, Joined: []string{u},
	}); err != nil {
		t.Fatal(err)
	}
	if err := gs.AdvanceFanout(c, g, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Close(); err != nil {
		t.Fatal(err)
	}
	gs = groupStore(t, f.reopen(t))
	if got, err := gs.LoadGroup(c, g); err != nil || !proto.Equal(got, st) {
		t.Fatalf("LoadGroup after reopen = (%v, %v)", got, err)
	}
	checkLog(t, "log after reopen", groupLogAll(t, gs, g, 1), "r", 2, 3)
	if n, err := gs.FanoutCursor(c, g); err != nil || n != 1 {
		t.Fatalf("FanoutCursor after reopen = (%d, %v), want 1", n, err)
	}
	if got, err := gs.GetGroupDedupe(c, g, u, "m"); err != nil || got != rec {
		t.Fatalf("GetGroupDedupe after reopen = (%+v, %v)", got, err)
	}
	if got, err := gs.PendingFanout(c, 1<<20); err != nil || !slices.Contains(got, g) {
		t.Fatalf("PendingFanout after reopen = (%v, %v), want %q among them", got, err, g)
	}
	if got, err := gs.ListUserGroups(c, u); err != nil || !slices.Equal(got, []string{g}) {
		t.Fatalf("ListUserGroups after reopen = (%v, %v)", got, err)
	}
}
