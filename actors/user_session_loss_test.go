package actors_test

import (
	"context"
	"testing"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
)

// notifications records what the push dispatcher hands its provider.
type notifications chan push.Notification

func (n notifications) Send(_ context.Context, p push.Notification) error {
	n <- p
	return nil
}

// A session on the grain's own node is not watched (it detaches itself
// when it stops). If that DetachDevice is lost, the grain must still find
// out, at the latest when it next pushes: the device then counts as
// offline and gets its push notification instead of a push into the void.
func TestLocalSessionThatVanishesWithoutDetachingGoesOfflineAtTheNextMessage(t *testing.T) {
	store := openStore(t)
	createUser(t, store, "alice", "alice")
	createUser(t, store, "bob", "bob")
	sent := make(notifications, 8)
	dispatcher, err := push.NewDispatcher(push.DispatcherConfig{Provider: sent, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dispatcher.Close(context.Background()) })
	deps := &actors.Deps{Store: store, Logger: testLogger(), Push: dispatcher}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	bob := actors.UserGrainID("bob")
	if r, err := c.Request(ctx, bob, &courierpb.UserSettings{DeviceId: 1, Op: &courierpb.UserSettings_PushToken{PushToken: &courierpb.PushTokenUpdate{Token: "tok"}}}, ""); err != nil || r.(*courierpb.UserSettingsReply).Error != nil {
		t.Fatalf("set push token: %v %v", r, err)
	}
	// A stand-in for a gateway session on this node.
	session, _, pushed := attachStandIn(ctx, t, c, "bob")
	send := func(id string) {
		t.Helper()
		r, err := c.Request(ctx, bob, deliver("alice", id), "alice/"+id)
		if err != nil || r.(*courierpb.DeliverMessageReply).Error != nil {
			t.Fatalf("deliver %s: %v %v", id, r, err)
		}
	}

	send("m1")
	select {
	case p := <-pushed:
		if len(p.Entries) != 1 || p.Entries[0].ClientMsgId != "m1" {
			t.Fatalf("pushed %v, want m1", p.Entries)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("m1 was not pushed to the attached session")
	}
	select {
	case n := <-sent:
		t.Fatalf("push notification %+v for a device that is online", n)
	case <-time.After(200 * time.Millisecond):
	}

	// The session stops and no DetachDevice reaches the grain.
	if err := c.System().Root.StopFuture(session).Wait(); err != nil {
		t.Fatal(err)
	}
	send("m2")
	select {
	case n := <-sent:
		if n.UserID != "bob" || n.DeviceID != 1 || n.Token != "tok" {
			t.Fatalf("push notification %+v, want bob's device 1 with its token", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no push notification: the grain still thinks the stopped session holds the device")
	}
}
