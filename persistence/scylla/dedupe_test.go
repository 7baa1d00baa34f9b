package scylla_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
)

// TestDedupeRecordOfAHalfWrittenAppendIsNotFound: an Append that reached
// one of the recipient's two device inboxes but not the other must not
// answer the sender's retry with "already stored", or the second device
// would never get the message. Once that device is gone, the first
// device's marker is enough.
func TestDedupeRecordOfAHalfWrittenAppendIsNotFound(t *testing.T) {
	s := open(t, scyllatest.Options(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec := persistence.DedupeRecord{RecipientID: "bob", SenderID: "alice", ClientMsgID: "m1", StoredAtMs: 99}
	if err := s.Append(ctx, []persistence.InboxAppend{
		{UserID: "bob", DeviceID: 1, Entry: entry(1)},
		{UserID: "bob", DeviceID: 2, Entry: entry(1)},
	}, []persistence.DedupeRecord{rec}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetDedupe(ctx, "bob", []uint32{1, 2}, "alice", "m1"); err != nil || got != rec {
		t.Fatalf("GetDedupe after a whole append = (%+v, %v), want %+v", got, err, rec)
	}

	if err := s.DeleteMarker(ctx, "bob", 2, "alice", "m1"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetDedupe(ctx, "bob", []uint32{1, 2}, "alice", "m1"); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("GetDedupe with device 2's half missing = (%+v, %v), want ErrNotFound", got, err)
	}
	if got, err := s.GetDedupe(ctx, "bob", []uint32{1}, "alice", "m1"); err != nil || got != rec {
		t.Fatalf("GetDedupe once device 2 is gone = (%+v, %v), want %+v", got, err, rec)
	}
}
