package client_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestUserWhoNeverConnectedCanBeWrittenToAndDecryptsOnFirstConnect: keys are
// published at registration, as Signal and WhatsApp do, so a message to a
// user who registered but never connected is accepted, and decrypts when
// that user first connects, for 1:1 and group messages alike.
func TestUserWhoNeverConnectedCanBeWrittenToAndDecryptsOnFirstConnect(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	alice := e2eeDial(t, register(t, n, "alice"), dir)
	hanaKeys := filepath.Join(dir, "hana.keys")
	hana := register(t, n, "hana", client.WithE2EE(hanaKeys))

	if _, err := alice.Send(ctx, hana.UserID, []byte("welcome hana")); err != nil {
		t.Fatalf("send to a user who registered but never connected: %v", err)
	}
	g, err := alice.CreateGroup(ctx, "hikers", []string{hana.UserID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, g.ID, []byte("first group message")); err != nil {
		t.Fatal(err)
	}

	h := dial(t, hana, client.WithE2EE(hanaKeys))
	if e := nextPlain(t, h, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE); string(e.Plaintext) != "welcome hana" {
		t.Fatalf("hana got %q", e.Plaintext)
	}
	if e := nextPlain(t, h, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE); string(e.Plaintext) != "first group message" {
		t.Fatalf("hana got %q", e.Plaintext)
	}
}

// TestGroupMemberWithoutKeysGetsTheSenderKeyOnceItHasKeys: a member who had
// no published keys when an epoch's sender key went out misses it; the
// sender remembers that (in its key file, so a new process does too) and
// hands the key over before its next message once the member has keys, so
// only the messages sent while the member had no keys stay unreadable.
func TestGroupMemberWithoutKeysGetsTheSenderKeyOnceItHasKeys(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	aliceCreds := register(t, n, "alice")
	aliceKeys := filepath.Join(dir, "alice.keys")
	alice := dial(t, aliceCreds, client.WithE2EE(aliceKeys))
	bob := e2eeDial(t, register(t, n, "bob"), dir)
	hana := register(t, n, "hana") // an SDK user who publishes no keys yet

	g, err := alice.CreateGroup(ctx, "hikers", []string{bob.UserID(), hana.UserID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, g.ID, []byte("before hana has keys")); err != nil {
		t.Fatal(err)
	}
	// Alice's CLI-style process ends; the next one must still know.
	_ = alice.Close()
	h := dial(t, hana, client.WithE2EE(filepath.Join(dir, "hana.keys")))
	alice = dial(t, aliceCreds, client.WithE2EE(aliceKeys))
	if _, err := alice.SendGroup(ctx, g.ID, []byte("after hana has keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, g.ID, []byte("and once more")); err != nil {
		t.Fatal(err)
	}

	first := nextOfKind(t, h, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE, 10*time.Second)
	if first.DecryptErr == nil {
		t.Fatalf("hana decrypted %q, sent before she had keys", first.Plaintext)
	}
	for _, want := range []string{"after hana has keys", "and once more"} {
		if e := nextPlain(t, h, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE); string(e.Plaintext) != want {
			t.Fatalf("hana got %q, want %q", e.Plaintext, want)
		}
	}
	for _, want := range []string{"before hana has keys", "after hana has keys", "and once more"} {
		if e := nextPlain(t, bob, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE); string(e.Plaintext) != want {
			t.Fatalf("bob got %q, want %q", e.Plaintext, want)
		}
	}
}

// TestReceiptsOfSenderKeyMessagesNeverReachTheApplication: a group send
// hands out sender keys as 1:1 messages; their delivered receipts are the
// SDK's business and never show up as receipts of something the user sent.
func TestReceiptsOfSenderKeyMessagesNeverReachTheApplication(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	alice := e2eeDial(t, register(t, n, "alice"), dir)
	bob := e2eeDial(t, register(t, n, "bob"), dir)
	g, err := alice.CreateGroup(ctx, "pair", []string{bob.UserID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, g.ID, []byte("group hello")); err != nil {
		t.Fatal(err)
	}
	nextPlain(t, bob, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE)
	// Bob acknowledged the sender key message before the group message, so
	// its receipt reached Alice's inbox before "delivered to everyone".
	for {
		e := next(t, alice, 10*time.Second)
		if e.IsDelivered() || e.IsRead() {
			t.Fatalf("alice got a %v receipt for %v: she sent nothing 1:1", e.Kind, e.ReceiptFor)
		}
		if e.IsGroupDelivered() {
			break
		}
	}
	res, err := alice.Send(ctx, bob.UserID(), []byte("direct hello"))
	if err != nil {
		t.Fatal(err)
	}
	nextPlain(t, bob, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE)
	e := nextOfKind(t, alice, courierpb.EntryKind_ENTRY_KIND_DELIVERED, 10*time.Second)
	if len(e.ReceiptFor) != 1 || e.ReceiptFor[0] != res.ClientMsgID {
		t.Fatalf("delivered receipt is for %v, want only [%s]", e.ReceiptFor, res.ClientMsgID)
	}
}
