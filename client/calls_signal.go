package client

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/courier-im/courier/protos/courierpb"
)

// Call signaling (1:1 voice and video calls). The SDK carries the signals;
// the application runs WebRTC, and passes its SDP and ICE candidates as
// payloads. The server reads who calls whom and the call's state, never
// the payloads: encrypt them end to end before passing them here (the SDK
// does not do it for calls yet; the payloads go as given).
//
// A call, as the caller sees it:
//
//	Ring(callee, id, media, offer) → ok          CallEvents(): RINGING, ANSWER(answer), CANDIDATE...
//	SendCandidate(callee, id, c)...              HANGUP (end_reason: HANGUP, NO_ANSWER, REJECTED, BUSY)
//	HangUp(callee, id)
//
// and each device of the callee:
//
//	CallEvents(): OFFER(offer), CANDIDATE...     then HANGUP with ANSWERED_ELSEWHERE if another device answered
//	AnswerCall(caller, id, answer) / RejectCall / Busy
//
// A call nobody answers ends after the server's ring timeout (45 s) and
// lands in the callee's inbox as an ENTRY_KIND_MISSED_CALL entry
// (Entry.Call), on every device, once.

// CallMedia is audio or video.
type CallMedia = courierpb.CallMedia

// Call media.
const (
	Audio = courierpb.CallMedia_CALL_MEDIA_AUDIO
	Video = courierpb.CallMedia_CALL_MEDIA_VIDEO
)

// CallEvent is a call signal for this device: from the peer's device
// (Type OFFER, RINGING, ANSWER, CANDIDATE), or the end of the call for
// this device (Type HANGUP, Ended saying why).
type CallEvent struct {
	CallID       string
	FromUserID   string
	FromDeviceID uint32
	Type         courierpb.CallSignalType
	Media        CallMedia
	Payload      []byte
	Ended        courierpb.CallEndReason
	// StartedAt is when the caller placed the call (with OFFER).
	StartedAt time.Time
}

// callEventBuffer is how many call events wait for the application. Past
// it an event is dropped with a warning: an application that does not
// read its call events for this long has no call on screen to lose.
const callEventBuffer = 1024

// CallEvents delivers call signals for this device.
func (c *Client) CallEvents() <-chan CallEvent { return c.callEvents }

func (c *Client) onCallEvent(e *courierpb.CallEvent) {
	ev := CallEvent{CallID: e.CallId, FromUserID: e.FromUserId, FromDeviceID: e.FromDeviceId, Type: e.Type,
		Media: e.Media, Payload: e.Payload, Ended: e.EndReason}
	if e.StartedAtMs > 0 {
		ev.StartedAt = time.UnixMilli(e.StartedAtMs)
	}
	select {
	case c.callEvents <- ev:
	default:
		c.log.Warn("courier: call event dropped, the application is not reading CallEvents", "call_id", e.CallId, "type", e.Type)
	}
}

// NewCallID returns a fresh call id for Ring.
func NewCallID() string { return uuid.NewString() }

// Ring places a call to userID: every online device of the user rings, and
// offline ones get a call push. offer is the (encrypted) SDP offer. A Ring
// sent again with the same callID rings nobody twice.
func (c *Client) Ring(ctx context.Context, userID, callID string, media CallMedia, offer []byte) error {
	return c.signal(ctx, "ring", &courierpb.CallSignal{CallId: callID, PeerUserId: userID,
		Type: courierpb.CallSignalType_CALL_SIGNAL_OFFER, Media: media, Payload: offer})
}

// Ringing tells the caller that this device rings (optional).
func (c *Client) Ringing(ctx context.Context, callerID, callID string) error {
	return c.SignalCall(ctx, callerID, callID, courierpb.CallSignalType_CALL_SIGNAL_RINGING, nil)
}

// AnswerCall takes a call on this device; the first device to answer
// wins, and the others are told ANSWERED_ELSEWHERE. A device that answers
// too late gets FORBIDDEN.
func (c *Client) AnswerCall(ctx context.Context, callerID, callID string, answer []byte) error {
	return c.SignalCall(ctx, callerID, callID, courierpb.CallSignalType_CALL_SIGNAL_ANSWER, answer)
}

// SendCandidate passes one trickled ICE candidate to the peer's device in
// the call.
func (c *Client) SendCandidate(ctx context.Context, peerID, callID string, candidate []byte) error {
	return c.SignalCall(ctx, peerID, callID, courierpb.CallSignalType_CALL_SIGNAL_CANDIDATE, candidate)
}

// RejectCall declines a ringing call, on every device of this user.
func (c *Client) RejectCall(ctx context.Context, callerID, callID string) error {
	return c.SignalCall(ctx, callerID, callID, courierpb.CallSignalType_CALL_SIGNAL_REJECT, nil)
}

// HangUp ends a call (the caller, before an answer: cancels it).
func (c *Client) HangUp(ctx context.Context, peerID, callID string) error {
	return c.SignalCall(ctx, peerID, callID, courierpb.CallSignalType_CALL_SIGNAL_HANGUP, nil)
}

// SignalCall sends one signal of call callID to peerID.
func (c *Client) SignalCall(ctx context.Context, peerID, callID string, typ courierpb.CallSignalType, payload []byte) error {
	return c.signal(ctx, "call signal", &courierpb.CallSignal{CallId: callID, PeerUserId: peerID, Type: typ, Payload: payload})
}

func (c *Client) signal(ctx context.Context, what string, sig *courierpb.CallSignal) error {
	cl := c.start(ctx, &courierpb.ClientFrame_CallSignal{CallSignal: sig}, true)
	<-cl.done
	if cl.err != nil {
		return fmt.Errorf("%s %s: %w", what, sig.CallId, cl.err)
	}
	return nil
}
