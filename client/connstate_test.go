package client_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestConnStateReportsAnOutageOnce stops the gateway under a connected
// Client and starts it again on the same address and data: the handler
// hears Disconnected once, however many reconnect attempts fail meanwhile,
// then Reconnected, and messages flow again.
func TestConnStateReportsAnOutageOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := node.Config{Listen: addr, DataDir: t.TempDir()}
	n := nodetest.Start(t, cfg)
	aliceCreds, bobCreds := register(t, n, "alice"), register(t, n, "bob")
	fast := client.WithBackoff(10*time.Millisecond, 50*time.Millisecond)

	events := make(chan client.ConnEvent, 100)
	bob := dial(t, bobCreds, fast, client.WithConnStateHandler(func(e client.ConnEvent) {
		events <- e // never blocks here: the buffer outlasts the test
	}))
	expect := func(want client.ConnState, d time.Duration) client.ConnEvent {
		t.Helper()
		select {
		case e := <-events:
			if e.State != want {
				t.Fatalf("event %v (err %v); want %v", e.State, e.Err, want)
			}
			return e
		case <-time.After(d):
			t.Fatalf("no %v event within %v", want, d)
		}
		panic("unreachable")
	}
	expectNone := func(d time.Duration) {
		t.Helper()
		select {
		case e := <-events:
			t.Fatalf("unexpected event %v (err %v)", e.State, e.Err)
		case <-time.After(d):
		}
	}
	expectNone(200 * time.Millisecond) // the first connection is no event

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if e := expect(client.Disconnected, 10*time.Second); e.Err == nil {
		t.Fatal("Disconnected without an error")
	}
	// Dozens of reconnect attempts fail while the server is down.
	expectNone(1500 * time.Millisecond)
	if bob.Connected() || bob.Err() != nil {
		t.Fatalf("while the server is down: connected %v, Err %v", bob.Connected(), bob.Err())
	}

	n = nodetest.Start(t, cfg)
	expect(client.Reconnected, 15*time.Second)
	if !bob.Connected() {
		t.Fatal("Reconnected before the session attached")
	}
	alice := dial(t, aliceCreds)
	drain(alice)
	if _, err := alice.Send(timeout(t, 10*time.Second), bobCreds.UserID, []byte("after the restart")); err != nil {
		t.Fatal(err)
	}
	if e := nextOfKind(t, bob, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second); string(e.Ciphertext) != "after the restart" {
		t.Fatalf("bob got %q", e.Ciphertext)
	}
	expectNone(200 * time.Millisecond)
	_ = bob.Close()
	expectNone(200 * time.Millisecond) // Close is no outage
}
