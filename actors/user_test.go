package actors_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// panickyStore panics inside the grain (on its mailbox goroutine, where the
// grain leases sequence blocks) once armed, and counts user loads (one per
// activation or restart).
type panickyStore struct {
	persistence.Store
	loads atomic.Int64
	armed atomic.Bool
}

func (p *panickyStore) GetUser(ctx context.Context, id string) (persistence.User, error) {
	p.loads.Add(1)
	return p.Store.GetUser(ctx, id)
}

func (p *panickyStore) LeaseBlock(ctx context.Context, counter string, size uint64) (uint64, uint64, error) {
	if p.armed.CompareAndSwap(true, false) {
		panic("injected grain failure")
	}
	return p.Store.LeaseBlock(ctx, counter, size)
}

func deliver(from, id string) *courierpb.DeliverMessage {
	return &courierpb.DeliverMessage{FromUserId: from, FromDeviceId: 1, Send: &courierpb.Send{ClientMsgId: id, Ciphertext: []byte("ct-" + id)}}
}

func TestPanickingUserGrainRestartsAndKeepsPersistedState(t *testing.T) {
	store := &panickyStore{Store: openStore(t)}
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	// A block of one: every message leases, so the armed store panics on the
	// next message.
	deps := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{SeqBlockSize: 1}}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx := context.Background()
	bob := actors.UserGrainID("bob")

	send := func(id string, timeout time.Duration) (*courierpb.DeliverMessageReply, error) {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		r, err := c.Request(rctx, bob, deliver("alice", id), "alice/"+id)
		if err != nil {
			return nil, err
		}
		return r.(*courierpb.DeliverMessageReply), nil
	}
	for i := range 10 {
		r, err := send(fmt.Sprintf("m%d", i), 5*time.Second)
		if err != nil || r.Error != nil || r.Duplicate {
			t.Fatalf("send m%d: %v %v", i, err, r)
		}
	}
	loadsBefore := store.loads.Load()

	store.armed.Store(true)
	if r, err := send("boom", 500*time.Millisecond); err == nil && r.Error == nil {
		t.Fatalf("the panicking request was acked: %v", r)
	}

	// The restarted grain reloaded from the store: it still knows m3 was
	// stored (dedupe record), and numbers new entries after the old ones.
	waitUntil(t, 5*time.Second, func() bool {
		r, err := send("m3", time.Second)
		return err == nil && r.Error == nil && r.Duplicate
	})
	if store.loads.Load() <= loadsBefore {
		t.Fatal("the grain did not reload its state after the panic")
	}
	if r, err := send("m10", 5*time.Second); err != nil || r.Error != nil || r.Duplicate {
		t.Fatalf("send after restart: %v %v", err, r)
	}
	entries, err := store.Range(ctx, "bob", 1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 11 {
		t.Fatalf("bob's inbox has %d entries, want 11", len(entries))
	}
	for i, e := range entries {
		if want := fmt.Sprintf("m%d", i); e.ClientMsgId != want {
			t.Fatalf("entry %d is %s, want %s", i, e.ClientMsgId, want)
		}
		if i > 0 && e.InboxSeq <= entries[i-1].InboxSeq {
			t.Fatalf("inbox_seq not increasing: %d after %d", e.InboxSeq, entries[i-1].InboxSeq)
		}
	}
}

func TestTwoActivationsOfOneUserNeverShareASequenceNumber(t *testing.T) {
	// Two nodes' worth of User grains for the same user, as during a
	// membership change: both write bob's inbox through one store.
	store := openStore(t)
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	depsA := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{SeqBlockSize: 8}}
	depsB := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{SeqBlockSize: 8}}
	ca := startCluster(t, depsA, actors.UserKind(depsA))
	cb := startCluster(t, depsB, actors.UserKind(depsB))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const perNode = 100
	errs := make(chan error, 2)
	for n, c := range []*cluster.Cluster{ca, cb} {
		go func() {
			for i := range perNode {
				id := fmt.Sprintf("n%d-m%d", n, i)
				r, err := c.Request(ctx, actors.UserGrainID("bob"), deliver("alice", id), "alice/"+id)
				if err == nil && r.(*courierpb.DeliverMessageReply).Error != nil {
					err = fmt.Errorf("%v", r)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	entries, err := store.Range(ctx, "bob", 1, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2*perNode {
		t.Fatalf("bob's inbox has %d entries, want %d: an activation overwrote the other's", len(entries), 2*perNode)
	}
	// Every acknowledged message is there, each once, under a distinct
	// number, and each activation's own messages keep their send order.
	seen := make(map[string]uint64, len(entries))
	lastSeq := map[byte]int{'0': -1, '1': -1}
	for _, e := range entries {
		id := e.ClientMsgId
		if _, dup := seen[id]; dup {
			t.Fatalf("message %s stored twice", id)
		}
		seen[id] = e.InboxSeq
		var node, i int
		if _, err := fmt.Sscanf(id, "n%d-m%d", &node, &i); err != nil {
			t.Fatalf("unexpected entry %q", id)
		}
		if i <= lastSeq[byte('0'+node)] {
			t.Fatalf("activation %d's message %d stored after its message %d", node, i, lastSeq[byte('0'+node)])
		}
		lastSeq[byte('0'+node)] = i
	}
	for n := range 2 {
		for i := range perNode {
			if _, ok := seen[fmt.Sprintf("n%d-m%d", n, i)]; !ok {
				t.Fatalf("acknowledged message n%d-m%d is not in the inbox", n, i)
			}
		}
	}
}

func waitUntil(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dedupeCountingStore counts the durable duplicate checks of 1:1 sends.
type dedupeCountingStore struct {
	persistence.Store
	checks atomic.Int64
}

func (s *dedupeCountingStore) GetDedupe(ctx context.Context, recipientID string, devices []uint32, senderID, clientMsgID string) (persistence.DedupeRecord, error) {
	s.checks.Add(1)
	return s.Store.GetDedupe(ctx, recipientID, devices, senderID, clientMsgID)
}

func TestFirstTransmissionSkipsTheStoreCheckAndAResendToANewActivationIsStillADuplicate(t *testing.T) {
	store := &dedupeCountingStore{Store: openStore(t)}
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	// Two activations of bob through one store, as after a grain restart or
	// a move: the second remembers nothing the first stored.
	depsA := &actors.Deps{Store: store, Logger: testLogger()}
	depsB := &actors.Deps{Store: store, Logger: testLogger()}
	first, second := startCluster(t, depsA, actors.UserKind(depsA)), startCluster(t, depsB, actors.UserKind(depsB))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	steps := []struct {
		name        string
		on          *cluster.Cluster
		id          string
		first       bool
		wantDup     bool
		wantChecked bool
	}{
		{"first transmission is stored without a store read", first, "m1", true, false, false},
		{"a resend the activation remembers is answered from memory", first, "m1", false, true, false},
		{"a resend to a new activation is found in the store", second, "m1", false, true, true},
		{"a resend of something never stored is checked and stored", second, "m2", false, false, true},
		{"a first transmission to the new activation is not checked", second, "m3", true, false, false},
	}
	for _, st := range steps {
		before := store.checks.Load()
		msg := deliver("alice", st.id)
		msg.FirstTransmission = st.first
		r, err := st.on.Request(ctx, actors.UserGrainID("bob"), msg, "alice/"+st.id)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		reply := r.(*courierpb.DeliverMessageReply)
		if reply.Error != nil || reply.Duplicate != st.wantDup {
			t.Fatalf("%s: reply %v, want duplicate=%v", st.name, reply, st.wantDup)
		}
		if checked := store.checks.Load() > before; checked != st.wantChecked {
			t.Fatalf("%s: store checked = %v, want %v", st.name, checked, st.wantChecked)
		}
	}
	entries, err := store.Range(ctx, "bob", 1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ClientMsgId)
	}
	if fmt.Sprint(ids) != "[m1 m2 m3]" {
		t.Fatalf("bob's inbox holds %v, want each message once: [m1 m2 m3]", ids)
	}
}
