package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
)

const (
	sigOffer     = courierpb.CallSignalType_CALL_SIGNAL_OFFER
	sigAnswer    = courierpb.CallSignalType_CALL_SIGNAL_ANSWER
	sigCandidate = courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE
	sigHangup    = courierpb.CallSignalType_CALL_SIGNAL_HANGUP
)

// nextCall returns c's next call event, which must be of type want.
func nextCall(t *testing.T, c *client.Client, want courierpb.CallSignalType, d time.Duration) client.CallEvent {
	t.Helper()
	select {
	case ev := <-c.CallEvents():
		if ev.Type != want {
			t.Fatalf("%s/%d got call event %v (%v), want %v", c.UserID(), c.DeviceID(), ev.Type, ev.Ended, want)
		}
		return ev
	case <-time.After(d):
		t.Fatalf("%s/%d got no %v within %v", c.UserID(), c.DeviceID(), want, d)
	}
	panic("unreachable")
}

func expectNoCallEvent(t *testing.T, c *client.Client, d time.Duration) {
	t.Helper()
	select {
	case ev := <-c.CallEvents():
		t.Fatalf("%s/%d got call event %+v", c.UserID(), c.DeviceID(), ev)
	case <-time.After(d):
	}
}

// missedCalls collects c's missed-call entries for d.
func missedCalls(c *client.Client, d time.Duration) []client.Entry {
	var got []client.Entry
	deadline := time.After(d)
	for {
		select {
		case e := <-c.Entries():
			if e.Kind == courierpb.EntryKind_ENTRY_KIND_MISSED_CALL {
				got = append(got, e)
			}
		case <-deadline:
			return got
		}
	}
}

func TestCallRingsEveryDeviceAndTheFirstAnswerWins(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := timeout(t, 60*time.Second)
	alice := dial(t, register(t, n, "alice"))
	b1 := dial(t, register(t, n, "bob"))
	b2 := dial(t, linkDevice(t, n, b1))
	drain(alice)
	drain(b1)
	drain(b2)

	id := client.NewCallID()
	if err := alice.Ring(ctx, b1.UserID(), id, client.Video, []byte("sealed-offer")); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*client.Client{b1, b2} {
		ev := nextCall(t, b, sigOffer, 10*time.Second)
		if ev.CallID != id || ev.FromUserID != alice.UserID() || ev.Media != client.Video || string(ev.Payload) != "sealed-offer" {
			t.Fatalf("%d rang with %+v", b.DeviceID(), ev)
		}
	}
	if err := b2.Ringing(ctx, alice.UserID(), id); err != nil {
		t.Fatal(err)
	}
	nextCall(t, alice, courierpb.CallSignalType_CALL_SIGNAL_RINGING, 10*time.Second)
	if err := b2.AnswerCall(ctx, alice.UserID(), id, []byte("sealed-answer")); err != nil {
		t.Fatal(err)
	}
	if ev := nextCall(t, alice, sigAnswer, 10*time.Second); ev.FromDeviceID != b2.DeviceID() || string(ev.Payload) != "sealed-answer" {
		t.Fatalf("caller got %+v", ev)
	}
	if ev := nextCall(t, b1, sigHangup, 10*time.Second); ev.Ended != courierpb.CallEndReason_CALL_END_ANSWERED_ELSEWHERE {
		t.Fatalf("the other device got %+v, want ANSWERED_ELSEWHERE", ev)
	}
	if err := b1.AnswerCall(ctx, alice.UserID(), id, []byte("late")); !client.IsCode(err, courierpb.ErrorCode_FORBIDDEN) {
		t.Fatalf("a second answer: %v, want FORBIDDEN", err)
	}
	// Candidates pass between the two devices in the call, both ways.
	if err := alice.SendCandidate(ctx, b1.UserID(), id, []byte("cand-a")); err != nil {
		t.Fatal(err)
	}
	if ev := nextCall(t, b2, sigCandidate, 10*time.Second); string(ev.Payload) != "cand-a" {
		t.Fatalf("candidate %q", ev.Payload)
	}
	if err := b2.SendCandidate(ctx, alice.UserID(), id, []byte("cand-b")); err != nil {
		t.Fatal(err)
	}
	nextCall(t, alice, sigCandidate, 10*time.Second)
	if err := alice.HangUp(ctx, b1.UserID(), id); err != nil {
		t.Fatal(err)
	}
	if ev := nextCall(t, b2, sigHangup, 10*time.Second); ev.Ended != courierpb.CallEndReason_CALL_END_HANGUP {
		t.Fatalf("the answering device got %+v", ev)
	}
	expectNoCallEvent(t, b1, 200*time.Millisecond)
}

func TestUnansweredCallEndsAsMissedExactlyOnce(t *testing.T) {
	n := startNode(t, node.Config{CallRingTimeout: 500 * time.Millisecond})
	ctx := timeout(t, 60*time.Second)
	alice := dial(t, register(t, n, "alice"))
	bobCreds := register(t, n, "bob")
	b1 := dial(t, bobCreds)
	b2 := dial(t, linkDevice(t, n, b1))
	drain(alice)

	id := client.NewCallID()
	if err := alice.Ring(ctx, b1.UserID(), id, client.Audio, []byte("offer")); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*client.Client{b1, b2} {
		nextCall(t, b, sigOffer, 10*time.Second)
	}
	if ev := nextCall(t, alice, sigHangup, 10*time.Second); ev.Ended != courierpb.CallEndReason_CALL_END_NO_ANSWER {
		t.Fatalf("caller got %+v, want NO_ANSWER", ev)
	}
	for _, b := range []*client.Client{b1, b2} {
		if ev := nextCall(t, b, sigHangup, 10*time.Second); ev.Ended != courierpb.CallEndReason_CALL_END_NO_ANSWER {
			t.Fatalf("device %d got %+v, want NO_ANSWER", b.DeviceID(), ev)
		}
	}
	// A resent offer of the ended call rings nobody and stores nothing.
	if err := alice.Ring(ctx, b1.UserID(), id, client.Audio, []byte("offer")); !client.IsCode(err, courierpb.ErrorCode_INVALID_ARGUMENT) {
		t.Fatalf("ringing an ended call: %v, want INVALID_ARGUMENT", err)
	}
	for _, b := range []*client.Client{b1, b2} {
		got := missedCalls(b, time.Second)
		if len(got) != 1 {
			t.Fatalf("device %d got %d missed calls, want 1", b.DeviceID(), len(got))
		}
		if e := got[0]; e.FromUserID != alice.UserID() || e.Call.GetCallId() != id || e.Call.GetMedia() != client.Audio ||
			e.Call.GetEndReason() != courierpb.CallEndReason_CALL_END_NO_ANSWER || e.Call.GetStartedAtMs() == 0 {
			t.Fatalf("missed call %+v (%v)", e, e.Call)
		}
	}
	// Acknowledged: a reconnect replays nothing.
	time.Sleep(200 * time.Millisecond)
	b1.Close()
	b1 = dial(t, bobCreds, client.WithResumeAfter(b1.LastSeq()))
	if got := missedCalls(b1, 500*time.Millisecond); len(got) != 0 {
		t.Fatalf("a reconnect replayed %d missed calls", len(got))
	}
}

// callPushNode is a node with a push webhook and a short ring timeout.
func callPushNode(t *testing.T) (*node.Node, *pushReceiver) {
	rcv := &pushReceiver{t: t, secret: []byte("push-secret")}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	n := startNode(t, node.Config{
		PushWebhookURL: srv.URL, PushWebhookSecret: string(rcv.secret),
		PushBackoff: 50 * time.Millisecond, PushAttempts: 6,
		CallRingTimeout: time.Second, PresenceDebounce: 50 * time.Millisecond,
	})
	return n, rcv
}

func TestOfflineCalleeGetsOneCallPushAndAMissedCallEntry(t *testing.T) {
	n, rcv := callPushNode(t)
	ctx := timeout(t, 60*time.Second)
	alice := dial(t, register(t, n, "alice"))
	drain(alice)
	bobCreds := register(t, n, "bob")
	bob := dial(t, bobCreds)
	if err := bob.SetPushToken(ctx, "bob-phone"); err != nil {
		t.Fatal(err)
	}
	// Ring only once bob's grain knows the device is offline: a call to a
	// session still closing rings that session, and pushes nothing.
	if err := alice.SubscribePresence(ctx, bobCreds.UserID); err != nil {
		t.Fatal(err)
	}
	bob.Close()
	waitPresence(t, alice, bobCreds.UserID, 10*time.Second, func(ev client.PresenceEvent) bool { return !ev.Online })

	id := client.NewCallID()
	secret := []byte("the-sdp-must-not-leak")
	if err := alice.Ring(ctx, bobCreds.UserID, id, client.Video, secret); err != nil {
		t.Fatal(err)
	}
	if ev := nextCall(t, alice, sigHangup, 10*time.Second); ev.Ended != courierpb.CallEndReason_CALL_END_NO_ANSWER {
		t.Fatalf("caller got %+v", ev)
	}
	eventuallyTrue(t, "the call push", 10*time.Second, func() bool { return len(rcv.received()) >= 1 })
	time.Sleep(500 * time.Millisecond) // the missed-call entry must not push again
	got := rcv.received()
	if len(got) != 1 {
		t.Fatalf("%d pushes, want exactly one: %s", len(got), got)
	}
	var p push.WebhookPayload
	if err := json.Unmarshal(got[0], &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != "call" || p.Priority != "high" || p.CallID != id || p.Token != "bob-phone" || p.UserID != bobCreds.UserID {
		t.Fatalf("push %+v, want a high-priority call push for bob's phone", p)
	}
	for _, leak := range [][]byte{secret, []byte(alice.UserID()), []byte(alice.Credentials().Handle)} {
		if bytes.Contains(got[0], leak) {
			t.Fatalf("push %s carries %q: a call push names no caller and carries no content", got[0], leak)
		}
	}

	bob = dial(t, bobCreds)
	missed := missedCalls(bob, 2*time.Second)
	if len(missed) != 1 || missed[0].FromUserID != alice.UserID() || missed[0].Call.GetCallId() != id {
		t.Fatalf("bob found %+v, want one missed call from alice", missed)
	}
	expectNoCallEvent(t, bob, 100*time.Millisecond)
	bob.Close()
	bob = dial(t, bobCreds, client.WithResumeAfter(bob.LastSeq()))
	if again := missedCalls(bob, 500*time.Millisecond); len(again) != 0 {
		t.Fatalf("the missed call came again after a reconnect: %+v", again)
	}
	if n := len(rcv.received()); n != 1 {
		t.Fatalf("%d pushes in all, want 1", n)
	}
}

func TestBlockedCallerNeverRings(t *testing.T) {
	n := startNode(t, node.Config{CallRingTimeout: 500 * time.Millisecond})
	ctx := timeout(t, 60*time.Second)
	alice := dial(t, register(t, n, "alice"))
	bob := dial(t, register(t, n, "bob"))
	drain(alice)
	if err := bob.Block(ctx, alice.UserID()); err != nil {
		t.Fatal(err)
	}
	id := client.NewCallID()
	// Every signal is taken as from anyone: nothing tells alice.
	if err := alice.Ring(ctx, bob.UserID(), id, client.Audio, []byte("offer")); err != nil {
		t.Fatalf("ring: %v; a blocked caller must not be told", err)
	}
	if err := alice.SendCandidate(ctx, bob.UserID(), id, []byte("cand")); err != nil {
		t.Fatalf("candidate: %v; a blocked caller must not be told", err)
	}
	if ev := nextCall(t, alice, sigHangup, 10*time.Second); ev.Ended != courierpb.CallEndReason_CALL_END_NO_ANSWER {
		t.Fatalf("caller got %+v, want NO_ANSWER as for a callee who did not pick up", ev)
	}
	expectNoCallEvent(t, bob, 300*time.Millisecond)
	if got := missedCalls(bob, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("a blocked caller left %d missed calls", len(got))
	}
}

func TestForgedCallIDCannotJoinACall(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := timeout(t, 60*time.Second)
	alice := dial(t, register(t, n, "alice"))
	b1 := dial(t, register(t, n, "bob"))
	b2 := dial(t, linkDevice(t, n, b1))
	mallory := dial(t, register(t, n, "mallory"))
	for _, c := range []*client.Client{alice, b1, b2, mallory} {
		drain(c)
	}
	id := client.NewCallID()
	if err := alice.Ring(ctx, b1.UserID(), id, client.Audio, []byte("offer")); err != nil {
		t.Fatal(err)
	}
	nextCall(t, b1, sigOffer, 10*time.Second)
	nextCall(t, b2, sigOffer, 10*time.Second)

	for _, tc := range []struct {
		name string
		err  error
		want courierpb.ErrorCode
	}{
		{"another user answers as the callee", mallory.AnswerCall(ctx, alice.UserID(), id, []byte("x")), courierpb.ErrorCode_NOT_FOUND},
		{"another user hangs up the callee", mallory.HangUp(ctx, b1.UserID(), id), courierpb.ErrorCode_NOT_FOUND},
		{"another user sends the callee candidates", mallory.SendCandidate(ctx, b1.UserID(), id, []byte("x")), courierpb.ErrorCode_NOT_FOUND},
		{"another user places a call with the same id", mallory.Ring(ctx, b1.UserID(), id, client.Audio, []byte("x")), courierpb.ErrorCode_INVALID_ARGUMENT},
		{"a ringing device sends candidates before answering", b1.SendCandidate(ctx, alice.UserID(), id, []byte("x")), courierpb.ErrorCode_FORBIDDEN},
		{"a made-up call id", b1.AnswerCall(ctx, alice.UserID(), client.NewCallID(), []byte("x")), courierpb.ErrorCode_NOT_FOUND},
	} {
		if !client.IsCode(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if err := b2.AnswerCall(ctx, alice.UserID(), id, []byte("answer")); err != nil {
		t.Fatal(err)
	}
	nextCall(t, alice, sigAnswer, 10*time.Second)
	nextCall(t, b1, sigHangup, 10*time.Second)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"the device that lost the race hangs up", b1.HangUp(ctx, alice.UserID(), id)},
		{"the device that lost the race sends candidates", b1.SendCandidate(ctx, alice.UserID(), id, []byte("x"))},
	} {
		if !client.IsCode(tc.err, courierpb.ErrorCode_FORBIDDEN) {
			t.Errorf("%s: %v, want FORBIDDEN", tc.name, tc.err)
		}
	}
	// None of it reached the two devices in the call.
	expectNoCallEvent(t, alice, 200*time.Millisecond)
	expectNoCallEvent(t, b2, 100*time.Millisecond)
}

func TestOversizedSDPIsRefused(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := timeout(t, 60*time.Second)
	bob := dial(t, register(t, n, "bob"))
	drain(bob)

	// The SDK refuses a frame over the server's limit before sending it.
	alice := dial(t, register(t, n, "alice"))
	drain(alice)
	if err := alice.Ring(ctx, bob.UserID(), client.NewCallID(), client.Video, make([]byte, 1<<20)); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("1 MiB offer from the SDK: %v, want ErrTooLarge", err)
	}

	// The server refuses it from a client that does not check, and a
	// payload within the frame limit but over 64 KiB; the session stays.
	raw := dial(t, register(t, n, "raw"), client.WithoutFrameLimitForTest())
	drain(raw)
	for _, tc := range []struct {
		size int
		says string
	}{{1000 * 1000, "at most 256 KiB per frame"}, {100 << 10, "call payload is 102400 bytes, at most 65536"}} {
		start := time.Now()
		err := raw.Ring(ctx, bob.UserID(), client.NewCallID(), client.Video, bytes.Repeat([]byte("v"), tc.size))
		want := courierpb.ErrorCode_TOO_LARGE
		if tc.size < 256<<10 {
			want = courierpb.ErrorCode_INVALID_ARGUMENT // within the frame limit
		}
		if !client.IsCode(err, want) || !strings.Contains(err.Error(), tc.says) {
			t.Fatalf("offer of %d bytes: %v, want %v saying %q", tc.size, err, want, tc.says)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("refusal of %d bytes took %v", tc.size, took)
		}
	}
	expectNoCallEvent(t, bob, 200*time.Millisecond)
	if !raw.Connected() || raw.Reconnects() != 0 {
		t.Fatalf("connected %v, reconnects %d: the refusals must not cost the session", raw.Connected(), raw.Reconnects())
	}
	if err := raw.Ring(ctx, bob.UserID(), client.NewCallID(), client.Video, []byte("small offer")); err != nil {
		t.Fatalf("a normal offer after the refusals: %v", err)
	}
	nextCall(t, bob, sigOffer, 10*time.Second)
}
