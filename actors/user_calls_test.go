package actors_test

import (
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// callDevice is a stand-in for one device's gateway session: it records
// the call events and inbox entries its grain pushes.
type callDevice struct {
	events  chan *courierpb.CallEvent
	entries chan *courierpb.InboxEntry
}

func attachCallDevice(ctx context.Context, t *testing.T, c *cluster.Cluster, user string, device uint32) *callDevice {
	t.Helper()
	d := &callDevice{events: make(chan *courierpb.CallEvent, 64), entries: make(chan *courierpb.InboxEntry, 64)}
	pid := c.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *courierpb.CallEvent:
			d.events <- m
		case *courierpb.PushEntries:
			for _, e := range m.Entries {
				d.entries <- e
			}
		}
	}, actor.WithReceiverMiddleware(cluster.UnwrapReceiver)))
	t.Cleanup(func() { c.System().Root.Stop(pid) })
	r, err := c.Request(ctx, actors.UserGrainID(user), &courierpb.AttachDevice{DeviceId: device, SessionAddress: pid.Address, SessionId: pid.Id}, "")
	if err != nil || r.(*courierpb.AttachDeviceReply).Error != nil {
		t.Fatalf("attach %s/%d: %v %v", user, device, r, err)
	}
	return d
}

func (d *callDevice) next(t *testing.T, want courierpb.CallSignalType) *courierpb.CallEvent {
	t.Helper()
	select {
	case ev := <-d.events:
		if ev.Type != want {
			t.Fatalf("got %v (%v), want %v", ev.Type, ev.EndReason, want)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v within 5s", want)
	}
	return nil
}

func (d *callDevice) quiet(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case ev := <-d.events:
		t.Fatalf("unexpected %v (%v) of call %s", ev.Type, ev.EndReason, ev.CallId)
	case <-time.After(within):
	}
}

func signal(ctx context.Context, t *testing.T, c *cluster.Cluster, user string, device uint32, sig *courierpb.CallSignal) *courierpb.Error {
	t.Helper()
	r, err := c.Request(ctx, actors.UserGrainID(user), &courierpb.CallSignalRequest{DeviceId: device, Signal: sig}, "")
	if err != nil {
		t.Fatalf("signal %v from %s/%d: %v", sig.Type, user, device, err)
	}
	return r.(*courierpb.CallSignalReply).Error
}

func sig(typ courierpb.CallSignalType, callID, peer string, payload string) *courierpb.CallSignal {
	s := &courierpb.CallSignal{CallId: callID, PeerUserId: peer, Type: typ, Payload: []byte(payload)}
	if typ == courierpb.CallSignalType_CALL_SIGNAL_OFFER {
		s.Media = courierpb.CallMedia_CALL_MEDIA_VIDEO
	}
	return s
}

func addDevice(t *testing.T, s persistence.Store, user string, device uint32) {
	t.Helper()
	if err := s.PutDevice(context.Background(), persistence.Device{UserID: user, DeviceID: device, SecretHash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
}

func callCluster(t *testing.T, ring time.Duration) (*cluster.Cluster, persistence.Store) {
	store := openStore(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		createUser(t, store, u, u)
		addDevice(t, store, u, 2)
	}
	deps := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{CallRingTimeout: ring}}
	return startCluster(t, deps, actors.UserKind(deps)), store
}

const (
	offer     = courierpb.CallSignalType_CALL_SIGNAL_OFFER
	answer    = courierpb.CallSignalType_CALL_SIGNAL_ANSWER
	candidate = courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE
	hangup    = courierpb.CallSignalType_CALL_SIGNAL_HANGUP
	reject    = courierpb.CallSignalType_CALL_SIGNAL_REJECT
)

// TestFirstAnswerWinsAndOnlyTheTwoDevicesInTheCallTalk: both of bob's
// devices ring; device 2 answers first and holds the call; device 1 stops
// ringing (ANSWERED_ELSEWHERE) and can neither answer nor send
// candidates; the caller's candidates reach device 2 only.
func TestFirstAnswerWinsAndOnlyTheTwoDevicesInTheCallTalk(t *testing.T) {
	c, _ := callCluster(t, time.Minute)
	ctx := context.Background()
	a1 := attachCallDevice(ctx, t, c, "alice", 1)
	b1, b2 := attachCallDevice(ctx, t, c, "bob", 1), attachCallDevice(ctx, t, c, "bob", 2)

	if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "sdp-offer")); e != nil {
		t.Fatalf("offer: %v", e)
	}
	for _, d := range []*callDevice{b1, b2} {
		ev := d.next(t, offer)
		if ev.FromUserId != "alice" || ev.FromDeviceId != 1 || string(ev.Payload) != "sdp-offer" || ev.Media != courierpb.CallMedia_CALL_MEDIA_VIDEO {
			t.Fatalf("offer event %v", ev)
		}
	}
	if e := signal(ctx, t, c, "bob", 2, sig(answer, "call-1", "alice", "sdp-answer")); e != nil {
		t.Fatalf("answer: %v", e)
	}
	if ev := a1.next(t, answer); ev.FromDeviceId != 2 || string(ev.Payload) != "sdp-answer" {
		t.Fatalf("caller got %v", ev)
	}
	if ev := b1.next(t, hangup); ev.EndReason != courierpb.CallEndReason_CALL_END_ANSWERED_ELSEWHERE {
		t.Fatalf("the other device got %v", ev)
	}
	for _, tc := range []struct {
		name string
		typ  courierpb.CallSignalType
	}{{"late answer", answer}, {"candidate", candidate}, {"hangup", hangup}} {
		if e := signal(ctx, t, c, "bob", 1, sig(tc.typ, "call-1", "alice", "x")); e.GetCode() != courierpb.ErrorCode_FORBIDDEN {
			t.Fatalf("%s from the device that did not answer: %v, want FORBIDDEN", tc.name, e)
		}
	}
	if e := signal(ctx, t, c, "alice", 1, sig(candidate, "call-1", "bob", "cand-a")); e != nil {
		t.Fatalf("caller candidate: %v", e)
	}
	if ev := b2.next(t, candidate); string(ev.Payload) != "cand-a" {
		t.Fatalf("candidate %q", ev.Payload)
	}
	if e := signal(ctx, t, c, "bob", 2, sig(candidate, "call-1", "alice", "cand-b")); e != nil {
		t.Fatalf("callee candidate: %v", e)
	}
	a1.next(t, candidate)
	if e := signal(ctx, t, c, "bob", 2, sig(hangup, "call-1", "alice", "")); e != nil {
		t.Fatalf("hangup: %v", e)
	}
	if ev := a1.next(t, hangup); ev.EndReason != courierpb.CallEndReason_CALL_END_HANGUP {
		t.Fatalf("caller got %v", ev)
	}
	b1.quiet(t, 100*time.Millisecond)
	if e := signal(ctx, t, c, "alice", 1, sig(candidate, "call-1", "bob", "late")); e.GetCode() != courierpb.ErrorCode_NOT_FOUND {
		t.Fatalf("candidate after the hangup: %v, want NOT_FOUND", e)
	}
}

// TestSignalsFromOutsideACallAreRefused: a device or user that is not
// part of a call cannot act in it, whichever grain it reaches.
func TestSignalsFromOutsideACallAreRefused(t *testing.T) {
	c, _ := callCluster(t, time.Minute)
	ctx := context.Background()
	attachCallDevice(ctx, t, c, "alice", 1)
	b1 := attachCallDevice(ctx, t, c, "bob", 1)
	if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "o")); e != nil {
		t.Fatal(e)
	}
	b1.next(t, offer)

	peer := func(from string, dev uint32, s *courierpb.CallSignal) *courierpb.Error {
		r, err := c.Request(ctx, actors.UserGrainID("bob"), &courierpb.PeerCallSignal{FromUserId: from, FromDeviceId: dev, Signal: s}, "")
		if err != nil {
			t.Fatal(err)
		}
		return r.(*courierpb.CallSignalReply).Error
	}
	for _, tc := range []struct {
		name string
		err  func() *courierpb.Error
		want courierpb.ErrorCode
	}{
		{"a third user answers", func() *courierpb.Error { return signal(ctx, t, c, "carol", 1, sig(answer, "call-1", "alice", "")) }, courierpb.ErrorCode_NOT_FOUND},
		{"a third user hangs up the callee", func() *courierpb.Error { return signal(ctx, t, c, "carol", 1, sig(hangup, "call-1", "bob", "")) }, courierpb.ErrorCode_NOT_FOUND},
		{"the caller's other device sends a candidate", func() *courierpb.Error { return signal(ctx, t, c, "alice", 2, sig(candidate, "call-1", "bob", "")) }, courierpb.ErrorCode_FORBIDDEN},
		{"the caller's other device hangs up", func() *courierpb.Error { return signal(ctx, t, c, "alice", 2, sig(hangup, "call-1", "bob", "")) }, courierpb.ErrorCode_FORBIDDEN},
		{"a candidate before the answer", func() *courierpb.Error { return signal(ctx, t, c, "bob", 1, sig(candidate, "call-1", "alice", "")) }, courierpb.ErrorCode_FORBIDDEN},
		{"a forged peer signal names another caller", func() *courierpb.Error { return peer("carol", 1, sig(candidate, "call-1", "bob", "")) }, courierpb.ErrorCode_NOT_FOUND},
		{"a forged peer signal from the caller's other device", func() *courierpb.Error { return peer("alice", 2, sig(candidate, "call-1", "bob", "")) }, courierpb.ErrorCode_FORBIDDEN},
		{"the same call id from another caller", func() *courierpb.Error { return signal(ctx, t, c, "carol", 1, sig(offer, "call-1", "bob", "")) }, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"a call to oneself", func() *courierpb.Error { return signal(ctx, t, c, "alice", 1, sig(offer, "call-2", "alice", "")) }, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"a call to nobody", func() *courierpb.Error { return signal(ctx, t, c, "alice", 1, sig(offer, "call-3", "nobody", "")) }, courierpb.ErrorCode_NOT_FOUND},
	} {
		if e := tc.err(); e.GetCode() != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, e, tc.want)
		}
	}
	// None of it reached the ringing device.
	b1.quiet(t, 100*time.Millisecond)
}

// TestUnansweredCallIsStoredAsMissedOnce: at the ring timeout both sides
// end, and the callee's inbox holds one missed call; the caller's resent
// offer afterwards rings nobody and stores nothing more.
func TestUnansweredCallIsStoredAsMissedOnce(t *testing.T) {
	c, store := callCluster(t, 200*time.Millisecond)
	ctx := context.Background()
	a1 := attachCallDevice(ctx, t, c, "alice", 1)
	b1 := attachCallDevice(ctx, t, c, "bob", 1)
	if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "o")); e != nil {
		t.Fatal(e)
	}
	b1.next(t, offer)
	if ev := a1.next(t, hangup); ev.EndReason != courierpb.CallEndReason_CALL_END_NO_ANSWER {
		t.Fatalf("caller got %v", ev)
	}
	if ev := b1.next(t, hangup); ev.EndReason != courierpb.CallEndReason_CALL_END_NO_ANSWER {
		t.Fatalf("callee got %v", ev)
	}
	select {
	case e := <-b1.entries:
		if e.Kind != courierpb.EntryKind_ENTRY_KIND_MISSED_CALL || e.FromUserId != "alice" || e.Call.GetCallId() != "call-1" ||
			e.Call.EndReason != courierpb.CallEndReason_CALL_END_NO_ANSWER || e.Call.Media != courierpb.CallMedia_CALL_MEDIA_VIDEO {
			t.Fatalf("entry %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no missed call pushed")
	}
	// The caller's device never got the timeout's answer and resends.
	if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "o")); e.GetCode() != courierpb.ErrorCode_INVALID_ARGUMENT {
		t.Fatalf("offer of an ended call: %v, want INVALID_ARGUMENT", e)
	}
	b1.quiet(t, 400*time.Millisecond)
	for _, dev := range []uint32{1, 2} {
		in, err := store.Range(ctx, "bob", dev, 0, 10)
		if err != nil || len(in) != 1 || in[0].Kind != courierpb.EntryKind_ENTRY_KIND_MISSED_CALL {
			t.Fatalf("bob/%d's inbox: %v %v; want one missed call", dev, in, err)
		}
	}
	if in, _ := store.Range(ctx, "alice", 1, 0, 10); len(in) != 0 {
		t.Fatalf("the caller's inbox got %v", in)
	}
}

// TestEveryUnansweredEndIsMissedAndABlockedCallerNeverRings covers the
// ways a call ends unanswered, and a blocked caller.
func TestEveryUnansweredEndIsMissedAndABlockedCallerNeverRings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    func(ctx context.Context, c *cluster.Cluster) *courierpb.Error
		caller courierpb.CallEndReason // what the caller's device is told; unset: nothing
		callee courierpb.CallEndReason // what bob's other device is told
	}{
		{"rejected", func(ctx context.Context, c *cluster.Cluster) *courierpb.Error {
			return signal(ctx, t, c, "bob", 2, sig(reject, "call-1", "alice", ""))
		}, courierpb.CallEndReason_CALL_END_REJECTED, courierpb.CallEndReason_CALL_END_REJECTED},
		{"busy", func(ctx context.Context, c *cluster.Cluster) *courierpb.Error {
			return signal(ctx, t, c, "bob", 2, sig(courierpb.CallSignalType_CALL_SIGNAL_BUSY, "call-1", "alice", ""))
		}, courierpb.CallEndReason_CALL_END_BUSY, courierpb.CallEndReason_CALL_END_BUSY},
		{"cancelled", func(ctx context.Context, c *cluster.Cluster) *courierpb.Error {
			return signal(ctx, t, c, "alice", 1, sig(hangup, "call-1", "bob", ""))
		}, 0, courierpb.CallEndReason_CALL_END_CANCELLED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, store := callCluster(t, time.Minute)
			ctx := context.Background()
			a1 := attachCallDevice(ctx, t, c, "alice", 1)
			b1 := attachCallDevice(ctx, t, c, "bob", 1)
			if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "o")); e != nil {
				t.Fatal(e)
			}
			b1.next(t, offer)
			if e := tc.end(ctx, c); e != nil {
				t.Fatal(e)
			}
			if tc.caller != 0 {
				if ev := a1.next(t, hangup); ev.EndReason != tc.caller {
					t.Fatalf("caller told %v, want %v", ev.EndReason, tc.caller)
				}
			}
			if ev := b1.next(t, hangup); ev.EndReason != tc.callee {
				t.Fatalf("callee's device told %v, want %v", ev.EndReason, tc.callee)
			}
			var in []*courierpb.InboxEntry
			deadline := time.Now().Add(5 * time.Second)
			for len(in) == 0 && time.Now().Before(deadline) {
				in, _ = store.Range(ctx, "bob", 1, 0, 10)
				time.Sleep(10 * time.Millisecond)
			}
			if len(in) != 1 || in[0].Call.GetEndReason() != tc.callee {
				t.Fatalf("bob's inbox %v; want one missed call (%v)", in, tc.callee)
			}
		})
	}
	t.Run("blocked", func(t *testing.T) {
		c, store := callCluster(t, 300*time.Millisecond)
		ctx := context.Background()
		a1 := attachCallDevice(ctx, t, c, "alice", 1)
		b1 := attachCallDevice(ctx, t, c, "bob", 1)
		r, err := c.Request(ctx, actors.UserGrainID("bob"), &courierpb.UserSettings{DeviceId: 1,
			Op: &courierpb.UserSettings_Block{Block: &courierpb.BlockUpdate{UserId: "alice", Blocked: true}}}, "")
		if err != nil || r.(*courierpb.UserSettingsReply).Error != nil {
			t.Fatal(err, r)
		}
		for _, s := range []*courierpb.CallSignal{sig(offer, "call-1", "bob", "o"), sig(candidate, "call-1", "bob", "c")} {
			if e := signal(ctx, t, c, "alice", 1, s); e != nil {
				t.Fatalf("%v from a blocked caller: %v; want ok, as for anyone", s.Type, e)
			}
		}
		// The caller's own grain ends it as unanswered.
		if ev := a1.next(t, hangup); ev.EndReason != courierpb.CallEndReason_CALL_END_NO_ANSWER {
			t.Fatalf("caller told %v", ev.EndReason)
		}
		b1.quiet(t, 300*time.Millisecond)
		if in, _ := store.Range(ctx, "bob", 1, 0, 10); len(in) != 0 {
			t.Fatalf("a blocked caller left %v", in)
		}
	})
}

// TestADeviceThatConnectsWhileACallRingsIsRung: the offer and the
// caller's candidates so far reach a device that attaches late.
func TestADeviceThatConnectsWhileACallRingsIsRung(t *testing.T) {
	c, _ := callCluster(t, time.Minute)
	ctx := context.Background()
	attachCallDevice(ctx, t, c, "alice", 1)
	if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "o")); e != nil {
		t.Fatal(e)
	}
	if e := signal(ctx, t, c, "alice", 1, sig(candidate, "call-1", "bob", "c1")); e != nil {
		t.Fatal(e)
	}
	b2 := attachCallDevice(ctx, t, c, "bob", 2)
	if ev := b2.next(t, offer); string(ev.Payload) != "o" {
		t.Fatalf("offer %v", ev)
	}
	if ev := b2.next(t, candidate); string(ev.Payload) != "c1" {
		t.Fatalf("candidate %v", ev)
	}
}

// TestALiveCallKeepsBothGrainsInMemory: grains that passivate after
// 200 ms of idleness keep an answered call through a silence five times
// that long; a passivated grain would have lost the call's record and
// refused the candidate.
func TestALiveCallKeepsBothGrainsInMemory(t *testing.T) {
	store := openStore(t)
	for _, u := range []string{"alice", "bob"} {
		createUser(t, store, u, u)
	}
	deps := &actors.Deps{Store: store, Logger: testLogger(), Config: actors.UserConfig{PassivateAfter: 200 * time.Millisecond}}
	c := startCluster(t, deps, actors.UserKind(deps))
	ctx := context.Background()
	a1 := attachCallDevice(ctx, t, c, "alice", 1)
	b1 := attachCallDevice(ctx, t, c, "bob", 1)
	if e := signal(ctx, t, c, "alice", 1, sig(offer, "call-1", "bob", "o")); e != nil {
		t.Fatal(e)
	}
	b1.next(t, offer)
	if e := signal(ctx, t, c, "bob", 1, sig(answer, "call-1", "alice", "a")); e != nil {
		t.Fatal(e)
	}
	a1.next(t, answer)
	time.Sleep(time.Second)
	if e := signal(ctx, t, c, "alice", 1, sig(candidate, "call-1", "bob", "late")); e != nil {
		t.Fatalf("candidate after a silence: %v", e)
	}
	b1.next(t, candidate)
	if e := signal(ctx, t, c, "bob", 1, sig(hangup, "call-1", "alice", "")); e != nil {
		t.Fatal(e)
	}
	a1.next(t, hangup)
}
