package actors_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// deleteFailingStore refuses inbox deletes while failing is set.
type deleteFailingStore struct {
	persistence.Store
	failing atomic.Bool
}

func (s *deleteFailingStore) DeleteRange(ctx context.Context, userID string, deviceID uint32, after, through uint64) error {
	if s.failing.Load() {
		return errors.New("injected delete failure")
	}
	return s.Store.DeleteRange(ctx, userID, deviceID, after, through)
}

// TestQuietAckIsAnsweredOnlyWhenRefused: a quiet ack, posted without a
// reply slot, deletes what it covers and sends nothing back; one the grain
// cannot apply comes back as a refusal to the poster; a plain ack is always
// answered.
func TestQuietAckIsAnsweredOnlyWhenRefused(t *testing.T) {
	store := &deleteFailingStore{Store: openStore(t)}
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	deps := &actors.Deps{Store: store, Logger: testLogger()}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx := context.Background()
	bob := actors.UserGrainID("bob")

	var seqs []uint64
	for _, id := range []string{"m1", "m2", "m3"} {
		r, err := c.Request(ctx, bob, deliver("alice", id), "alice/"+id)
		if err != nil || r.(*courierpb.DeliverMessageReply).Error != nil {
			t.Fatalf("send %s: %v %v", id, err, r)
		}
	}
	in, err := store.Range(ctx, "bob", 1, 0, 10)
	if err != nil || len(in) != 3 {
		t.Fatalf("bob's inbox: %d entries, %v; want 3", len(in), err)
	}
	for _, e := range in {
		seqs = append(seqs, e.InboxSeq)
	}

	replies := make(chan *courierpb.AckInboxReply, 8)
	poster := c.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*courierpb.AckInboxReply); ok {
			replies <- r
		}
	}))
	t.Cleanup(func() { c.System().Root.Stop(poster) })
	post := func(upTo uint64, quiet bool) {
		t.Helper()
		if err := c.Post(bob, &courierpb.AckInbox{DeviceId: 1, UpToInboxSeq: upTo, Quiet: quiet}, "", time.Second, poster); err != nil {
			t.Fatal(err)
		}
	}
	remaining := func() int {
		in, err := store.Range(ctx, "bob", 1, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(in)
	}

	post(seqs[0], true)
	waitUntil(t, 5*time.Second, func() bool { return remaining() == 2 })
	select {
	case r := <-replies:
		t.Fatalf("an applied quiet ack was answered: %v", r)
	case <-time.After(200 * time.Millisecond):
	}

	store.failing.Store(true)
	post(seqs[1], true)
	select {
	case r := <-replies:
		if r.GetError().GetCode() != courierpb.ErrorCode_UNAVAILABLE || !r.Error.Retryable {
			t.Fatalf("refused quiet ack answered %v, want a retryable UNAVAILABLE", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a refused quiet ack was not answered")
	}
	if n := remaining(); n != 2 {
		t.Fatalf("%d entries left after a refused ack, want 2", n)
	}

	store.failing.Store(false)
	post(seqs[2], false)
	select {
	case r := <-replies:
		if r.Error != nil {
			t.Fatalf("plain ack refused: %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a plain ack was not answered")
	}
	if n := remaining(); n != 0 {
		t.Fatalf("%d entries left after acking everything, want 0", n)
	}
}

// lazyCountingStore records which appends the grains let go without
// waiting for the disk.
type lazyCountingStore struct {
	persistence.Store
	lazy, durable atomic.Int64
	lazyKinds     chan courierpb.EntryKind
}

func (s *lazyCountingStore) Append(ctx context.Context, entries []persistence.InboxAppend, dedupe []persistence.DedupeRecord) error {
	s.durable.Add(1)
	return s.Store.Append(ctx, entries, dedupe)
}

func (s *lazyCountingStore) AppendLazy(ctx context.Context, entries []persistence.InboxAppend) error {
	s.lazy.Add(1)
	for _, e := range entries {
		s.lazyKinds <- e.Entry.Kind
	}
	return s.Store.Append(ctx, entries, nil)
}

// TestOnlyDeliveredReceiptsAreAppendedLazily: the delivered receipt an ack
// sends may wait for the next durable write (the ack derives it again after
// a crash); the message it is for, and read receipts, may not.
func TestOnlyDeliveredReceiptsAreAppendedLazily(t *testing.T) {
	store := &lazyCountingStore{Store: openStore(t), lazyKinds: make(chan courierpb.EntryKind, 16)}
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	deps := &actors.Deps{Store: store, Logger: testLogger()}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx := context.Background()

	r, err := c.Request(ctx, actors.UserGrainID("bob"), deliver("alice", "m1"), "alice/m1")
	if err != nil || r.(*courierpb.DeliverMessageReply).Error != nil {
		t.Fatalf("send: %v %v", err, r)
	}
	if store.lazy.Load() != 0 || store.durable.Load() != 1 {
		t.Fatalf("the message: %d lazy, %d durable appends; want 0, 1", store.lazy.Load(), store.durable.Load())
	}
	in, err := store.Range(ctx, "bob", 1, 0, 10)
	if err != nil || len(in) != 1 {
		t.Fatalf("bob's inbox: %v %v", in, err)
	}
	r, err = c.Request(ctx, actors.UserGrainID("bob"), &courierpb.AckInbox{DeviceId: 1, UpToInboxSeq: in[0].InboxSeq}, "")
	if err != nil || r.(*courierpb.AckInboxReply).Error != nil {
		t.Fatalf("ack: %v %v", err, r)
	}
	select {
	case k := <-store.lazyKinds:
		if k != courierpb.EntryKind_ENTRY_KIND_DELIVERED {
			t.Fatalf("lazily appended a %v", k)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the delivered receipt was not appended lazily")
	}
	got, err := store.Range(ctx, "alice", 1, 0, 10)
	if err != nil || len(got) != 1 || got[0].Kind != courierpb.EntryKind_ENTRY_KIND_DELIVERED {
		t.Fatalf("alice's inbox: %v %v; want the delivered receipt", got, err)
	}

	r, err = c.Request(ctx, actors.UserGrainID("alice"), &courierpb.DeliverReceipt{
		FromUserId: "bob", FromDeviceId: 1, Kind: courierpb.EntryKind_ENTRY_KIND_READ, ClientMsgIds: []string{"m1"},
	}, "read/m1")
	if err != nil || r.(*courierpb.DeliverReceiptReply).Error != nil {
		t.Fatalf("read receipt: %v %v", err, r)
	}
	if n := store.lazy.Load(); n != 1 {
		t.Fatalf("%d lazy appends after a read receipt, want 1: a read receipt is promised to the reader", n)
	}
}
