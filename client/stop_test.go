package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
)

// waitEntriesClosed fails unless c's Entries channel closes within d.
func waitEntriesClosed(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	timer := time.After(d)
	for {
		select {
		case _, ok := <-c.Entries():
			if !ok {
				return
			}
		case <-timer:
			t.Fatalf("Entries still open after %v", d)
		}
	}
}

// TestErrSaysTheClientWasReplaced opens two Clients with the same
// credentials: the first stops, and Err says another connection of the
// device took over; a Client the application closes has no Err.
func TestErrSaysTheClientWasReplaced(t *testing.T) {
	n := startNode(t, node.Config{})
	creds := register(t, n, "bob")
	first := dial(t, creds)
	if err := first.Err(); err != nil {
		t.Fatalf("Err of a running client = %v", err)
	}
	second := dial(t, creds)
	waitEntriesClosed(t, first, 10*time.Second)
	err := first.Err()
	if !errors.Is(err, client.ErrReplaced) || !strings.Contains(err.Error(), "another connection of this device took over its inbox") {
		t.Fatalf("Err of the replaced client = %v; want ErrReplaced", err)
	}
	if !first.Replaced() {
		t.Fatal("Replaced() = false")
	}
	if _, err := first.Send(timeout(t, 5*time.Second), creds.UserID, []byte("x")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send on the stopped client: %v; want ErrClosed", err)
	}
	if err := second.Err(); err != nil {
		t.Fatalf("Err of the newer client = %v", err)
	}
	_ = second.Close()
	if err := second.Err(); err != nil {
		t.Fatalf("Err after Close = %v; want nil", err)
	}
}

// TestErrSaysTheDeviceWasUnlinked unlinks a connected device: its Client
// stops and Err says the server no longer accepts the device, rather than
// that another connection took over.
func TestErrSaysTheDeviceWasUnlinked(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := timeout(t, 30*time.Second)
	primary := dial(t, register(t, n, "carol"))
	drain(primary)
	code, err := primary.CreateLinkCode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Link(ctx, n.URL(), code)
	if err != nil {
		t.Fatal(err)
	}
	linked := dial(t, creds)
	if err := primary.UnlinkDevice(ctx, creds.DeviceID); err != nil {
		t.Fatal(err)
	}
	waitEntriesClosed(t, linked, 10*time.Second)
	if err := linked.Err(); !errors.Is(err, client.ErrUnauthorized) || errors.Is(err, client.ErrReplaced) {
		t.Fatalf("Err of the unlinked device = %v; want ErrUnauthorized", err)
	}
	if err := primary.Err(); err != nil || !primary.Connected() {
		t.Fatalf("primary: Err %v, connected %v", err, primary.Connected())
	}
}
