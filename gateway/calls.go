package gateway

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/protos/courierpb"
)

// Call signaling: a CallSignal frame goes to the device's own User grain
// (actors/user_calls.go), which checks the device is part of the call and
// passes it to the peer's grain; the answer comes back as ok or an error.
// What the peer's devices send arrives as CallEvents, which go out like
// inbox entries and unlike typing: never dropped under backpressure (a
// session too slow for them is closed, and its device is rung again when
// it reconnects).

func (s *session) handleCallFrame(ctx actor.Context, f *courierpb.ClientFrame) bool {
	b, ok := f.Body.(*courierpb.ClientFrame_CallSignal)
	if !ok {
		return false
	}
	s.callSignal(ctx, f.ReqId, b.CallSignal)
	return true
}

func (s *session) callSignal(ctx actor.Context, reqID uint64, sig *courierpb.CallSignal) {
	switch {
	case sig.GetCallId() == "":
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "call_id is required")
		return
	case sig.PeerUserId == "":
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "peer_user_id is required")
		return
	case len(sig.Payload) > actors.MaxCallPayload:
		// INVALID_ARGUMENT, not TOO_LARGE: TOO_LARGE means the frame limit,
		// which clients learn from the answer and apply to every frame.
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("call payload is %d bytes, at most %d (an SDP or a candidate, not media)", len(sig.Payload), actors.MaxCallPayload))
		return
	}
	// An offer rings every device of the peer and, unanswered, leaves a
	// missed call in its inbox: ringing in a loop is a flood like sends.
	if !s.admit(ctx, reqID) || (sig.Type == courierpb.CallSignalType_CALL_SIGNAL_OFFER && !s.limitAction(ctx, reqID, ActionCallOffer, 1)) {
		return
	}
	s.inflight++
	msg := &courierpb.CallSignalRequest{DeviceId: s.claims.DeviceID, Signal: sig}
	// No idempotency key: an offer or answer sent again is recognised by
	// its call id, and a candidate sent twice is harmless to ICE.
	s.requestRetrying(ctx, s.claims.UserID, msg, "", 0, func(reply proto.Message, err error) {
		s.inflight--
		r, _ := reply.(*courierpb.CallSignalReply)
		switch {
		case err != nil || r == nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "call signal not passed on, send it again", true))
		case r.Error != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
		default:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Ok{Ok: &courierpb.Ok{}}})
		}
	})
}

// callEvent queues a signal for this device. Not droppable: a lost answer
// or hangup would leave a call ringing or dead on screen.
func (s *session) callEvent(ctx actor.Context, ev *courierpb.CallEvent) {
	s.enqueue(ctx, &courierpb.ServerFrame{Body: &courierpb.ServerFrame_CallEvent{CallEvent: ev}})
}
