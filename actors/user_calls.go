package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/internal/recent"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/push"
)

// 1:1 call signaling. Both users' grains keep a record of each call they
// take part in (the caller's grain an outgoing one, the callee's an
// incoming one), and every signal passes both:
//
//	device ─CallSignalRequest→ own grain ─PeerCallSignal→ peer's grain ─CallEvent→ device(s)
//
// The own grain checks that the device is part of the call (it placed it,
// or answered it); the peer's grain checks that the signal comes from the
// peer's device in the call. A device that is not part of a call can
// therefore neither answer it, nor hang it up, nor inject candidates, and
// no grain trusts a call id it did not record itself.
//
// C1: the callee's grain alone decides who answered: it handles one
// message at a time, so the first ANSWER wins and every other device of
// the callee is told ANSWERED_ELSEWHERE before the answer is passed on.
//
// C2: calls are live state, not history: the records are in memory only.
// While a grain holds calls it does not passivate (callKeepalive); a grain
// that stops anyway (a node shutting down, a panic) ends its calls as
// FAILED on both sides (dropCalls).
//
// C3: a call that ends unanswered (no answer within the ring timeout,
// rejected, busy, cancelled by the caller) leaves exactly one
// ENTRY_KIND_MISSED_CALL in every device inbox of the callee: written like
// a message, with a dedupe record keyed by the call id, so a retried
// write never stores it twice. The callee's grain writes it; the caller's
// grain writes nothing.
//
// C4: a blocked caller learns nothing: its offer and every later signal
// are answered ok, nothing rings, nothing is stored, and its own grain
// ends the call as NO_ANSWER at the ring timeout, as for a callee who did
// not pick up.

// Limits of call signaling.
const (
	// MaxLiveCalls bounds the calls one user's grain keeps at once; an
	// offer past it is answered BUSY (incoming) or refused (outgoing).
	MaxLiveCalls = 8
	// MaxCallDuration ends an answered call whose devices never hung up
	// (both crashed), so its record does not pin the grain forever. It
	// matches the TURN credentials' default lifetime, the longest a
	// relayed call lasts anyway.
	MaxCallDuration = 24 * time.Hour
	// maxRingCandidates bounds the caller's candidates an incoming call
	// keeps, in bytes, to hand to a device that connects while it rings.
	maxRingCandidates = 64 << 10
	// endedCallsKept is how many ended call ids a grain remembers, so a
	// late resent offer does not ring a call that is over.
	endedCallsKept = 128
	// missedCallAttempts bounds the tries to store one missed call while
	// the store is unavailable.
	missedCallAttempts = 5
)

// liveCall is one call this user takes part in.
type liveCall struct {
	id       string
	peer     string
	outgoing bool
	// device is this user's device in the call: the one that placed it
	// (outgoing), or the one that answered it (incoming; 0 while ringing).
	device uint32
	// peerDevice is the peer's device in the call: the caller's (incoming),
	// or the one that answered (outgoing; 0 while ringing).
	peerDevice uint32
	media      courierpb.CallMedia
	startedAt  int64 // unix ms, when the caller placed it
	answeredAt time.Time
	// offer and candidates (incoming, while ringing) ring a device that
	// connects after the offer came.
	offer          []byte
	candidates     [][]byte
	candidateBytes int
	// pushed: devices sent a call push for this call.
	pushed []uint32
	ring   *time.Timer
}

func (c *liveCall) answered() bool {
	if c.outgoing {
		return c.peerDevice != 0
	}
	return c.device != 0
}

// callTable is a grain's calls; nil until its first call.
type callTable struct {
	live      map[string]*liveCall
	ended     *recent.Map[string, struct{}]
	keepalive *time.Timer
}

// Timer messages, sent by the grain's timers to itself.
type (
	callRingTimeout struct{ id string }
	callKeepalive   struct{}
	missedCallRetry struct {
		c       *liveCall
		reason  courierpb.CallEndReason
		endedAt int64
		attempt int
	}
)

func callError(code courierpb.ErrorCode, format string, args ...any) *courierpb.Error {
	return codeError(code, fmt.Sprintf(format, args...), code == courierpb.ErrorCode_UNAVAILABLE)
}

// validateCallSignal checks what every signal must carry. The gateway
// checks the same; grains check again what they record.
func validateCallSignal(sig *courierpb.CallSignal) *courierpb.Error {
	switch {
	case sig == nil:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "call signal is empty")
	case sig.CallId == "" || len(sig.CallId) > MaxCallIDLen:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "call_id must be 1..%d bytes", MaxCallIDLen)
	case sig.PeerUserId == "" || len(sig.PeerUserId) > MaxUserIDLen:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "peer_user_id must be 1..%d bytes", MaxUserIDLen)
	case sig.Type <= courierpb.CallSignalType_CALL_SIGNAL_UNSPECIFIED || sig.Type > courierpb.CallSignalType_CALL_SIGNAL_HANGUP:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "unknown call signal type")
	case len(sig.Payload) > MaxCallPayload:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "call payload is %d bytes, at most %d", len(sig.Payload), MaxCallPayload)
	case sig.Type == courierpb.CallSignalType_CALL_SIGNAL_OFFER &&
		sig.Media != courierpb.CallMedia_CALL_MEDIA_AUDIO && sig.Media != courierpb.CallMedia_CALL_MEDIA_VIDEO:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "an offer names its media: audio or video")
	}
	return nil
}

// callSignal serves a signal from one of this user's devices.
func (g *userGrain) callSignal(ctx actor.Context, msg *courierpb.CallSignalRequest) {
	sender := ctx.Sender()
	answer := func(e *courierpb.Error) { ctx.Send(sender, &courierpb.CallSignalReply{Error: e}) }
	if e := g.ready(); e != nil {
		answer(e)
		return
	}
	sig := msg.GetSignal()
	if e := validateCallSignal(sig); e != nil {
		answer(e)
		return
	}
	dev := msg.DeviceId
	switch {
	case !g.hasDevice(dev):
		answer(callError(courierpb.ErrorCode_FORBIDDEN, "no such device"))
		return
	case sig.PeerUserId == g.id:
		answer(callError(courierpb.ErrorCode_INVALID_ARGUMENT, "a call is between two users: peer_user_id is this user"))
		return
	case sig.Type == courierpb.CallSignalType_CALL_SIGNAL_OFFER:
		g.placeCall(ctx, dev, sig, answer)
		return
	}
	c := g.calls.live[sig.CallId]
	if c == nil || c.peer != sig.PeerUserId {
		// Unknown and someone else's look the same: a guessed call id
		// learns nothing.
		answer(callError(courierpb.ErrorCode_NOT_FOUND, "no call %s with this peer (it may have ended)", sig.CallId))
		return
	}
	if c.outgoing {
		g.outgoingSignal(ctx, c, dev, sig, answer)
		return
	}
	g.incomingSignal(ctx, c, dev, sig, answer)
}

// placeCall records an outgoing call and offers it to the callee's grain.
func (g *userGrain) placeCall(ctx actor.Context, dev uint32, sig *courierpb.CallSignal, answer func(*courierpb.Error)) {
	if c := g.calls.live[sig.CallId]; c != nil {
		if c.outgoing && c.peer == sig.PeerUserId && c.device == dev {
			answer(nil) // a resent offer: it rang already
			return
		}
		answer(callError(courierpb.ErrorCode_INVALID_ARGUMENT, "call_id %s is in use: choose a new one", sig.CallId))
		return
	}
	if g.callEnded(sig.CallId) {
		answer(callError(courierpb.ErrorCode_INVALID_ARGUMENT, "call %s has ended: place a new call with a new call_id", sig.CallId))
		return
	}
	if len(g.calls.live) >= MaxLiveCalls {
		answer(callError(courierpb.ErrorCode_RATE_LIMITED, "at most %d calls at once: hang one up first", MaxLiveCalls))
		return
	}
	c := &liveCall{id: sig.CallId, peer: sig.PeerUserId, outgoing: true, device: dev, media: sig.Media, startedAt: g.deps.Now().UnixMilli()}
	g.addCall(ctx, c)
	g.forward(ctx, c, dev, sig, func(e *courierpb.Error) {
		if e != nil && g.calls.live[c.id] == c {
			// Not ended: the device may place it again with the same id
			// (after UNAVAILABLE the callee may well have it already, and
			// answers the resent offer as a repeat).
			g.removeCall(c, false)
		}
		answer(e)
	})
}

// outgoingSignal serves the caller's device in a call it placed.
func (g *userGrain) outgoingSignal(ctx actor.Context, c *liveCall, dev uint32, sig *courierpb.CallSignal, answer func(*courierpb.Error)) {
	if dev != c.device {
		answer(callError(courierpb.ErrorCode_FORBIDDEN, "call %s was placed by another device of this user", c.id))
		return
	}
	switch sig.Type {
	case courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE:
		g.forward(ctx, c, dev, sig, answer)
	case courierpb.CallSignalType_CALL_SIGNAL_HANGUP:
		g.removeCall(c, true)
		g.forward(ctx, c, dev, sig, overIsFine(answer))
	default:
		answer(callError(courierpb.ErrorCode_INVALID_ARGUMENT, "the caller sends candidates and hangs up; %v is the callee's", sig.Type))
	}
}

// incomingSignal serves one of this user's devices in a call it receives.
func (g *userGrain) incomingSignal(ctx actor.Context, c *liveCall, dev uint32, sig *courierpb.CallSignal, answer func(*courierpb.Error)) {
	if c.device != 0 && dev != c.device {
		answer(callError(courierpb.ErrorCode_FORBIDDEN, "call %s was answered on another device", c.id))
		return
	}
	switch sig.Type {
	case courierpb.CallSignalType_CALL_SIGNAL_RINGING:
		if c.answered() {
			answer(nil)
			return
		}
		g.forward(ctx, c, dev, sig, answer)
	case courierpb.CallSignalType_CALL_SIGNAL_ANSWER:
		if c.device == dev {
			answer(nil) // a resent answer
			return
		}
		// C1: from here on this device holds the call.
		c.device, c.answeredAt = dev, g.deps.Now()
		c.offer, c.candidates, c.candidateBytes = nil, nil, 0
		g.stopRing(c)
		g.stopRinging(c, dev, courierpb.CallEndReason_CALL_END_ANSWERED_ELSEWHERE)
		g.forward(ctx, c, dev, sig, answer)
	case courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE:
		if !c.answered() {
			answer(callError(courierpb.ErrorCode_FORBIDDEN, "answer call %s before sending candidates", c.id))
			return
		}
		g.forward(ctx, c, dev, sig, answer)
	case courierpb.CallSignalType_CALL_SIGNAL_REJECT, courierpb.CallSignalType_CALL_SIGNAL_BUSY, courierpb.CallSignalType_CALL_SIGNAL_HANGUP:
		out := sig
		if c.answered() {
			// After the answer, every way out is a hangup.
			out = proto.CloneOf(sig)
			out.Type = courierpb.CallSignalType_CALL_SIGNAL_HANGUP
		} else {
			// Declining on one device declines the call: a user is busy
			// or not, whichever device says so.
			reason := courierpb.CallEndReason_CALL_END_REJECTED
			if sig.Type == courierpb.CallSignalType_CALL_SIGNAL_BUSY {
				reason = courierpb.CallEndReason_CALL_END_BUSY
			}
			if sig.Type == courierpb.CallSignalType_CALL_SIGNAL_HANGUP {
				out = proto.CloneOf(sig)
				out.Type = courierpb.CallSignalType_CALL_SIGNAL_REJECT
			}
			g.stopRinging(c, dev, reason)
			g.recordMissed(ctx, c, reason)
		}
		g.removeCall(c, true)
		g.forward(ctx, c, dev, out, overIsFine(answer))
	default:
		answer(callError(courierpb.ErrorCode_INVALID_ARGUMENT, "the callee cannot send %v", sig.Type))
	}
}

// overIsFine answers a signal that ends a call: the peer having ended it
// first is no failure.
func overIsFine(answer func(*courierpb.Error)) func(*courierpb.Error) {
	return func(e *courierpb.Error) {
		if e.GetCode() == courierpb.ErrorCode_NOT_FOUND {
			e = nil
		}
		answer(e)
	}
}

// forward passes a checked signal of this user's device to the peer's
// grain and answers with what it says.
func (g *userGrain) forward(ctx actor.Context, c *liveCall, dev uint32, sig *courierpb.CallSignal, done func(*courierpb.Error)) {
	msg := &courierpb.PeerCallSignal{FromUserId: g.id, FromDeviceId: dev, Signal: sig, StartedAtMs: c.startedAt}
	g.deps.Cluster.RequestAsync(ctx, UserGrainID(c.peer), msg, "", g.deps.Config.RequestTimeout, func(reply proto.Message, err error) {
		r, ok := reply.(*courierpb.CallSignalReply)
		if err != nil || !ok {
			done(callError(courierpb.ErrorCode_UNAVAILABLE, "the call's peer could not be reached, send the signal again"))
			return
		}
		done(r.Error)
	})
}

// tellPeer tells the peer's grain that the call ended for a reason of
// this grain's own (a timeout, a stop). At most once: the peer's own
// timer ends the call if this is lost.
func (g *userGrain) tellPeer(c *liveCall, reason courierpb.CallEndReason) {
	dev := c.device
	_ = g.deps.Cluster.Notify(UserGrainID(c.peer), &courierpb.PeerCallSignal{
		FromUserId: g.id, FromDeviceId: dev, EndReason: reason,
		Signal: &courierpb.CallSignal{CallId: c.id, PeerUserId: c.peer, Type: courierpb.CallSignalType_CALL_SIGNAL_HANGUP},
	}, "", 0)
}

// peerCallSignal serves a signal the peer's grain checked and passed on.
func (g *userGrain) peerCallSignal(ctx actor.Context, msg *courierpb.PeerCallSignal) {
	if e := g.ready(); e != nil {
		ctx.Respond(&courierpb.CallSignalReply{Error: e})
		return
	}
	sig := msg.GetSignal()
	if e := validateCallSignal(sig); e != nil {
		ctx.Respond(&courierpb.CallSignalReply{Error: e})
		return
	}
	if msg.FromUserId == "" || msg.FromUserId == g.id || sig.PeerUserId != g.id {
		ctx.Respond(&courierpb.CallSignalReply{Error: callError(courierpb.ErrorCode_INVALID_ARGUMENT, "a call signal names its two users")})
		return
	}
	if g.profile.blocked[msg.FromUserId] {
		// C4: answered as if taken, and nothing happens.
		ctx.Respond(&courierpb.CallSignalReply{})
		return
	}
	if sig.Type == courierpb.CallSignalType_CALL_SIGNAL_OFFER {
		ctx.Respond(&courierpb.CallSignalReply{Error: g.ringCall(ctx, msg)})
		return
	}
	c := g.calls.live[sig.CallId]
	if c == nil || c.peer != msg.FromUserId {
		var e *courierpb.Error
		if sig.Type != courierpb.CallSignalType_CALL_SIGNAL_HANGUP {
			e = callError(courierpb.ErrorCode_NOT_FOUND, "no call %s (it may have ended)", sig.CallId)
		}
		ctx.Respond(&courierpb.CallSignalReply{Error: e})
		return
	}
	if c.outgoing {
		ctx.Respond(&courierpb.CallSignalReply{Error: g.fromCallee(c, msg)})
		return
	}
	ctx.Respond(&courierpb.CallSignalReply{Error: g.fromCaller(ctx, c, msg)})
}

// fromCallee handles the callee's signal in a call this user placed.
func (g *userGrain) fromCallee(c *liveCall, msg *courierpb.PeerCallSignal) *courierpb.Error {
	sig, from := msg.Signal, msg.FromDeviceId
	if c.answered() && from != c.peerDevice {
		return callError(courierpb.ErrorCode_FORBIDDEN, "call %s was answered on another device", c.id)
	}
	ev := &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: from, Type: sig.Type, Payload: sig.Payload}
	switch sig.Type {
	case courierpb.CallSignalType_CALL_SIGNAL_RINGING:
		if c.answered() {
			return nil
		}
	case courierpb.CallSignalType_CALL_SIGNAL_ANSWER:
		if c.answered() {
			return nil // a resent answer
		}
		c.peerDevice, c.answeredAt = from, g.deps.Now()
		g.stopRing(c)
	case courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE:
		if !c.answered() {
			return callError(courierpb.ErrorCode_FORBIDDEN, "call %s is not answered", c.id)
		}
	case courierpb.CallSignalType_CALL_SIGNAL_REJECT, courierpb.CallSignalType_CALL_SIGNAL_BUSY, courierpb.CallSignalType_CALL_SIGNAL_HANGUP:
		ev.Type, ev.Payload = courierpb.CallSignalType_CALL_SIGNAL_HANGUP, nil
		ev.EndReason = endReason(sig.Type, msg.EndReason)
		g.removeCall(c, true)
	default:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "the callee cannot send %v", sig.Type)
	}
	g.tellDevice(c.device, ev)
	return nil
}

func endReason(t courierpb.CallSignalType, given courierpb.CallEndReason) courierpb.CallEndReason {
	switch {
	case given != courierpb.CallEndReason_CALL_END_UNSPECIFIED:
		return given
	case t == courierpb.CallSignalType_CALL_SIGNAL_REJECT:
		return courierpb.CallEndReason_CALL_END_REJECTED
	case t == courierpb.CallSignalType_CALL_SIGNAL_BUSY:
		return courierpb.CallEndReason_CALL_END_BUSY
	}
	return courierpb.CallEndReason_CALL_END_HANGUP
}

// fromCaller handles the caller's signal in a call this user receives.
func (g *userGrain) fromCaller(ctx actor.Context, c *liveCall, msg *courierpb.PeerCallSignal) *courierpb.Error {
	sig := msg.Signal
	if msg.FromDeviceId != c.peerDevice {
		return callError(courierpb.ErrorCode_FORBIDDEN, "call %s was placed by another device", c.id)
	}
	switch sig.Type {
	case courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE:
		ev := &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice, Type: sig.Type, Payload: sig.Payload}
		if c.answered() {
			g.tellDevice(c.device, ev)
			return nil
		}
		// Trickled before the answer: every ringing device needs them to
		// answer, and one that connects later gets the ones kept.
		if c.candidateBytes+len(sig.Payload) <= maxRingCandidates {
			c.candidates = append(c.candidates, sig.Payload)
			c.candidateBytes += len(sig.Payload)
		}
		g.tellAll(ev, 0)
	case courierpb.CallSignalType_CALL_SIGNAL_HANGUP:
		if c.answered() {
			g.tellDevice(c.device, &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice,
				Type: courierpb.CallSignalType_CALL_SIGNAL_HANGUP, EndReason: endReason(sig.Type, msg.EndReason)})
		} else {
			reason := courierpb.CallEndReason_CALL_END_CANCELLED
			if msg.EndReason == courierpb.CallEndReason_CALL_END_NO_ANSWER {
				reason = msg.EndReason // the caller's ring timer ran out first
			}
			g.stopRinging(c, 0, reason)
			g.recordMissed(ctx, c, reason)
		}
		g.removeCall(c, true)
	default:
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "the caller cannot send %v", sig.Type)
	}
	return nil
}

// ringCall records an incoming call and rings every device of this user:
// the online ones now, the offline ones with a push, and each when it
// connects while the call rings.
func (g *userGrain) ringCall(ctx actor.Context, msg *courierpb.PeerCallSignal) *courierpb.Error {
	sig := msg.Signal
	if c := g.calls.live[sig.CallId]; c != nil {
		if !c.outgoing && c.peer == msg.FromUserId && c.peerDevice == msg.FromDeviceId {
			return nil // a resent offer: it rings already
		}
		return callError(courierpb.ErrorCode_INVALID_ARGUMENT, "call_id %s is in use: choose a new one", sig.CallId)
	}
	if g.callEnded(sig.CallId) {
		return nil // a late resend of a call that is over rings nobody
	}
	started := msg.StartedAtMs
	if started == 0 {
		started = g.deps.Now().UnixMilli()
	}
	c := &liveCall{id: sig.CallId, peer: msg.FromUserId, peerDevice: msg.FromDeviceId, media: sig.Media,
		startedAt: started, offer: sig.Payload}
	if len(g.calls.live) >= MaxLiveCalls {
		g.endedCall(c.id)
		g.recordMissed(ctx, c, courierpb.CallEndReason_CALL_END_BUSY)
		g.tellPeer(c, courierpb.CallEndReason_CALL_END_BUSY)
		return nil
	}
	g.addCall(ctx, c)
	ev := c.offerEvent()
	g.tellAll(ev, 0)
	g.callPush(c)
	return nil
}

func (c *liveCall) offerEvent() *courierpb.CallEvent {
	return &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice,
		Type: courierpb.CallSignalType_CALL_SIGNAL_OFFER, Media: c.media, Payload: c.offer, StartedAtMs: c.startedAt}
}

// ringAttached rings a device that connected while calls to it ring: the
// offer, then the caller's candidates so far, in order.
func (g *userGrain) ringAttached(pid *actor.PID) {
	for _, c := range g.calls.live {
		if c.outgoing || c.answered() {
			continue
		}
		g.deps.Cluster.Tell(pid, c.offerEvent())
		for _, cand := range c.candidates {
			g.deps.Cluster.Tell(pid, &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice,
				Type: courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE, Payload: cand})
		}
	}
}

// callPush sends a call push to every offline device with a push token.
// The device then counts as pushed for this offline period, so the
// missed-call entry that may follow sends no second push.
func (g *userGrain) callPush(c *liveCall) {
	if g.deps.Push == nil {
		return
	}
	changed := false
	for _, dev := range g.devices {
		tok := g.profile.pb.PushTokens[dev]
		if _, attached := g.sessions.get(dev); attached || tok == "" {
			continue
		}
		g.deps.Push.Enqueue(push.Notification{Token: tok, UserID: g.id, DeviceID: dev, At: time.UnixMilli(c.startedAt), Call: true, CallID: c.id})
		c.pushed = append(c.pushed, dev)
		if !g.profile.pushed[dev] {
			g.profile.setPushed(dev)
			changed = true
		}
	}
	if changed {
		if err := g.saveProfile(); err != nil {
			g.logger().Warn("saving push state failed", "err", err)
		}
	}
}

// stopRinging tells this user's devices but except that the call ended
// for them, and drops call pushes not yet sent.
func (g *userGrain) stopRinging(c *liveCall, except uint32, reason courierpb.CallEndReason) {
	ev := &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice,
		Type: courierpb.CallSignalType_CALL_SIGNAL_HANGUP, EndReason: reason}
	if reason == courierpb.CallEndReason_CALL_END_ANSWERED_ELSEWHERE {
		ev.FromUserId, ev.FromDeviceId = g.id, except
	}
	g.tellAll(ev, except)
	if g.deps.Push != nil {
		for _, dev := range c.pushed {
			g.deps.Push.CancelCall(g.id, dev, c.id)
		}
	}
}

// tellAll sends ev to every attached device of this user but except.
func (g *userGrain) tellAll(ev *courierpb.CallEvent, except uint32) {
	for _, s := range g.sessions {
		if s.device != except {
			g.deps.Cluster.Tell(s.pid, ev)
		}
	}
}

// tellDevice sends ev to one device's session, if it has one. A device
// without a session misses live signals: calls are not stored.
func (g *userGrain) tellDevice(dev uint32, ev *courierpb.CallEvent) {
	if pid, ok := g.sessions.get(dev); ok {
		g.deps.Cluster.Tell(pid, ev)
	}
}

// addCall records c and arms its ring timer and the grain's keepalive.
func (g *userGrain) addCall(ctx actor.Context, c *liveCall) {
	if g.calls.live == nil {
		g.calls.live = make(map[string]*liveCall)
	}
	g.calls.live[c.id] = c
	self, root, id := ctx.Self(), ctx.ActorSystem().Root, c.id
	c.ring = time.AfterFunc(g.deps.Config.CallRingTimeout, func() { root.Send(self, callRingTimeout{id: id}) })
	if g.calls.keepalive == nil {
		g.calls.keepalive = time.AfterFunc(g.keepaliveEvery(), func() { root.Send(self, callKeepalive{}) })
	}
}

// keepaliveEvery is how often a grain with calls wakes itself so that the
// idle sweep never finds it idle (C2).
func (g *userGrain) keepaliveEvery() time.Duration {
	every := time.Minute
	if pa := g.deps.Config.PassivateAfter; pa > 0 && pa/2 < every {
		every = pa / 2
	}
	return every
}

func (g *userGrain) stopRing(c *liveCall) {
	if c.ring != nil {
		c.ring.Stop()
		c.ring = nil
	}
}

// removeCall forgets c; ended records its id so that a late resend of its
// offer rings nobody.
func (g *userGrain) removeCall(c *liveCall, ended bool) {
	g.stopRing(c)
	if g.calls.live[c.id] == c {
		delete(g.calls.live, c.id)
	}
	if ended {
		g.endedCall(c.id)
	}
	if len(g.calls.live) == 0 {
		g.calls.live = nil
		if g.calls.keepalive != nil {
			g.calls.keepalive.Stop()
			g.calls.keepalive = nil
		}
	}
}

func (g *userGrain) endedCall(id string) {
	if g.calls.ended == nil {
		g.calls.ended = recent.New[string, struct{}](endedCallsKept)
	}
	g.calls.ended.Put(id, struct{}{})
}

func (g *userGrain) callEnded(id string) bool {
	if g.calls.ended == nil {
		return false
	}
	_, ok := g.calls.ended.Get(id)
	return ok
}

// onRingTimeout ends a call nobody answered in time. Both grains run this
// timer: the caller's grain ends its side (and the callee's, if the callee
// is blocked or its grain is gone, this is the only end the caller sees);
// the callee's grain stops its devices ringing and records the missed call.
func (g *userGrain) onRingTimeout(ctx actor.Context, id string) {
	c := g.calls.live[id]
	if c == nil || c.answered() {
		return
	}
	reason := courierpb.CallEndReason_CALL_END_NO_ANSWER
	if c.outgoing {
		g.tellDevice(c.device, &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer,
			Type: courierpb.CallSignalType_CALL_SIGNAL_HANGUP, EndReason: reason})
	} else {
		g.stopRinging(c, 0, reason)
		g.recordMissed(ctx, c, reason)
	}
	g.removeCall(c, true)
	g.tellPeer(c, reason)
}

// onCallKeepalive keeps a grain with calls in memory, and ends answered
// calls past MaxCallDuration.
func (g *userGrain) onCallKeepalive(ctx actor.Context) {
	g.calls.keepalive = nil
	now := g.deps.Now()
	for _, c := range g.calls.live {
		if c.answered() && now.Sub(c.answeredAt) > MaxCallDuration {
			g.tellDevice(c.device, &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice,
				Type: courierpb.CallSignalType_CALL_SIGNAL_HANGUP, EndReason: courierpb.CallEndReason_CALL_END_HANGUP})
			g.removeCall(c, true)
			g.tellPeer(c, courierpb.CallEndReason_CALL_END_HANGUP)
		}
	}
	if len(g.calls.live) > 0 {
		self, root := ctx.Self(), ctx.ActorSystem().Root
		g.calls.keepalive = time.AfterFunc(g.keepaliveEvery(), func() { root.Send(self, callKeepalive{}) })
	}
}

// dropCalls ends every call as FAILED when the activation stops or
// restarts (C2): its records are about to be lost, and a peer left
// waiting would ring, or hold a dead call, until its own timer.
func (g *userGrain) dropCalls() {
	if g.calls.keepalive != nil {
		g.calls.keepalive.Stop()
	}
	for _, c := range g.calls.live {
		g.stopRing(c)
		ev := &courierpb.CallEvent{CallId: c.id, FromUserId: c.peer, FromDeviceId: c.peerDevice,
			Type: courierpb.CallSignalType_CALL_SIGNAL_HANGUP, EndReason: courierpb.CallEndReason_CALL_END_FAILED}
		if c.outgoing || c.answered() {
			g.tellDevice(c.device, ev)
		} else {
			g.tellAll(ev, 0)
		}
		g.tellPeer(c, courierpb.CallEndReason_CALL_END_FAILED)
	}
	g.calls = callTable{}
}

// recordMissed stores the missed call in every device inbox of this user,
// once (C3).
func (g *userGrain) recordMissed(ctx actor.Context, c *liveCall, reason courierpb.CallEndReason) {
	g.storeMissed(ctx, c, reason, g.deps.Now().UnixMilli(), 1)
}

func (g *userGrain) storeMissed(ctx actor.Context, c *liveCall, reason courierpb.CallEndReason, endedAt int64, attempt int) {
	key := c.peer + "\x00call/" + c.id
	if g.dedupe == nil {
		g.dedupe = recent.New[string, dedupeState](g.deps.Config.DedupeWindow)
	}
	if _, ok := g.dedupe.Get(key); ok {
		return
	}
	retry := func(err error) {
		if attempt >= missedCallAttempts {
			g.logger().Error("missed call not stored", "call_id", c.id, "caller", c.peer, "attempts", attempt, "err", err)
			return
		}
		self, root := ctx.Self(), ctx.ActorSystem().Root
		m := missedCallRetry{c: c, reason: reason, endedAt: endedAt, attempt: attempt + 1}
		time.AfterFunc(time.Duration(attempt)*time.Second, func() { root.Send(self, m) })
	}
	seq, err := g.nextSeq()
	if err != nil {
		retry(err)
		return
	}
	rec := &courierpb.CallRecord{CallId: c.id, Media: c.media, EndReason: reason, StartedAtMs: c.startedAt, EndedAtMs: endedAt}
	w := &pendingWrite{dedupeKey: key, maxSeq: seq,
		reply: func(*courierpb.Error, bool) proto.Message { return &courierpb.CallSignalReply{} },
		after: func(_ actor.Context, err error) {
			if err != nil {
				retry(err)
			}
		},
	}
	for _, dev := range g.devices {
		w.entries = append(w.entries, persistence.InboxAppend{UserID: g.id, DeviceID: dev, Entry: &courierpb.InboxEntry{
			InboxSeq:     seq,
			Kind:         courierpb.EntryKind_ENTRY_KIND_MISSED_CALL,
			FromUserId:   c.peer,
			FromDeviceId: c.peerDevice,
			SentAtMs:     c.startedAt,
			Call:         rec,
		}})
	}
	// The dedupe record makes a retried write (after a store error whose
	// write landed anyway) a duplicate, not a second entry.
	w.dedupe = &persistence.DedupeRecord{RecipientID: g.id, SenderID: c.peer, ClientMsgID: "call/" + c.id, StoredAtMs: endedAt}
	g.dedupe.Put(key, dedupeState{storedAtMs: endedAt, inflight: w})
	g.enqueue(ctx, w)
}
