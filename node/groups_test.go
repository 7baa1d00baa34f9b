package node_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// member is one group member's device on a raw socket. Its reader records
// every group entry delivered and acknowledges as it goes.
type member struct {
	t   testing.TB
	id  string
	c   *websocket.Conn
	wmu sync.Mutex

	mu      sync.Mutex
	entries []*courierpb.InboxEntry // group entries, in delivery order
	lastSeq uint64
	bad     string
	replies map[uint64]chan *courierpb.ServerFrame
	nextReq uint64
	closed  chan struct{}
}

func (m *member) write(f *courierpb.ClientFrame) error {
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	_ = m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return m.c.WriteMessage(websocket.BinaryMessage, b)
}

func (m *member) readLoop() {
	defer close(m.closed)
	for {
		_, b, err := m.c.ReadMessage()
		if err != nil {
			return
		}
		f := &courierpb.ServerFrame{}
		if err := proto.Unmarshal(b, f); err != nil {
			m.mu.Lock()
			m.bad = err.Error()
			m.mu.Unlock()
			return
		}
		if d := f.GetDeliver(); d != nil {
			var upTo uint64
			m.mu.Lock()
			for _, e := range d.Entries {
				if e.InboxSeq <= m.lastSeq {
					m.bad = fmt.Sprintf("inbox_seq %d after %d", e.InboxSeq, m.lastSeq)
				}
				m.lastSeq, upTo = e.InboxSeq, e.InboxSeq
				if e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE || e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT {
					m.entries = append(m.entries, e)
				}
			}
			m.nextReq++
			req := m.nextReq | 1<<40 // acks: a range of req ids of their own
			m.mu.Unlock()
			_ = m.write(&courierpb.ClientFrame{ReqId: req, Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: upTo}}})
			continue
		}
		if f.ReqId != 0 {
			m.mu.Lock()
			ch := m.replies[f.ReqId]
			delete(m.replies, f.ReqId)
			m.mu.Unlock()
			if ch != nil {
				ch <- f
			}
		}
	}
}

// call sends a request and waits for its answer.
func (m *member) call(body func(*courierpb.ClientFrame)) *courierpb.ServerFrame {
	m.t.Helper()
	ch := m.start(body)
	select {
	case f := <-ch:
		return f
	case <-time.After(20 * time.Second):
		m.t.Fatalf("%s: no answer", m.id)
		return nil
	}
}

func (m *member) start(body func(*courierpb.ClientFrame)) chan *courierpb.ServerFrame {
	m.mu.Lock()
	m.nextReq++
	req := m.nextReq
	ch := make(chan *courierpb.ServerFrame, 1)
	m.replies[req] = ch
	m.mu.Unlock()
	f := &courierpb.ClientFrame{ReqId: req}
	body(f)
	if err := m.write(f); err != nil {
		m.t.Errorf("%s: write: %v", m.id, err)
	}
	return ch
}

func (m *member) groupEntries() []*courierpb.InboxEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.entries)
}

// createUsers stores n users with one device each and returns their ids.
func createUsers(t testing.TB, s persistence.Store, prefix string, n int) []string {
	t.Helper()
	return createUsersWith(t, s, prefix, n, func(string) []byte { return []byte("unused") })
}

// issueTokens signs tokens with n's keys for users a test created in its
// store directly (registering 1,024 users over HTTP is slow under -race).
func issueTokens(t testing.TB, n *node.Node) func(string) string {
	keys, err := gateway.LoadTokenKeyFile(n.TokenKeysFile())
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := gateway.NewTokens(keys, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return func(id string) string {
		tok, _, err := tokens.Issue(id, 1)
		if err != nil {
			t.Error(err)
		}
		return tok
	}
}

// attach opens a socket for each user and waits until each is attached.
func attach(t testing.TB, base string, ids []string, token func(string) string) []*member {
	t.Helper()
	out := make([]*member, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, _, err := websocket.DefaultDialer.Dial(wsURL(base, token(id), 0), nil)
			if err != nil {
				t.Errorf("dial %s: %v", id, err)
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := c.ReadMessage()
			f := &courierpb.ServerFrame{}
			if err != nil || proto.Unmarshal(b, f) != nil || f.GetAttached() == nil {
				t.Errorf("%s: no Attached frame (%v)", id, err)
				_ = c.Close()
				return
			}
			_ = c.SetReadDeadline(time.Time{})
			m := &member{t: t, id: id, c: c, replies: map[uint64]chan *courierpb.ServerFrame{}, closed: make(chan struct{})}
			go m.readLoop()
			out[i] = m
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(func() {
		for _, m := range out {
			_ = m.c.Close()
			<-m.closed
		}
	})
	return out
}

func createGroupFrame(createID, subject string, members []string) func(*courierpb.ClientFrame) {
	return func(f *courierpb.ClientFrame) {
		f.Body = &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: createID, Subject: subject, MemberUserIds: members}}
	}
}

func groupSendFrame(gid, cmid string, ct []byte) func(*courierpb.ClientFrame) {
	return func(f *courierpb.ClientFrame) {
		f.Body = &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{GroupId: gid, ClientMsgId: cmid, Ciphertext: ct}}
	}
}

// waitEntries waits until every member has at least want(m) group entries.
func waitEntries(t testing.TB, members []*member, d time.Duration, want func(*member) int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		behind := 0
		var sample *member
		for _, m := range members {
			if len(m.groupEntries()) < want(m) {
				behind++
				sample = m
			}
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d members still behind after %v, e.g. %s with %d of %d entries", behind, d, sample.id, len(sample.groupEntries()), want(sample))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGroupOf1024MembersOverSockets(t *testing.T) {
	start := time.Now()
	n := startNode(t, nil)
	ids := createUsers(t, n.Store(), "m", 1024)
	extra := createUsers(t, n.Store(), "late", 1)[0]
	members := attach(t, n.URL(), ids, issueTokens(t, n))
	t.Logf("1,024 users stored and attached in %v", time.Since(start).Round(time.Millisecond))

	owner := members[0]
	f := owner.call(createGroupFrame("big", "everyone", ids[1:]))
	info := f.GetGroupInfo()
	if info == nil || info.MemberCount != 1024 {
		t.Fatalf("create: %v", f)
	}
	gid := info.GroupId

	// One message reaches every member device exactly once.
	t0 := time.Now()
	f = owner.call(groupSendFrame(gid, "hello", []byte("hello everyone")))
	if f.GetSendAck().GetGroupSeq() == 0 {
		t.Fatalf("send: %v", f)
	}
	ackedIn := time.Since(t0)
	waitEntries(t, members, 60*time.Second, func(m *member) int {
		if m == owner {
			return 1 // the creation; its own message goes to its other devices only
		}
		return 2
	})
	t.Logf("one message: acked in %v, in all 1,023 other inboxes and sockets in %v", ackedIn.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))

	// 100 messages from 10 concurrent senders: every member sees them in
	// one order, the group's.
	t0 = time.Now()
	senders := members[1:11]
	var wg sync.WaitGroup
	for s, m := range senders {
		wg.Go(func() {
			pending := make([]chan *courierpb.ServerFrame, 10)
			for i := range pending {
				pending[i] = m.start(groupSendFrame(gid, fmt.Sprintf("s%d-%d", s, i), fmt.Appendf(nil, "from %d: %d", s, i)))
			}
			for i, ch := range pending {
				select {
				case f := <-ch:
					if f.GetSendAck().GetGroupSeq() == 0 {
						t.Errorf("sender %d message %d: %v", s, i, f)
					}
				case <-time.After(30 * time.Second):
					t.Errorf("sender %d message %d: no ack", s, i)
				}
			}
		})
	}
	wg.Wait()
	waitEntries(t, members, 90*time.Second, func(m *member) int {
		switch {
		case m == owner:
			return 1 + 100
		case slices.Contains(senders, m):
			return 2 + 90
		}
		return 2 + 100
	})
	t.Logf("100 messages from 10 senders in every inbox and socket in %v", time.Since(t0).Round(time.Millisecond))

	var order []uint64 // the group's order, from a member that sent nothing
	for _, e := range members[500].groupEntries() {
		order = append(order, e.GroupSeq)
	}
	for _, m := range members {
		got := m.groupEntries()
		m.mu.Lock()
		bad := m.bad
		m.mu.Unlock()
		if bad != "" {
			t.Fatalf("%s: %s", m.id, bad)
		}
		seen := map[uint64]bool{}
		var want []uint64
		for _, s := range order {
			want = append(want, s)
		}
		var seqs []uint64
		for _, e := range got {
			if seen[e.GroupSeq] {
				t.Fatalf("%s got group_seq %d twice", m.id, e.GroupSeq)
			}
			seen[e.GroupSeq] = true
			seqs = append(seqs, e.GroupSeq)
		}
		// The same order: its entries are the group's order without its
		// own messages.
		var mine []uint64
		for _, s := range want {
			if seen[s] {
				mine = append(mine, s)
			}
		}
		if !slices.Equal(seqs, mine) || len(seqs) < len(want)-10 {
			t.Fatalf("%s received %v, the group's order is %v", m.id, seqs, want)
		}
	}

	// The 1,025th member is refused.
	f = owner.call(func(f *courierpb.ClientFrame) {
		f.Body = &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: gid,
			Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: []string{extra}}}}}
	})
	if f.GetError().GetCode() != courierpb.ErrorCode_GROUP_FULL {
		t.Fatalf("adding the 1,025th member: %v, want GROUP_FULL", f)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

func TestGroupFramesOverJSON(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "json-alice")
	b := register(t, n.URL(), "json-bob")
	dialJSON := func(token string) *websocket.Conn {
		d := websocket.Dialer{Subprotocols: []string{gateway.SubprotocolJSON}}
		c, _, err := d.Dial(wsURL(n.URL(), token, 0), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	read := func(c *websocket.Conn, want string) string {
		t.Helper()
		for {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if strings.Contains(string(b), want) {
				return string(b)
			}
		}
	}
	ca, cb := dialJSON(a.Token), dialJSON(b.Token)
	read(ca, `"attached"`)
	read(cb, `"attached"`)
	create := fmt.Sprintf(`{"req_id":"7","group_create":{"create_id":"j1","subject":"json","member_user_ids":[%q]}}`, b.UserID)
	if err := ca.WriteMessage(websocket.TextMessage, []byte(create)); err != nil {
		t.Fatal(err)
	}
	reply := read(ca, `"req_id":"7"`)
	var f courierpb.ServerFrame
	if err := protojson.Unmarshal([]byte(reply), &f); err != nil || f.GetGroupInfo().GetGroupId() == "" {
		t.Fatalf("create over json: %s (%v)", reply, err)
	}
	gid := f.GetGroupInfo().GetGroupId()
	send := fmt.Sprintf(`{"req_id":"8","group_send":{"group_id":%q,"client_msg_id":"j-m1","ciphertext":"aGk="}}`, gid)
	if err := ca.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
		t.Fatal(err)
	}
	if ack := read(ca, `"req_id":"8"`); !strings.Contains(ack, `"send_ack"`) || !strings.Contains(ack, `"group_seq"`) {
		t.Fatalf("group send over json: %s", ack)
	}
	got := read(cb, `"j-m1"`)
	for _, field := range []string{`"ENTRY_KIND_GROUP_MESSAGE"`, `"group_id":"` + gid, `"group_seq"`} {
		if !strings.Contains(got, field) {
			t.Fatalf("bob's delivery %s lacks %s", got, field)
		}
	}
}
