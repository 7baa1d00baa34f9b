package actors_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/protos/courierpb"
)

func testLogger() *slog.Logger {
	if os.Getenv("COURIER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openStore(t testing.TB) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(t.TempDir(), embedded.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// startCluster runs a single node hosting the given kinds built from deps.
func startCluster(t testing.TB, deps *actors.Deps, kinds ...cluster.Kind) *cluster.Cluster {
	t.Helper()
	cluster.RegisterMessages(actors.Messages()...)
	c, err := cluster.New(cluster.NewActorSystem(testLogger()), cluster.Config{
		RequestTimeout: 5 * time.Second,
		Logger:         testLogger(),
	}, kinds...)
	if err != nil {
		t.Fatal(err)
	}
	deps.Cluster = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	return c
}

func createUser(t testing.TB, s persistence.Store, id, handle string) {
	t.Helper()
	ctx := context.Background()
	if err := s.PutDevice(ctx, persistence.Device{UserID: id, DeviceID: 1, SecretHash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, persistence.User{ID: id, Handle: handle}); err != nil {
		t.Fatal(err)
	}
}

// attachStandIn attaches device 1 of user to a stand-in for a gateway
// session on c's node and returns the stand-in and what is pushed to it.
func attachStandIn(ctx context.Context, t testing.TB, c *cluster.Cluster, user string) (*actor.PID, *courierpb.AttachDeviceReply, <-chan *courierpb.PushEntries) {
	t.Helper()
	pushed := make(chan *courierpb.PushEntries, 8)
	session := c.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*courierpb.PushEntries); ok {
			pushed <- m
		}
	}, actor.WithReceiverMiddleware(cluster.UnwrapReceiver)))
	r, err := c.Request(ctx, actors.UserGrainID(user), &courierpb.AttachDevice{DeviceId: 1, SessionAddress: session.Address, SessionId: session.Id}, "")
	if err != nil || r.(*courierpb.AttachDeviceReply).Error != nil {
		t.Fatalf("attach %s: %v %v", user, r, err)
	}
	return session, r.(*courierpb.AttachDeviceReply), pushed
}
