package client_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// nextGroupEntry returns the next group message or event, skipping the
// rest (receipts).
func nextGroupEntry(t testing.TB, c *client.Client, d time.Duration) client.Entry {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		e := next(t, c, time.Until(deadline))
		if e.IsGroupMessage() || e.IsGroupEvent() {
			return e
		}
	}
}

func TestGroupOfflineMemberResumesInOrder(t *testing.T) {
	n := startNode(t, node.Config{})
	aliceCreds, bobCreds, carolCreds := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	alice, bob := dial(t, aliceCreds), dial(t, bobCreds)
	ctx := timeout(t, 60*time.Second)

	g, err := alice.CreateGroup(ctx, "hikers", []string{bobCreds.UserID, carolCreds.UserID}, client.WithDescription("weekends"))
	if err != nil {
		t.Fatal(err)
	}
	if g.ID == "" || g.MemberCount != 3 || !g.IsAdmin() || g.Subject != "hikers" || g.Description != "weekends" {
		t.Fatalf("created %+v", g)
	}
	// Carol is offline for all of it.
	const count = 500
	pending := make([]*client.PendingSend, count)
	for i := range count {
		pending[i] = alice.SendGroupAsync(ctx, g.ID, payload(i), client.WithGroupContentType("text"))
	}
	var seqs []uint64
	for i, p := range pending {
		res, err := p.Result()
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if res.GroupID != g.ID || res.GroupSeq == 0 || res.Duplicate {
			t.Fatalf("send %d: single tick %+v", i, res)
		}
		seqs = append(seqs, res.GroupSeq)
	}
	byseq := map[uint64]int{}
	for i, s := range seqs {
		byseq[s] = i
	}
	want := slices.Clone(seqs)
	slices.Sort(want)

	receive := func(name string, c *client.Client) uint64 {
		t.Helper()
		created := nextGroupEntry(t, c, 10*time.Second)
		if !created.IsGroupEvent() || created.GroupEvent.GetType() != courierpb.GroupEventType_GROUP_EVENT_CREATED || created.GroupID != g.ID {
			t.Fatalf("%s: first group entry %+v, want the creation", name, created)
		}
		var last uint64
		for i := range count {
			e := nextGroupEntry(t, c, 10*time.Second)
			if !e.IsGroupMessage() || e.GroupSeq != want[i] || e.FromUserID != aliceCreds.UserID {
				t.Fatalf("%s: group entry %d is %+v, want message group_seq %d", name, i, e, want[i])
			}
			if !bytes.Equal(e.Ciphertext, payload(byseq[e.GroupSeq])) || e.ContentType != "text" {
				t.Fatalf("%s: message %d carries %q", name, e.GroupSeq, e.Ciphertext)
			}
			last = e.GroupSeq
		}
		return last
	}
	last := receive("bob (online)", bob)
	carol := dial(t, carolCreds)
	receive("carol (was offline)", carol)
	// Nothing more, ever: exactly once.
	expectNoGroupEntry(t, carol, 300*time.Millisecond)

	// Everyone read everything: alice gets "read by all" for her messages.
	for _, c := range []*client.Client{bob, carol} {
		if err := c.MarkGroupRead(ctx, g.ID, last); err != nil {
			t.Fatal(err)
		}
	}
	readAll := map[string]bool{}
	for len(readAll) < count {
		e := next(t, alice, 10*time.Second)
		if e.IsGroupRead() {
			if e.GroupID != g.ID {
				t.Fatalf("read receipt %+v", e)
			}
			for _, id := range e.ReceiptFor {
				readAll[id] = true
			}
		}
	}
	r, err := alice.GroupReceipts(ctx, g.ID, last)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(r.ReadBy)
	wantReaders := []string{bobCreds.UserID, carolCreds.UserID}
	slices.Sort(wantReaders)
	if !r.ReadAll || !r.DeliveredAll || r.Recipients != 2 || !slices.Equal(r.ReadBy, wantReaders) {
		t.Fatalf("receipts of the last message: %+v", r)
	}
}

func expectNoGroupEntry(t testing.TB, c *client.Client, d time.Duration) {
	t.Helper()
	timer := time.After(d)
	for {
		select {
		case e := <-c.Entries():
			if e.IsGroupMessage() || e.IsGroupEvent() {
				t.Fatalf("unexpected group entry %+v", e)
			}
		case <-timer:
			return
		}
	}
}

func TestGroupManagementOverTheSDK(t *testing.T) {
	n := startNode(t, node.Config{})
	a, b, c, d := register(t, n, "ann"), register(t, n, "ben"), register(t, n, "cat"), register(t, n, "dan")
	ann, ben, dan := dial(t, a), dial(t, b), dial(t, d)
	ctx := timeout(t, 30*time.Second)

	g, err := ann.CreateGroup(ctx, "plans", []string{b.UserID}, client.WithCreateID("plans-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := ann.CreateGroup(ctx, "plans", []string{b.UserID}, client.WithCreateID("plans-1"))
	if err != nil || again.ID != g.ID || !again.Duplicate {
		t.Fatalf("create retried: %+v, %v", again, err)
	}
	// Ben is no admin: he cannot add.
	if _, err := ben.AddMembers(ctx, g.ID, c.UserID); !client.IsCode(err, courierpb.ErrorCode_NOT_ADMIN) {
		t.Fatalf("non-admin add: %v", err)
	}
	// Dan is no member: the group does not exist for him.
	if _, err := dan.GroupInfo(ctx, g.ID); !client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		t.Fatalf("outsider info: %v", err)
	}
	if _, err := dan.SendGroup(ctx, g.ID, []byte("hi")); !client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		t.Fatalf("outsider send: %v", err)
	}
	up, err := ann.AddMembers(ctx, g.ID, c.UserID, d.UserID)
	if err != nil || up.Seq == 0 || up.Info.MemberCount != 4 {
		t.Fatalf("add: %+v, %v", up, err)
	}
	if _, err := ann.Promote(ctx, g.ID, b.UserID); err != nil {
		t.Fatal(err)
	}
	if _, err := ben.SetSubject(ctx, g.ID, "plans 2"); err != nil {
		t.Fatal(err)
	}
	if _, err := ben.RemoveMembers(ctx, g.ID, c.UserID); err != nil {
		t.Fatal(err)
	}
	if err := dan.LeaveGroup(ctx, g.ID); err != nil {
		t.Fatal(err)
	}
	members, err := ann.GroupMembers(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]courierpb.GroupRole{}
	for _, m := range members {
		roles[m.UserID] = m.Role
	}
	if len(roles) != 2 || roles[a.UserID] != courierpb.GroupRole_GROUP_ROLE_CREATOR || roles[b.UserID] != courierpb.GroupRole_GROUP_ROLE_ADMIN {
		t.Fatalf("members %v", roles)
	}
	list, err := ben.ListGroups(ctx)
	if err != nil || len(list) != 1 || list[0].ID != g.ID || list[0].Subject != "plans 2" {
		t.Fatalf("ben's groups: %+v, %v", list, err)
	}
	if list, err := dan.ListGroups(ctx); err != nil || len(list) != 0 {
		t.Fatalf("dan's groups after leaving: %+v, %v", list, err)
	}
	// Ben saw every change, numbered, in order; Dan saw his join and his
	// own leaving, nothing before or after.
	var benEvents []courierpb.GroupEventType
	var lastSeq uint64
	for len(benEvents) < 6 {
		e := nextGroupEntry(t, ben, 10*time.Second)
		if e.GroupSeq <= lastSeq {
			t.Fatalf("ben: group_seq %d after %d", e.GroupSeq, lastSeq)
		}
		lastSeq = e.GroupSeq
		benEvents = append(benEvents, e.GroupEvent.GetType())
	}
	wantEvents := []courierpb.GroupEventType{
		courierpb.GroupEventType_GROUP_EVENT_CREATED, courierpb.GroupEventType_GROUP_EVENT_MEMBERS_ADDED,
		courierpb.GroupEventType_GROUP_EVENT_ADMINS_PROMOTED, courierpb.GroupEventType_GROUP_EVENT_SUBJECT_CHANGED,
		courierpb.GroupEventType_GROUP_EVENT_MEMBERS_REMOVED, courierpb.GroupEventType_GROUP_EVENT_MEMBER_LEFT,
	}
	if !slices.Equal(benEvents, wantEvents) {
		t.Fatalf("ben's events %v, want %v", benEvents, wantEvents)
	}
	var danEvents []courierpb.GroupEventType
	var epochs []uint64
	for len(danEvents) < 5 {
		e := nextGroupEntry(t, dan, 10*time.Second)
		danEvents = append(danEvents, e.GroupEvent.GetType())
		epochs = append(epochs, e.GroupEvent.GetSenderKeyEpoch())
	}
	if !slices.Equal(danEvents, wantEvents[1:]) {
		t.Fatalf("dan's events %v, want %v", danEvents, wantEvents[1:])
	}
	if epochs[0] >= epochs[3] || epochs[3] >= epochs[4] || epochs[1] != epochs[0] {
		t.Fatalf("sender-key epochs %v: membership changes must rotate it, nothing else", epochs)
	}
	if _, err := ann.SendGroup(ctx, g.ID, []byte("after dan left")); err != nil {
		t.Fatal(err)
	}
	expectNoGroupEntry(t, dan, 300*time.Millisecond)
}
