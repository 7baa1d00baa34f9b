package actors_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// groupEnv is one node hosting users and groups on an embedded store.
type groupEnv struct {
	t     *testing.T
	store persistence.Store
	gs    persistence.GroupStore
	c     *cluster.Cluster
}

func newGroupEnv(t *testing.T, store persistence.Store, mutate func(*actors.Deps)) *groupEnv {
	t.Helper()
	gs := store.(persistence.GroupStore)
	deps := &actors.Deps{Store: store, Groups: gs, Logger: testLogger()}
	if mutate != nil {
		mutate(deps)
	}
	c := startCluster(t, deps, actors.UserKind(deps), actors.GroupKind(deps))
	return &groupEnv{t: t, store: store, gs: gs, c: c}
}

func (e *groupEnv) users(prefix string, n int) []string {
	e.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%04d", prefix, i)
		createUser(e.t, e.store, ids[i], ids[i])
	}
	return ids
}

func (e *groupEnv) request(id cluster.GrainID, msg proto.Message, key string) proto.Message {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := e.c.Request(ctx, id, msg, key)
	if err != nil {
		e.t.Fatalf("request %T: %v", msg, err)
	}
	return r
}

func (e *groupEnv) create(creator string, members ...string) string {
	e.t.Helper()
	createID := fmt.Sprintf("create-%s-%d", creator, time.Now().UnixNano())
	gid := actors.GroupIDFor(creator, createID)
	r := e.request(actors.GroupGrainID(gid), &courierpb.CreateGroup{GroupId: gid, UserId: creator, DeviceId: 1, Create: &courierpb.GroupCreate{
		CreateId: createID, Subject: "test group", MemberUserIds: members,
	}}, "").(*courierpb.CreateGroupReply)
	if r.Error != nil {
		e.t.Fatalf("create group: %v", r.Error)
	}
	return gid
}

func (e *groupEnv) send(gid, from, cmid string) (*courierpb.SendGroupMessageReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := e.c.Request(ctx, actors.GroupGrainID(gid), &courierpb.SendGroupMessage{UserId: from, DeviceId: 1, Send: &courierpb.GroupSend{
		GroupId: gid, ClientMsgId: cmid, Ciphertext: []byte("ct " + cmid),
	}}, from+"/"+cmid)
	if err != nil {
		return nil, err
	}
	return r.(*courierpb.SendGroupMessageReply), nil
}

func (e *groupEnv) mustSend(gid, from, cmid string) *courierpb.SendGroupMessageReply {
	e.t.Helper()
	r, err := e.send(gid, from, cmid)
	if err != nil || r.Error != nil {
		e.t.Fatalf("send %s: %v %v", cmid, err, r.GetError())
	}
	return r
}

func (e *groupEnv) update(gid, by string, u *courierpb.GroupUpdate) *courierpb.UpdateGroupReply {
	e.t.Helper()
	u.GroupId = gid
	return e.request(actors.GroupGrainID(gid), &courierpb.UpdateGroup{GroupId: gid, UserId: by, DeviceId: 1, Update: u}, "").(*courierpb.UpdateGroupReply)
}

// inbox reads a device inbox.
func (e *groupEnv) inbox(user string) []*courierpb.InboxEntry {
	e.t.Helper()
	all, err := e.store.Range(context.Background(), user, 1, 0, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	return all
}

// groupEntries returns the group entries of one group in a device inbox.
func (e *groupEnv) groupEntries(user, gid string) []*courierpb.InboxEntry {
	var out []*courierpb.InboxEntry
	for _, x := range e.inbox(user) {
		if x.GroupId == gid && (x.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE || x.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT) {
			out = append(out, x)
		}
	}
	return out
}

// settle waits until the group's fan-out is stored as complete.
func (e *groupEnv) settle(gid string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending, err := e.gs.PendingFanout(context.Background(), 1<<20)
		if err != nil {
			e.t.Fatal(err)
		}
		if !slices.Contains(pending, gid) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatal("group fan-out did not finish")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func seqsOf(es []*courierpb.InboxEntry) []uint64 {
	out := make([]uint64, 0, len(es))
	for _, e := range es {
		out = append(out, e.GroupSeq)
	}
	return out
}

func TestGroupFanoutOrderAndExactlyOnce(t *testing.T) {
	e := newGroupEnv(t, openStore(t), func(d *actors.Deps) { d.Group.FanoutBatch = 3; d.Group.FanoutConcurrency = 4 })
	u := e.users("u", 12)
	gid := e.create(u[0], u[1:]...)
	// Senders in parallel; each keeps its own order, the group one order.
	var wg sync.WaitGroup
	for s := range 4 {
		wg.Go(func() {
			for i := range 15 {
				e.mustSend(gid, u[s], fmt.Sprintf("s%d-m%02d", s, i))
			}
		})
	}
	wg.Wait()
	// A retry is acknowledged as a duplicate with the original number.
	first := e.mustSend(gid, u[0], "s0-m00")
	if !first.Duplicate {
		t.Fatal("a retried send was not a duplicate")
	}
	e.settle(gid)
	var ref []*courierpb.InboxEntry // everything, from a member that did not send
	for _, x := range u[4:] {
		got := e.groupEntries(x, gid)
		if ref == nil {
			ref = got
		}
		if !slices.Equal(seqsOf(got), seqsOf(ref)) {
			t.Fatalf("%s got %v, %s got %v", x, seqsOf(got), u[4], seqsOf(ref))
		}
		if len(got) != 61 { // CREATED + 60 messages
			t.Fatalf("%s has %d group entries, want 61", x, len(got))
		}
		for i := 1; i < len(got); i++ {
			if got[i].GroupSeq <= got[i-1].GroupSeq || got[i].InboxSeq <= got[i-1].InboxSeq {
				t.Fatalf("%s: entry %d out of order", x, i)
			}
		}
	}
	// Senders get everything but their own messages, in the same order.
	for s := range 4 {
		var want []uint64
		for _, r := range ref {
			if r.FromUserId != u[s] || r.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT {
				want = append(want, r.GroupSeq)
			}
		}
		if got := seqsOf(e.groupEntries(u[s], gid)); !slices.Equal(got, want) {
			t.Fatalf("sender %s got %v, want %v", u[s], got, want)
		}
	}
	if ref[0].Kind != courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT || ref[0].GroupEvent.GetType() != courierpb.GroupEventType_GROUP_EVENT_CREATED {
		t.Fatalf("first entry is %v, want the CREATED event", ref[0])
	}
}

func TestGroupAuthorization(t *testing.T) {
	e := newGroupEnv(t, openStore(t), nil)
	u := e.users("a", 5)
	owner, b, c, x, y := u[0], u[1], u[2], u[3], u[4]
	gid := e.create(owner, b, c)
	missing := actors.GroupIDFor(owner, "never-created")

	// Outsiders learn nothing: the same answer as for a group that does not exist.
	info := func(g, who string) *courierpb.Error {
		return e.request(actors.GroupGrainID(g), &courierpb.GetGroupInfo{GroupId: g, UserId: who}, "").(*courierpb.GetGroupInfoReply).Error
	}
	members := func(g, who string) *courierpb.Error {
		return e.request(actors.GroupGrainID(g), &courierpb.GetGroupMembers{GroupId: g, UserId: who}, "").(*courierpb.GetGroupMembersReply).Error
	}
	none := info(missing, x)
	if none.GetCode() != courierpb.ErrorCode_NOT_FOUND {
		t.Fatalf("info of a missing group: %v", none)
	}
	for what, got := range map[string]*courierpb.Error{
		"info":                       info(gid, x),
		"members":                    members(gid, x),
		"members of a missing group": members(missing, x),
	} {
		if !proto.Equal(got, none) {
			t.Fatalf("%s as a non-member: %v, want exactly %v", what, got, none)
		}
	}
	send := func(from, id string) *courierpb.Error {
		r, err := e.send(gid, from, id)
		if err != nil {
			t.Fatal(err)
		}
		return r.Error
	}
	if got := send(x, "x1"); !proto.Equal(got, none) {
		t.Fatalf("non-member send: %v, want %v", got, none)
	}
	upd := func(by string, u *courierpb.GroupUpdate) *courierpb.Error { return e.update(gid, by, u).Error }
	add := func(ids ...string) *courierpb.GroupUpdate {
		return &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: ids}}}
	}
	remove := func(ids ...string) *courierpb.GroupUpdate {
		return &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_RemoveMembers{RemoveMembers: &courierpb.GroupUserIds{UserIds: ids}}}
	}
	promote := func(ids ...string) *courierpb.GroupUpdate {
		return &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_PromoteAdmins{PromoteAdmins: &courierpb.GroupUserIds{UserIds: ids}}}
	}
	if got := upd(x, add(y)); !proto.Equal(got, none) {
		t.Fatalf("non-member add: %v, want %v", got, none)
	}
	for what, got := range map[string]*courierpb.Error{
		"non-admin add":     upd(b, add(x)),
		"non-admin remove":  upd(b, remove(c)),
		"non-admin promote": upd(b, promote(c)),
	} {
		if got.GetCode() != courierpb.ErrorCode_NOT_ADMIN {
			t.Fatalf("%s: %v, want NOT_ADMIN", what, got)
		}
	}
	if got := upd(owner, add("no-such-user")); got.GetCode() != courierpb.ErrorCode_INVALID_ARGUMENT {
		t.Fatalf("adding an unknown user: %v", got)
	}
	// The owner removes c: c can no longer send or look.
	if got := upd(owner, remove(c)); got != nil {
		t.Fatal(got)
	}
	if got := send(c, "c1"); !proto.Equal(got, none) {
		t.Fatalf("removed member send: %v, want %v", got, none)
	}
	if got := info(gid, c); !proto.Equal(got, none) {
		t.Fatalf("removed member info: %v, want %v", got, none)
	}
	// An admin may add; nobody but the creator may remove the creator.
	if got := upd(owner, promote(b)); got != nil {
		t.Fatal(got)
	}
	if got := upd(b, add(x)); got != nil {
		t.Fatalf("admin add: %v", got)
	}
	if got := upd(b, remove(owner)); got.GetCode() != courierpb.ErrorCode_FORBIDDEN {
		t.Fatalf("admin removing the creator: %v, want FORBIDDEN", got)
	}
	if got := send(x, "x2"); got != nil {
		t.Fatalf("new member send: %v", got)
	}
	// Admins-only sending.
	if got := upd(owner, &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_Settings{Settings: &courierpb.GroupSettings{
		Send: courierpb.GroupPermission_GROUP_PERMISSION_ADMINS_ONLY,
	}}}); got != nil {
		t.Fatal(got)
	}
	if got := send(x, "x3"); got.GetCode() != courierpb.ErrorCode_NOT_ADMIN {
		t.Fatalf("member send in an admins-only group: %v, want NOT_ADMIN", got)
	}
	if got := send(b, "b1"); got != nil {
		t.Fatalf("admin send in an admins-only group: %v", got)
	}
	// Retried and no-op changes succeed without an event.
	r := e.update(gid, owner, add(x))
	if r.Error != nil || r.Ok.GroupSeq != 0 {
		t.Fatalf("adding a member twice: %v", r)
	}
	// Leaving works once; afterwards the group is gone for the leaver.
	if r := e.update(gid, x, &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}}); r.Error != nil || r.Ok.GroupSeq == 0 {
		t.Fatalf("leave: %v", r)
	}
	if got := send(x, "x4"); !proto.Equal(got, none) {
		t.Fatalf("send after leaving: %v", got)
	}
	// Only the sender sees a message's per-member receipts.
	seq := e.mustSend(gid, b, "b2").GroupSeq
	rr := e.request(actors.GroupGrainID(gid), &courierpb.GetGroupReceipts{GroupId: gid, UserId: owner, GroupSeq: seq}, "").(*courierpb.GetGroupReceiptsReply)
	if rr.Error.GetCode() != courierpb.ErrorCode_FORBIDDEN {
		t.Fatalf("receipts of someone else's message: %v", rr)
	}
	ml := e.request(actors.GroupGrainID(gid), &courierpb.GetGroupMembers{GroupId: gid, UserId: owner}, "").(*courierpb.GetGroupMembersReply)
	var ids []string
	for _, m := range ml.GetMembers().GetMembers() {
		ids = append(ids, m.UserId)
	}
	slices.Sort(ids)
	if want := []string{owner, b}; !slices.Equal(ids, want) {
		t.Fatalf("members %v, want %v", ids, want)
	}
}

// expectedView replays the group's log (everything an observer member that
// never sends saw) and returns the group_seqs user should have received:
// the events that add or remove it, everything between while it is a
// member, except its own messages (its only device sent them).
func expectedView(log []*courierpb.InboxEntry, user string) []uint64 {
	member := false
	var want []uint64
	for _, e := range log {
		if ev := e.GroupEvent; ev != nil {
			named := slices.Contains(ev.UserIds, user)
			switch ev.Type {
			case courierpb.GroupEventType_GROUP_EVENT_CREATED, courierpb.GroupEventType_GROUP_EVENT_MEMBERS_ADDED:
				if named {
					member = true
				}
				if member {
					want = append(want, e.GroupSeq)
				}
			case courierpb.GroupEventType_GROUP_EVENT_MEMBERS_REMOVED, courierpb.GroupEventType_GROUP_EVENT_MEMBER_LEFT:
				if member {
					want = append(want, e.GroupSeq)
				}
				if named {
					member = false
				}
			default:
				if member {
					want = append(want, e.GroupSeq)
				}
			}
			continue
		}
		if member && e.FromUserId != user {
			want = append(want, e.GroupSeq)
		}
	}
	return want
}

func TestGroupMembershipRace(t *testing.T) {
	e := newGroupEnv(t, openStore(t), func(d *actors.Deps) { d.Group.FanoutBatch = 4; d.Group.FanoutConcurrency = 8 })
	owner := e.users("owner", 1)[0]
	observer := e.users("observer", 1)[0]
	senders := e.users("sender", 3)
	churn := e.users("churn", 6)
	gid := e.create(owner, append(append([]string{observer}, senders...), churn[:3]...)...)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	sent := make([]int, len(senders)+len(churn))
	send := func(i int, from string) {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			r, err := e.send(gid, from, fmt.Sprintf("%s-%d", from, n))
			if err != nil {
				t.Error(err)
				return
			}
			if r.Error == nil {
				sent[i]++
			} else if r.Error.Code != courierpb.ErrorCode_NOT_FOUND {
				t.Errorf("send from %s: %v", from, r.Error)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i, s := range senders {
		wg.Go(func() { send(i, s) })
	}
	for i, c := range churn {
		wg.Go(func() { send(len(senders)+i, c) })
	}
	// Two admins change membership concurrently with the sends.
	var churnWG sync.WaitGroup
	for w := range 2 {
		churnWG.Go(func() {
			for round := range 12 {
				target := churn[(w*3+round)%len(churn)]
				var u *courierpb.GroupUpdate
				if round%2 == 0 {
					u = &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_RemoveMembers{RemoveMembers: &courierpb.GroupUserIds{UserIds: []string{target}}}}
				} else {
					u = &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: []string{target}}}}
				}
				if r := e.update(gid, owner, u); r.Error != nil {
					t.Errorf("membership change: %v", r.Error)
				}
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	churnWG.Wait()
	close(stop)
	wg.Wait()
	e.settle(gid)

	log := e.groupEntries(observer, gid)
	for i := 1; i < len(log); i++ {
		if log[i].GroupSeq <= log[i-1].GroupSeq {
			t.Fatalf("observer: group_seq %d after %d", log[i].GroupSeq, log[i-1].GroupSeq)
		}
	}
	events, msgs := 0, 0
	for _, x := range log {
		if x.GroupEvent != nil {
			events++
		} else {
			msgs++
		}
	}
	total := 0
	for _, n := range sent {
		total += n
	}
	if msgs != total {
		t.Fatalf("observer saw %d messages, %d were acknowledged", msgs, total)
	}
	for _, u := range append(append([]string{owner}, senders...), churn...) {
		got := seqsOf(e.groupEntries(u, gid))
		if want := expectedView(log, u); !slices.Equal(got, want) {
			t.Fatalf("%s got group_seqs\n%v\nits membership events say\n%v", u, got, want)
		}
	}
	t.Logf("%d events, %d messages; every member's view matches the membership events", events, msgs)
}

// slowStore refuses appends to one user's inbox (after a pause) until
// released, and counts the attempts.
type slowStore struct {
	persistence.Store
	persistence.GroupStore
	user     string
	armed    chan struct{} // closed to release
	attempts atomic.Int64
}

func (s *slowStore) Append(ctx context.Context, entries []persistence.InboxAppend, dedupe []persistence.DedupeRecord) error {
	for _, a := range entries {
		if a.UserID != s.user {
			continue
		}
		s.attempts.Add(1)
		select {
		case <-s.armed:
		case <-time.After(50 * time.Millisecond):
			return fmt.Errorf("injected slow inbox: %w", persistence.ErrUnavailable)
		case <-ctx.Done():
			return ctx.Err()
		}
		break
	}
	return s.Store.Append(ctx, entries, dedupe)
}

func TestGroupSlowMemberDoesNotStallOthers(t *testing.T) {
	base := openStore(t)
	slow := &slowStore{Store: base, GroupStore: base, user: "m0003", armed: make(chan struct{})}
	e := newGroupEnv(t, slow, func(d *actors.Deps) {
		d.Config.StoreTimeout = 300 * time.Millisecond
		d.Config.RequestTimeout = time.Second
		d.Group.FanoutMaxBackoff = 200 * time.Millisecond
		// A short in-memory tail: the slow member catches up from the store.
		d.Group.TailEntries = 8
		d.Group.FanoutBatch = 5
	})
	u := e.users("m", 6)
	gid := e.create(u[0], u[1:]...)
	for i := range 20 {
		e.mustSend(gid, u[0], fmt.Sprintf("m%d", i))
	}
	// Everyone else gets all 20 while m0003's inbox refuses writes.
	waitUntil(t, 10*time.Second, func() bool {
		for _, x := range u[1:] {
			if x != slow.user && len(e.groupEntries(x, gid)) != 21 {
				return false
			}
		}
		return true
	})
	if n := len(e.groupEntries(slow.user, gid)); n != 0 {
		t.Fatalf("the slow member has %d entries", n)
	}
	// Let it fail a few times (retried with backoff) before it recovers.
	waitUntil(t, 10*time.Second, func() bool { return slow.attempts.Load() >= 3 })
	close(slow.armed)
	e.settle(gid)
	got := e.groupEntries(slow.user, gid)
	want := seqsOf(e.groupEntries(u[1], gid))
	if !slices.Equal(seqsOf(got), want) {
		t.Fatalf("slow member got %v, want %v", seqsOf(got), want)
	}
}

func TestGroupReceiptsAggregate(t *testing.T) {
	e := newGroupEnv(t, openStore(t), nil)
	u := e.users("r", 3)
	a, b, c := u[0], u[1], u[2]
	gid := e.create(a, b, c)
	seq := e.mustSend(gid, a, "hello").GroupSeq
	e.settle(gid)
	ack := func(user string) {
		t.Helper()
		in := e.inbox(user)
		r := e.request(actors.UserGrainID(user), &courierpb.AckInbox{DeviceId: 1, UpToInboxSeq: in[len(in)-1].InboxSeq}, "").(*courierpb.AckInboxReply)
		if r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	receipts := func() *courierpb.GroupReceipts {
		t.Helper()
		r := e.request(actors.GroupGrainID(gid), &courierpb.GetGroupReceipts{GroupId: gid, UserId: a, GroupSeq: seq}, "").(*courierpb.GetGroupReceiptsReply)
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		return r.Receipts
	}
	aggregates := func(kind courierpb.EntryKind) []*courierpb.InboxEntry {
		var out []*courierpb.InboxEntry
		for _, x := range e.inbox(a) {
			if x.Kind == kind {
				out = append(out, x)
			}
		}
		return out
	}
	ack(b)
	waitUntil(t, 5*time.Second, func() bool { return slices.Equal(receipts().DeliveredUserIds, []string{b}) })
	if r := receipts(); r.DeliveredAll || r.Recipients != 2 {
		t.Fatalf("after one of two delivered: %v", r)
	}
	ack(c)
	waitUntil(t, 5*time.Second, func() bool { return len(aggregates(courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED)) == 1 })
	d := aggregates(courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED)[0]
	if d.GroupId != gid || d.GroupSeq != seq || !slices.Equal(d.ReceiptFor, []string{"hello"}) {
		t.Fatalf("delivered-to-all entry: %v", d)
	}
	for _, reader := range []string{b, c} {
		r := e.request(actors.GroupGrainID(gid), &courierpb.GroupReceipt{GroupId: gid, UserId: reader, Kind: courierpb.EntryKind_ENTRY_KIND_READ, UpToGroupSeq: seq}, "").(*courierpb.GroupReceiptReply)
		if r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	waitUntil(t, 5*time.Second, func() bool { return len(aggregates(courierpb.EntryKind_ENTRY_KIND_GROUP_READ)) == 1 })
	r := receipts()
	slices.Sort(r.ReadUserIds)
	if !r.ReadAll || !r.DeliveredAll || !slices.Equal(r.ReadUserIds, []string{b, c}) {
		t.Fatalf("receipts after both read: %v", r)
	}
	// A non-member may not report receipts.
	rr := e.request(actors.GroupGrainID(gid), &courierpb.GroupReceipt{GroupId: gid, UserId: "stranger", Kind: courierpb.EntryKind_ENTRY_KIND_READ, UpToGroupSeq: seq}, "").(*courierpb.GroupReceiptReply)
	if rr.Error.GetCode() != courierpb.ErrorCode_NOT_FOUND {
		t.Fatalf("stranger's receipt: %v", rr)
	}
}

func TestGroupFanoutResumesAfterRestart(t *testing.T) {
	base := openStore(t)
	slow := &slowStore{Store: base, GroupStore: base, user: "k0002", armed: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	depsA := &actors.Deps{Store: slow, Groups: slow, Logger: testLogger(), Config: actors.UserConfig{StoreTimeout: 300 * time.Millisecond}}
	ca := startCluster(t, depsA, actors.UserKind(depsA), actors.GroupKind(depsA))
	e := &groupEnv{t: t, store: base, gs: base, c: ca}
	u := e.users("k", 5)
	gid := e.create(u[0], u[1:]...)
	for i := range 10 {
		e.mustSend(gid, u[0], fmt.Sprintf("m%d", i))
	}
	waitUntil(t, 10*time.Second, func() bool { return len(e.groupEntries(u[1], gid)) == 11 })
	// The first node goes away with k0002's fan-out unfinished.
	if err := ca.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if pending, _ := base.PendingFanout(ctx, 10); !slices.Contains(pending, gid) {
		t.Fatalf("the unfinished fan-out is not pending: %v", pending)
	}
	depsB := &actors.Deps{Store: base, Groups: base, Logger: testLogger()}
	cb := startCluster(t, depsB, actors.UserKind(depsB), actors.GroupKind(depsB))
	e.c = cb
	rctx, stopResume := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); actors.ResumeFanouts(rctx, cb, base, time.Hour, testLogger()) }()
	e.settle(gid)
	stopResume()
	<-done
	want := seqsOf(e.groupEntries(u[1], gid))
	for _, x := range u[1:] {
		if got := seqsOf(e.groupEntries(x, gid)); !slices.Equal(got, want) {
			t.Fatalf("%s got %v, want %v (exactly once, in order)", x, got, want)
		}
	}
}

func TestGroupReceiptsCountOnlyCurrentMembers(t *testing.T) {
	e := newGroupEnv(t, openStore(t), nil)
	u := e.users("q", 3)
	a, b, c := u[0], u[1], u[2]
	gid := e.create(a, b, c)
	seq := e.mustSend(gid, a, "m").GroupSeq
	e.settle(gid)
	if r := e.request(actors.GroupGrainID(gid), &courierpb.GroupReceipt{GroupId: gid, UserId: b, Kind: courierpb.EntryKind_ENTRY_KIND_READ, UpToGroupSeq: seq}, "").(*courierpb.GroupReceiptReply); r.Error != nil {
		t.Fatal(r.Error)
	}
	// c never reads; once it leaves, everyone still there has read it.
	if r := e.update(gid, c, &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}}); r.Error != nil {
		t.Fatal(r.Error)
	}
	waitUntil(t, 5*time.Second, func() bool {
		for _, x := range e.inbox(a) {
			if x.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_READ && slices.Equal(x.ReceiptFor, []string{"m"}) {
				return true
			}
		}
		return false
	})
	r := e.request(actors.GroupGrainID(gid), &courierpb.GetGroupReceipts{GroupId: gid, UserId: a, GroupSeq: seq}, "").(*courierpb.GetGroupReceiptsReply)
	if r.Error != nil || r.Receipts.Recipients != 1 || !r.Receipts.ReadAll || !slices.Equal(r.Receipts.ReadUserIds, []string{b}) {
		t.Fatalf("receipts after c left: %v", r)
	}
}

// failingGroups fails group commits while armed.
type failingGroups struct {
	persistence.GroupStore
	armed atomic.Bool
}

func (f *failingGroups) CommitGroup(ctx context.Context, c persistence.GroupCommit) error {
	if f.armed.Load() {
		return fmt.Errorf("injected outage: %w", persistence.ErrUnavailable)
	}
	return f.GroupStore.CommitGroup(ctx, c)
}

func TestGroupStoreOutageIsNeverAcked(t *testing.T) {
	base := openStore(t)
	fg := &failingGroups{GroupStore: base}
	deps := &actors.Deps{Store: base, Groups: fg, Logger: testLogger()}
	c := startCluster(t, deps, actors.UserKind(deps), actors.GroupKind(deps))
	e := &groupEnv{t: t, store: base, gs: base, c: c}
	u := e.users("o", 4)
	gid := e.create(u[0], u[1], u[2])
	e.mustSend(gid, u[0], "before")

	fg.armed.Store(true)
	r, err := e.send(gid, u[1], "during")
	if err != nil || r.Error.GetCode() != courierpb.ErrorCode_UNAVAILABLE || !r.Error.Retryable {
		t.Fatalf("send during the outage: %v %v, want a retryable UNAVAILABLE", r, err)
	}
	add := &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: []string{u[3]}}}}
	if up := e.update(gid, u[0], add); up.Error.GetCode() != courierpb.ErrorCode_UNAVAILABLE {
		t.Fatalf("add during the outage: %v", up)
	}
	// The failed add is not half-applied: u[3] is still an outsider.
	if r, _ := e.send(gid, u[3], "outsider"); r.GetError().GetCode() != courierpb.ErrorCode_NOT_FOUND {
		t.Fatalf("send by the member whose add failed: %v", r)
	}
	fg.armed.Store(false)
	if r := e.mustSend(gid, u[1], "during"); r.Duplicate {
		t.Fatal("a send that failed was a duplicate on retry")
	}
	if up := e.update(gid, u[0], add); up.Error != nil || up.Ok.GroupSeq == 0 {
		t.Fatalf("add after the outage: %v", up)
	}
	e.mustSend(gid, u[3], "welcome")
	e.settle(gid)
	var ids []string
	for _, x := range e.groupEntries(u[2], gid) {
		if x.ClientMsgId != "" {
			ids = append(ids, x.ClientMsgId)
		}
	}
	if want := []string{"before", "during", "welcome"}; !slices.Equal(ids, want) {
		t.Fatalf("member saw %v, want %v", ids, want)
	}
}

func TestGroupLastAdminLeavingAppointsAnHeir(t *testing.T) {
	e := newGroupEnv(t, openStore(t), nil)
	u := e.users("h", 3)
	gid := e.create(u[0], u[1], u[2])
	if r := e.update(gid, u[0], &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}}); r.Error != nil {
		t.Fatal(r.Error)
	}
	e.settle(gid)
	got := e.groupEntries(u[2], gid)
	last := got[len(got)-1].GroupEvent
	if last.GetType() != courierpb.GroupEventType_GROUP_EVENT_ADMINS_PROMOTED || !slices.Equal(last.UserIds, []string{u[1]}) || last.ActorUserId != "" {
		t.Fatalf("after the creator left: %v", last)
	}
	// The heir can administer.
	if r := e.update(gid, u[1], &courierpb.GroupUpdate{Change: &courierpb.GroupUpdate_RemoveMembers{RemoveMembers: &courierpb.GroupUserIds{UserIds: []string{u[2]}}}}); r.Error != nil {
		t.Fatalf("heir removing a member: %v", r.Error)
	}
}

func TestGroupPerDeviceCiphertextsAndSenderDevices(t *testing.T) {
	store := openStore(t)
	e := newGroupEnv(t, store, nil)
	u := e.users("p", 3)
	// u0 has a second device: it gets u0's own messages, device 1 does not.
	if err := store.PutDevice(context.Background(), persistence.Device{UserID: u[0], DeviceID: 2, SecretHash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	gid := e.create(u[0], u[1], u[2])
	r := e.request(actors.GroupGrainID(gid), &courierpb.SendGroupMessage{UserId: u[0], DeviceId: 1, Send: &courierpb.GroupSend{
		GroupId: gid, ClientMsgId: "pd", Ciphertext: []byte("shared"), SenderKeyEpoch: 1,
		PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: u[1], DeviceId: 1, Ciphertext: []byte("for p0001")}},
	}}, "").(*courierpb.SendGroupMessageReply)
	if r.Error != nil {
		t.Fatal(r.Error)
	}
	e.settle(gid)
	msg := func(user string, dev uint32) *courierpb.InboxEntry {
		es, err := store.Range(context.Background(), user, dev, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range es {
			if x.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE {
				return x
			}
		}
		return nil
	}
	if m := msg(u[1], 1); m == nil || string(m.Ciphertext) != "for p0001" || m.SenderKeyEpoch != 1 {
		t.Fatalf("p0001 got %v", m)
	}
	if m := msg(u[2], 1); m == nil || string(m.Ciphertext) != "shared" {
		t.Fatalf("p0002 got %v", m)
	}
	if m := msg(u[0], 2); m == nil || string(m.Ciphertext) != "shared" || m.FromDeviceId != 1 {
		t.Fatalf("the sender's other device got %v", m)
	}
	if m := msg(u[0], 1); m != nil {
		t.Fatalf("the sending device got its own message back: %v", m)
	}
}
