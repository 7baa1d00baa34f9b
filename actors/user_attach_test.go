package actors_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// leaseCountingStore counts the sequence leases a grain takes.
type leaseCountingStore struct {
	persistence.Store
	leases atomic.Int64
}

func (s *leaseCountingStore) LeaseBlock(ctx context.Context, counter string, size uint64) (uint64, uint64, error) {
	s.leases.Add(1)
	return s.Store.LeaseBlock(ctx, counter, size)
}

// A device coming online activates its user's grain. The replay bound it
// gets must cover every number an earlier activation leased, yet the
// attach must not lease: a lease is a compare-and-set (Paxos on ScyllaDB,
// an fsync embedded), and a mass reconnect would pay one per user for
// numbers most of them never use.
func TestDeviceAttachingToANewActivationReplaysEveryEarlierNumberWithoutLeasing(t *testing.T) {
	store := openStore(t)
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bob := actors.UserGrainID("bob")
	send := func(c *cluster.Cluster, id string) {
		t.Helper()
		r, err := c.Request(ctx, bob, deliver("alice", id), "alice/"+id)
		if err != nil || r.(*courierpb.DeliverMessageReply).Error != nil {
			t.Fatalf("deliver %s: %v %v", id, r, err)
		}
	}

	// The first activation leases 1..8 and stores 1..3 while bob is away.
	first := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{SeqBlockSize: 8}}
	send(startCluster(t, first, actors.UserKind(first)), "m1")
	send(first.Cluster, "m2")
	send(first.Cluster, "m3")

	// Bob's phone comes online at a second activation.
	counting := &leaseCountingStore{Store: store}
	second := &actors.Deps{Store: counting, Logger: testLogger(), Config: actors.UserConfig{SeqBlockSize: 8}}
	c := startCluster(t, second, actors.UserKind(second))
	_, attached, pushed := attachStandIn(ctx, t, c, "bob")
	if got := attached.ReplayThrough; got != 8 {
		t.Fatalf("ReplayThrough = %d, want 8: the whole block the first activation leased", got)
	}
	if n := counting.leases.Load(); n != 0 {
		t.Fatalf("attaching took %d leases, want none", n)
	}
	if last, err := store.LastLeased(ctx, "inbox/bob"); err != nil || last != 8 {
		t.Fatalf("bob's counter after the attach = (%d, %v), want 8: the attach moved it", last, err)
	}

	// The first message after the attach leases past the earlier block and
	// is pushed live, above the replay bound.
	send(c, "m4")
	select {
	case p := <-pushed:
		if len(p.Entries) != 1 || p.Entries[0].ClientMsgId != "m4" || p.Entries[0].InboxSeq != 9 {
			t.Fatalf("pushed %v, want m4 at inbox_seq 9", p.Entries)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("m4 was not pushed to the attached device")
	}
	if n := counting.leases.Load(); n != 1 {
		t.Fatalf("the first message took %d leases, want 1", n)
	}
}

// rendezvousStore makes the three reads of an activation wait for each
// other: read one after another, none ever returns.
type rendezvousStore struct {
	persistence.Store
	arrived chan struct{}
}

func (s *rendezvousStore) meet(ctx context.Context) error {
	s.arrived <- struct{}{}
	for len(s.arrived) < cap(s.arrived) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

func (s *rendezvousStore) GetUser(ctx context.Context, id string) (persistence.User, error) {
	if err := s.meet(ctx); err != nil {
		return persistence.User{}, err
	}
	return s.Store.GetUser(ctx, id)
}

func (s *rendezvousStore) ListDevices(ctx context.Context, id string) ([]persistence.Device, error) {
	if err := s.meet(ctx); err != nil {
		return nil, err
	}
	return s.Store.ListDevices(ctx, id)
}

func (s *rendezvousStore) GetProfile(ctx context.Context, id string) ([]byte, error) {
	if err := s.meet(ctx); err != nil {
		return nil, err
	}
	return s.Store.GetProfile(ctx, id)
}

// An activation's three reads go out together, so a device coming online
// waits one store round trip for them, not three.
func TestActivationReadsUserDevicesAndProfileTogether(t *testing.T) {
	store := openStore(t)
	createUser(t, store, "bob", "bob")
	deps := &actors.Deps{Store: &rendezvousStore{Store: store, arrived: make(chan struct{}, 3)}, Logger: testLogger(),
		Config: actors.UserConfig{StoreTimeout: 2 * time.Second}}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	session := c.System().Root.Spawn(actor.PropsFromFunc(func(actor.Context) {}))
	r, err := c.Request(ctx, actors.UserGrainID("bob"), &courierpb.AttachDevice{DeviceId: 1, SessionAddress: session.Address, SessionId: session.Id}, "")
	if err != nil || r.(*courierpb.AttachDeviceReply).Error != nil {
		t.Fatalf("attach = (%v, %v): the activation's reads did not run together", r, err)
	}
}
