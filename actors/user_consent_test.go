package actors_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// inboxOf returns the entries of one device inbox.
func inboxOf(t *testing.T, s persistence.Store, user string) []*courierpb.InboxEntry {
	t.Helper()
	got, err := s.Range(context.Background(), user, 1, 0, 1000)
	if err != nil {
		t.Fatalf("range %s: %v", user, err)
	}
	return got
}

func kindsFrom(entries []*courierpb.InboxEntry, from string, kind courierpb.EntryKind) int {
	n := 0
	for _, e := range entries {
		if e.FromUserId == from && e.Kind == kind {
			n++
		}
	}
	return n
}

func settings(t *testing.T, c *cluster.Cluster, user string, s *courierpb.UserSettings) {
	t.Helper()
	r, err := c.Request(context.Background(), actors.UserGrainID(user), s, "")
	if err != nil || r.(*courierpb.UserSettingsReply).Error != nil {
		t.Fatalf("settings of %s: %v %v", user, r, err)
	}
}

func addContacts(t *testing.T, c *cluster.Cluster, user string, ids ...string) {
	settings(t, c, user, &courierpb.UserSettings{DeviceId: 1, Op: &courierpb.UserSettings_Contacts{Contacts: &courierpb.ContactsUpdate{AddUserIds: ids}}})
}

func block(t *testing.T, c *cluster.Cluster, user, who string) {
	settings(t, c, user, &courierpb.UserSettings{DeviceId: 1, Op: &courierpb.UserSettings_Block{Block: &courierpb.BlockUpdate{UserId: who, Blocked: true}}})
}

func TestReadReceiptPassesOnlyForMessagesThePeerDeliveredToTheReader(t *testing.T) {
	store := openStore(t)
	for _, u := range []string{"alice", "bob", "eve", "mallory"} {
		createUser(t, store, u, u)
	}
	// A window of one: bob's grain remembers only its latest delivery, so
	// the older ones are checked against the store's dedupe records.
	deps := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{DedupeWindow: 1}}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx := context.Background()
	for _, m := range []struct{ from, to, id string }{{"alice", "bob", "m1"}, {"alice", "bob", "m2"}, {"alice", "mallory", "x1"}} {
		r, err := c.Request(ctx, actors.UserGrainID(m.to), deliver(m.from, m.id), m.from+"/"+m.id)
		if err != nil || r.(*courierpb.DeliverMessageReply).Error != nil {
			t.Fatalf("deliver %s: %v %v", m.id, r, err)
		}
	}
	// bob acks everything: the receipt must not depend on the entries.
	if err := store.DeleteRange(ctx, "bob", 1, 0, 1<<40); err != nil {
		t.Fatal(err)
	}
	read := func(reader, peer string, ids ...string) *courierpb.Error {
		t.Helper()
		r, err := c.Request(ctx, actors.UserGrainID(reader), &courierpb.SendReadReceipt{FromDeviceId: 1, PeerUserId: peer, ClientMsgIds: ids}, "")
		if err != nil {
			t.Fatalf("read receipt from %s: %v", reader, err)
		}
		return r.(*courierpb.DeliverReceiptReply).Error
	}

	refused := []struct {
		name   string
		reader string
		ids    []string
		code   courierpb.ErrorCode
	}{
		{"a stranger's made-up ids", "eve", []string{"buy cheap watches at example.com"}, courierpb.ErrorCode_FORBIDDEN},
		{"a stranger naming real ids of someone else", "eve", []string{"m1"}, courierpb.ErrorCode_FORBIDDEN},
		{"a real reader mixing in a made-up id", "bob", []string{"m1", "spam"}, courierpb.ErrorCode_FORBIDDEN},
		{"an id longer than any client_msg_id", "bob", []string{strings.Repeat("x", actors.MaxClientMsgIDLen+1)}, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"an empty id", "bob", []string{""}, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"no ids", "bob", nil, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"too many ids", "bob", slices.Repeat([]string{"m1"}, actors.MaxReceiptIDs+1), courierpb.ErrorCode_INVALID_ARGUMENT},
	}
	for _, tc := range refused {
		if e := read(tc.reader, "alice", tc.ids...); e == nil || e.Code != tc.code {
			t.Errorf("%s: answered %v, want %v", tc.name, e, tc.code)
		}
	}
	if got := inboxOf(t, store, "alice"); len(got) != 0 {
		t.Fatalf("refused receipts stored %d entries in alice's inbox: %v", len(got), got)
	}

	// The genuine receipt: m1 only from the store, m2 from memory, and a
	// repeat that costs nothing.
	if e := read("bob", "alice", "m1", "m2", "m1"); e != nil {
		t.Fatalf("bob's genuine read receipt refused: %v", e)
	}
	got := inboxOf(t, store, "alice")
	if len(got) != 1 || got[0].Kind != courierpb.EntryKind_ENTRY_KIND_READ || got[0].FromUserId != "bob" || !slices.Equal(got[0].ReceiptFor, []string{"m1", "m2"}) {
		t.Fatalf("alice's inbox after bob's receipt: %v", got)
	}
	// Read once is read: repeating the receipt (another device, a replay)
	// is answered and stores nothing more.
	if e := read("bob", "alice", "m2", "m1"); e != nil {
		t.Fatalf("bob's repeated read receipt refused: %v", e)
	}
	if got := inboxOf(t, store, "alice"); len(got) != 1 {
		t.Fatalf("a repeated read receipt was stored again: %v", got)
	}

	// Blocked means nothing arrives: mallory really got x1, but alice
	// blocked her since. She is answered as if stored (she must not learn
	// of the block), and nothing is.
	block(t, c, "alice", "mallory")
	if e := read("mallory", "alice", "x1"); e != nil {
		t.Fatalf("a blocked reader was told something: %v", e)
	}
	for _, kind := range []courierpb.EntryKind{courierpb.EntryKind_ENTRY_KIND_DELIVERED, courierpb.EntryKind_ENTRY_KIND_READ, courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED} {
		r, err := c.Request(ctx, actors.UserGrainID("alice"), &courierpb.DeliverReceipt{FromUserId: "mallory", FromDeviceId: 1, Kind: kind, ClientMsgIds: []string{"x1"}}, "")
		if err != nil || r.(*courierpb.DeliverReceiptReply).Error != nil {
			t.Fatalf("%v receipt from a blocked user: %v %v", kind, r, err)
		}
	}
	if got := inboxOf(t, store, "alice"); kindsFrom(got, "mallory", courierpb.EntryKind_ENTRY_KIND_READ)+kindsFrom(got, "mallory", courierpb.EntryKind_ENTRY_KIND_DELIVERED)+kindsFrom(got, "mallory", courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED) != 0 {
		t.Fatalf("a blocked user's receipts were stored: %v", got)
	}
}

func TestIdentityNoticesReachOnlyConsentingContactsAndArePaced(t *testing.T) {
	store := openStore(t)
	for _, u := range []string{"alice", "bob", "eve", "mallory"} {
		createUser(t, store, u, u)
	}
	const every = 300 * time.Millisecond
	deps := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{IdentityNoticeInterval: every}}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx := context.Background()

	// eve put alice in her contacts without alice's consent; mallory is a
	// contact alice blocked; bob and alice have each other.
	addContacts(t, c, "eve", "alice")
	addContacts(t, c, "mallory", "alice")
	addContacts(t, c, "alice", "mallory", "bob")
	block(t, c, "alice", "mallory")
	addContacts(t, c, "bob", "alice")

	change := func(user string, n int) {
		for range n {
			if _, err := c.Request(ctx, actors.UserGrainID(user), &courierpb.IdentityChanged{DeviceId: 1}, ""); err != nil {
				t.Fatalf("identity change of %s: %v", user, err)
			}
		}
	}
	start := time.Now()
	change("eve", 20)
	change("mallory", 20)
	change("bob", 20)
	notices := func(from string) int {
		return kindsFrom(inboxOf(t, store, "alice"), from, courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED)
	}
	// One notice at once, the other 19 uploads coalesced into one more at
	// the end of the interval.
	waitUntil(t, 5*time.Second, func() bool { return notices("bob") >= 1 })
	if n, since := notices("bob"), time.Since(start); n != 1 && since < every {
		t.Fatalf("%d notices from bob %v after 20 uploads, want 1 before the interval ends", n, since)
	}
	waitUntil(t, 5*time.Second, func() bool { return notices("bob") >= 2 })
	time.Sleep(every + 100*time.Millisecond)
	if n := notices("bob"); n != 2 {
		t.Fatalf("%d notices from bob after 20 uploads within an interval, want 2", n)
	}
	for _, from := range []string{"eve", "mallory"} {
		if n := notices(from); n != 0 {
			t.Errorf("%d identity notices from %s stored in alice's inbox, want none", n, from)
		}
	}
	if got := inboxOf(t, store, "alice"); len(got) != 2 {
		t.Fatalf("alice's inbox holds %d entries, want bob's 2 notices: %v", len(got), got)
	}
}
