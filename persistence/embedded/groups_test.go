package embedded_test

import (
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/persistence/storetest"
	"github.com/courier-im/courier/protos/courierpb"
)

func TestGroupConformance(t *testing.T) {
	storetest.RunGroups(t, func(t *testing.T, opts storetest.Options) (persistence.Store, storetest.Reopen) {
		dir := t.TempDir()
		eopts := embedded.Options{InboxTTL: opts.InboxTTL}
		return open(t, dir, eopts), func(t *testing.T) persistence.Store {
			return open(t, dir, eopts)
		}
	})
}

func TestSweeperDeletesExpiredGroupRecords(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := open(t, t.TempDir(), embedded.Options{InboxTTL: time.Hour, Now: clock.Now, SweepInterval: 5 * time.Millisecond})
	ctx := t.Context()
	err := s.CommitGroup(ctx, persistence.GroupCommit{
		GroupID: "g",
		State:   &courierpb.GroupState{GroupId: "g", Version: 1},
		Entries: []*courierpb.GroupLogEntry{{GroupSeq: 1, Entry: &courierpb.InboxEntry{}}, {GroupSeq: 2, Entry: &courierpb.InboxEntry{}}},
		Dedupe:  []persistence.GroupDedupe{{GroupID: "g", SenderID: "u", ClientMsgID: "m", GroupSeq: 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if l, d, err := s.RawGroupCounts(); err != nil || l != 2 || d != 1 {
		t.Fatalf("raw group counts = (%d, %d, %v), want (2, 1)", l, d, err)
	}
	clock.Advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, d, err := s.RawGroupCounts()
		if err != nil {
			t.Fatal(err)
		}
		if l == 0 && d == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper left %d log entries and %d dedupe records", l, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := s.LoadGroup(ctx, "g"); err != nil {
		t.Fatalf("the group itself must not expire: %v", err)
	}
}
