package client_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
)

const testDebounce = 300 * time.Millisecond

func socialNode(t *testing.T, mutate func(*node.Config)) *node.Node {
	cfg := node.Config{PresenceDebounce: testDebounce}
	if mutate != nil {
		mutate(&cfg)
	}
	return startNode(t, cfg)
}

// nextPresence returns the next presence event about userID.
func nextPresence(t *testing.T, c *client.Client, userID string, d time.Duration) client.PresenceEvent {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-c.Presence():
			if ev.UserID == userID {
				return ev
			}
		case <-deadline:
			t.Fatalf("%s heard nothing about %s's presence within %v", c.UserID(), userID, d)
		}
	}
}

// waitPresence reads events about userID until one matches.
func waitPresence(t *testing.T, c *client.Client, userID string, d time.Duration, match func(client.PresenceEvent) bool) client.PresenceEvent {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev := nextPresence(t, c, userID, time.Until(deadline))
		if match(ev) {
			return ev
		}
	}
}

func expectNoPresence(t *testing.T, c *client.Client, userID string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-c.Presence():
			if ev.UserID == userID {
				t.Fatalf("%s got presence of %s: %+v", c.UserID(), userID, ev)
			}
		case <-deadline:
			return
		}
	}
}

func TestPresenceGoesOnlyToSubscribersThatMaySeeIt(t *testing.T) {
	n := socialNode(t, nil)
	ctx := timeout(t, 30*time.Second)
	aCreds := register(t, n, "alice")
	b := dial(t, register(t, n, "bob"))
	c := dial(t, register(t, n, "carol"))

	// B subscribed to A sees A come online, then go offline with last seen.
	if err := b.SubscribePresence(ctx, aCreds.UserID); err != nil {
		t.Fatal(err)
	}
	if ev := nextPresence(t, b, aCreds.UserID, 5*time.Second); ev.Online || !ev.LastSeen.IsZero() {
		t.Fatalf("before A ever connected: %+v, want offline and never seen", ev)
	}
	a := dial(t, aCreds)
	waitPresence(t, b, a.UserID(), 5*time.Second, func(ev client.PresenceEvent) bool { return ev.Online })
	left := time.Now()
	a.Close()
	ev := waitPresence(t, b, a.UserID(), 5*time.Second, func(ev client.PresenceEvent) bool { return !ev.Online })
	if ev.LastSeen.Before(left.Add(-time.Second)) || ev.LastSeen.After(time.Now()) {
		t.Fatalf("last seen %v, want about %v", ev.LastSeen, left)
	}

	// A shows presence to contacts only; B is one, C is not.
	a = dial(t, aCreds)
	if _, err := a.AddContacts(ctx, b.UserID()); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPresenceVisibility(ctx, client.VisibleToContacts); err != nil {
		t.Fatal(err)
	}
	if err := c.SubscribePresence(ctx, a.UserID()); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, b, a.UserID(), 5*time.Second, func(ev client.PresenceEvent) bool { return ev.Online })
	expectNoPresence(t, c, a.UserID(), 3*testDebounce)

	// Nobody is reciprocal: B hides its own presence and so stops seeing A's.
	if err := b.SetPresenceVisibility(ctx, client.VisibleToNobody); err != nil {
		t.Fatal(err)
	}
	waitPresence(t, b, a.UserID(), 5*time.Second, func(ev client.PresenceEvent) bool { return ev.Gone })
	a.Close()
	expectNoPresence(t, b, a.UserID(), 3*testDebounce)
	// ...and A, allowed to see everyone's, does not see B's.
	a = dial(t, aCreds)
	if err := a.SubscribePresence(ctx, b.UserID()); err != nil {
		t.Fatal(err)
	}
	expectNoPresence(t, a, b.UserID(), 3*testDebounce)
}

func TestFlappingConnectionGivesABoundedNumberOfPresenceUpdates(t *testing.T) {
	const debounce = 500 * time.Millisecond
	n := socialNode(t, func(c *node.Config) { c.PresenceDebounce = debounce })
	ctx := timeout(t, 30*time.Second)
	aCreds := register(t, n, "flapper")
	b := dial(t, register(t, n, "watcher"))
	if err := b.SubscribePresence(ctx, aCreds.UserID); err != nil {
		t.Fatal(err)
	}
	nextPresence(t, b, aCreds.UserID, 5*time.Second) // the initial state

	// 50 connects spread over about two seconds: several debounce periods.
	start := time.Now()
	for i := range 50 {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 40 * time.Millisecond)))
		a, err := client.Dial(ctx, aCreds, client.WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
	}
	flapped := time.Since(start)
	// Let the last debounce period run out, then count what B got.
	time.Sleep(2 * debounce)
	var got []client.PresenceEvent
	for drained := false; !drained; {
		select {
		case ev := <-b.Presence():
			if ev.UserID == aCreds.UserID {
				got = append(got, ev)
			}
		case <-time.After(2 * debounce):
			drained = true
		}
	}
	// One update per debounce period at most, plus the one that opens a
	// period and the trailing one that closes it.
	limit := int(flapped/debounce) + 3
	if len(got) == 0 || len(got) > limit {
		t.Fatalf("50 connects in %v gave %d presence updates, want 1..%d", flapped.Round(time.Millisecond), len(got), limit)
	}
	if last := got[len(got)-1]; last.Online || last.LastSeen.IsZero() {
		t.Fatalf("final state %+v, want offline with a last seen", last)
	}
	t.Logf("50 connects in %v → %d updates", flapped.Round(time.Millisecond), len(got))
}

func TestTypingReachesThePeerAndIsNeverStored(t *testing.T) {
	n := socialNode(t, nil)
	ctx := timeout(t, 30*time.Second)
	a := dial(t, register(t, n, "typist"))
	b := dial(t, register(t, n, "reader"))
	c := dial(t, register(t, n, "member"))

	nextTyping := func(cl *client.Client) client.TypingEvent {
		t.Helper()
		select {
		case ev := <-cl.Typing():
			return ev
		case <-time.After(5 * time.Second):
			t.Fatalf("%s saw no typing", cl.UserID())
		}
		panic("unreachable")
	}
	if err := a.SendTyping(b.UserID(), true); err != nil {
		t.Fatal(err)
	}
	if ev := nextTyping(b); ev.FromUserID != a.UserID() || !ev.Typing || ev.GroupID != "" {
		t.Fatalf("B got %+v", ev)
	}
	if err := a.SendTyping(b.UserID(), false); err != nil {
		t.Fatal(err)
	}
	if ev := nextTyping(b); ev.Typing {
		t.Fatalf("B got %+v, want paused", ev)
	}

	info, err := a.CreateGroup(ctx, "typing", []string{b.UserID(), c.UserID()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SendGroupTyping(info.ID, true); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []*client.Client{b, c} {
		if ev := nextTyping(cl); ev.GroupID != info.ID || ev.FromUserID != a.UserID() {
			t.Fatalf("%s got %+v", cl.UserID(), ev)
		}
	}
	select {
	case ev := <-a.Typing():
		t.Fatalf("the typist got its own indicator back: %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	// Nothing of it is in B's inbox: only the group event of the creation.
	entries, err := n.Store().Range(ctx, b.UserID(), 1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Kind != courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT {
			t.Fatalf("B's inbox holds %v: typing must never be stored", e.Kind)
		}
	}
}

func TestBlockedSenderSeesASingleTickAndNothingArrives(t *testing.T) {
	n := socialNode(t, nil)
	ctx := timeout(t, 30*time.Second)
	a := dial(t, register(t, n, "pest"))
	b := dial(t, register(t, n, "blocker"))
	if err := b.Block(ctx, a.UserID()); err != nil {
		t.Fatal(err)
	}
	list, err := b.ListContacts(ctx)
	if err != nil || len(list.Blocked) != 1 || list.Blocked[0] != a.UserID() {
		t.Fatalf("block list %+v (%v)", list, err)
	}

	// To A it looks like B is offline: the send is acknowledged like any
	// other, and no error, no receipt, no typing, no presence ever comes.
	res, err := a.Send(ctx, b.UserID(), []byte("let me in"))
	if err != nil {
		t.Fatalf("send to a blocker failed (that reveals the block): %v", err)
	}
	if res.StoredAt.IsZero() {
		t.Fatal("the single tick has no time")
	}
	if err := a.SendTyping(b.UserID(), true); err != nil {
		t.Fatal(err)
	}
	if err := a.SubscribePresence(ctx, b.UserID()); err != nil {
		t.Fatal(err)
	}
	expectNoMessage(t, b, 500*time.Millisecond)
	select {
	case ev := <-b.Typing():
		t.Fatalf("blocker saw typing %+v", ev)
	default:
	}
	expectNoPresence(t, a, b.UserID(), 3*testDebounce)
	select {
	case e := <-a.Entries():
		t.Fatalf("blocked sender got %v", e.Kind)
	default:
	}

	if err := b.Unblock(ctx, a.UserID()); err != nil {
		t.Fatal(err)
	}
	res, err = a.Send(ctx, b.UserID(), []byte("sorry"))
	if err != nil {
		t.Fatal(err)
	}
	e := nextOfKind(t, b, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 5*time.Second)
	if string(e.Ciphertext) != "sorry" || e.ClientMsgID != res.ClientMsgID {
		t.Fatalf("after unblock B got %q", e.Ciphertext)
	}
	d := nextOfKind(t, a, courierpb.EntryKind_ENTRY_KIND_DELIVERED, 5*time.Second)
	if len(d.ReceiptFor) != 1 || d.ReceiptFor[0] != res.ClientMsgID {
		t.Fatalf("delivered receipt for %v", d.ReceiptFor)
	}
}

// pushReceiver is the webhook endpoint of the push tests.
type pushReceiver struct {
	t      *testing.T
	secret []byte
	fail   atomic.Int32 // answer 503 to this many more requests
	calls  atomic.Int32
	mu     sync.Mutex
	bodies [][]byte
}

func (p *pushReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	p.calls.Add(1)
	if err := push.Verify(p.secret, r.Header.Get(push.HeaderTimestamp), r.Header.Get(push.HeaderSignature), body); err != nil {
		p.t.Errorf("push with a bad signature: %v", err)
	}
	if p.fail.Load() > 0 {
		p.fail.Add(-1)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	p.mu.Lock()
	p.bodies = append(p.bodies, body)
	p.mu.Unlock()
}

func (p *pushReceiver) received() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.bodies...)
}

func pushNode(t *testing.T) (*node.Node, *pushReceiver) {
	rcv := &pushReceiver{t: t, secret: []byte("push-secret")}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	n := socialNode(t, func(c *node.Config) {
		c.PushWebhookURL, c.PushWebhookSecret = srv.URL, string(rcv.secret)
		c.PushBackoff, c.PushAttempts = 50*time.Millisecond, 6
	})
	return n, rcv
}

func eventuallyTrue(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOfflineDeviceGetsOneContentFreePushPerOfflinePeriod(t *testing.T) {
	n, rcv := pushNode(t)
	ctx := timeout(t, 60*time.Second)
	a := dial(t, register(t, n, "sender"))
	bCreds := register(t, n, "sleeper")
	b := dial(t, bCreds)
	if err := b.SetPushToken(ctx, "device-token-1"); err != nil {
		t.Fatal(err)
	}
	b.Close()

	// The webhook fails three times first: the push still arrives, once.
	rcv.fail.Store(3)
	secret := "the-plaintext-must-not-leak"
	for range 5 {
		if _, err := a.Send(ctx, bCreds.UserID, []byte(secret)); err != nil {
			t.Fatal(err)
		}
	}
	eventuallyTrue(t, "the push", 10*time.Second, func() bool { return len(rcv.received()) == 1 })
	time.Sleep(300 * time.Millisecond)
	got := rcv.received()
	if len(got) != 1 || rcv.calls.Load() != 4 {
		t.Fatalf("%d pushes after %d requests, want 1 after 3 failures + 1 success", len(got), rcv.calls.Load())
	}
	var p push.WebhookPayload
	if err := json.Unmarshal(got[0], &p); err != nil {
		t.Fatal(err)
	}
	if p.Token != "device-token-1" || p.UserID != bCreds.UserID || p.DeviceID != 1 || p.Type != "inbox" {
		t.Fatalf("push payload %+v", p)
	}
	for _, leak := range []string{secret, a.UserID(), a.Credentials().Handle} {
		if bytes.Contains(got[0], []byte(leak)) {
			t.Fatalf("push body %s carries %q: pushes must not carry content or sender", got[0], leak)
		}
	}

	// Connecting re-arms: the next offline period gets its own push.
	b = dial(t, bCreds)
	drain(b)
	b.Close()
	if _, err := a.Send(ctx, bCreds.UserID, []byte("again")); err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "the second push", 10*time.Second, func() bool { return len(rcv.received()) == 2 })
}

func TestConnectingCancelsAPendingPush(t *testing.T) {
	n, rcv := pushNode(t)
	ctx := timeout(t, 60*time.Second)
	a := dial(t, register(t, n, "sender"))
	bCreds := register(t, n, "sleeper")
	b := dial(t, bCreds)
	if err := b.SetPushToken(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	rcv.fail.Store(1 << 30) // the provider is down
	if _, err := a.Send(ctx, bCreds.UserID, []byte("x")); err != nil {
		t.Fatal(err)
	}
	eventuallyTrue(t, "a first push attempt", 10*time.Second, func() bool { return rcv.calls.Load() >= 1 })
	b = dial(t, bCreds)
	drain(b)
	time.Sleep(100 * time.Millisecond) // an attempt in flight may finish
	before := rcv.calls.Load()
	time.Sleep(time.Second) // many backoff periods
	if after := rcv.calls.Load(); after != before {
		t.Fatalf("%d push attempts after the device connected", after-before)
	}
	if len(rcv.received()) != 0 {
		t.Fatal("a push was delivered")
	}
}

// A subscriber that arrives while a debounced change is pending must end
// up with the final state, even when the user flaps back to what earlier
// subscribers were told (so they need no update).
func TestLateSubscriberGetsTheFinalStateAfterAFlap(t *testing.T) {
	const debounce = time.Second
	n := socialNode(t, func(c *node.Config) { c.PresenceDebounce = debounce })
	ctx := timeout(t, 30*time.Second)
	fCreds := register(t, n, "flapper")
	early := dial(t, register(t, n, "early"))
	late := dial(t, register(t, n, "late"))
	if err := early.SubscribePresence(ctx, fCreds.UserID); err != nil {
		t.Fatal(err)
	}
	nextPresence(t, early, fCreds.UserID, 5*time.Second)
	time.Sleep(debounce) // the next change is sent at once
	f := dial(t, fCreds)
	waitPresence(t, early, fCreds.UserID, 5*time.Second, func(ev client.PresenceEvent) bool { return ev.Online })
	// Within one debounce period: offline (held back), a late subscriber
	// (told "offline"), online again.
	f.Close()
	eventuallyTrue(t, "the flapper to be offline", 5*time.Second, func() bool {
		if err := late.SubscribePresence(ctx, fCreds.UserID); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-late.Presence():
			return ev.UserID == fCreds.UserID && !ev.Online
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	f = dial(t, fCreds)
	ev := waitPresence(t, late, fCreds.UserID, 3*debounce, func(ev client.PresenceEvent) bool { return ev.Online })
	if !ev.Online {
		t.Fatal("unreachable")
	}
}
