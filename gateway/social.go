package gateway

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/protos/courierpb"
)

// Contacts, blocks, privacy and push tokens are requests to the device's own
// User grain; presence subscriptions and typing go to the grains of the
// users (or the group) concerned.

// Limits on one session's presence subscriptions.
const (
	MaxPresenceSubscriptions = 1024
	maxIDsPerFrame           = 256
	// typingTimeout bounds how long an undelivered indicator is tracked.
	typingTimeout = 2 * time.Second
)

func (s *session) handleSocialFrame(ctx actor.Context, f *courierpb.ClientFrame) bool {
	switch b := f.Body.(type) {
	case *courierpb.ClientFrame_ContactsUpdate:
		if !s.limitAction(ctx, f.ReqId, ActionContactAdd, len(b.ContactsUpdate.AddUserIds)+len(b.ContactsUpdate.AddHandles)) {
			return true
		}
		s.settings(ctx, f.ReqId, &courierpb.UserSettings{Op: &courierpb.UserSettings_Contacts{Contacts: b.ContactsUpdate}})
	case *courierpb.ClientFrame_Contacts:
		s.settings(ctx, f.ReqId, &courierpb.UserSettings{Op: &courierpb.UserSettings_List{List: b.Contacts}})
	case *courierpb.ClientFrame_Block:
		s.settings(ctx, f.ReqId, &courierpb.UserSettings{Op: &courierpb.UserSettings_Block{Block: b.Block}})
	case *courierpb.ClientFrame_Privacy:
		s.settings(ctx, f.ReqId, &courierpb.UserSettings{Op: &courierpb.UserSettings_Privacy{Privacy: b.Privacy}})
	case *courierpb.ClientFrame_PushToken:
		s.settings(ctx, f.ReqId, &courierpb.UserSettings{Op: &courierpb.UserSettings_PushToken{PushToken: b.PushToken}})
	case *courierpb.ClientFrame_PresenceSubscribe:
		s.presenceSubscribe(ctx, f.ReqId, b.PresenceSubscribe.GetUserIds(), false)
	case *courierpb.ClientFrame_PresenceUnsubscribe:
		s.presenceSubscribe(ctx, f.ReqId, b.PresenceUnsubscribe.GetUserIds(), true)
	case *courierpb.ClientFrame_Typing:
		s.typing(ctx, f.ReqId, b.Typing)
	default:
		return false
	}
	return true
}

// settings asks the user's own grain; contact and block changes are answered
// with the contact list, the others with ok.
func (s *session) settings(ctx actor.Context, reqID uint64, msg *courierpb.UserSettings) {
	if !s.admit(ctx, reqID) {
		return
	}
	msg.DeviceId = s.claims.DeviceID
	s.inflight++
	s.requestRetrying(ctx, s.claims.UserID, msg, "", 0, func(reply proto.Message, err error) {
		s.inflight--
		r, _ := reply.(*courierpb.UserSettingsReply)
		switch {
		case err != nil || r == nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "settings not changed, retry", true))
			return
		case r.Error != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: r.Error}})
			return
		}
		switch msg.Op.(type) {
		case *courierpb.UserSettings_Contacts, *courierpb.UserSettings_List, *courierpb.UserSettings_Block:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_ContactList{ContactList: r.Contacts}})
		default:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Ok{Ok: &courierpb.Ok{}}})
		}
		s.setVisibility(ctx, r.PresenceVisibility)
	})
}

// setVisibility records the user's presence visibility; when it changed,
// the session's subscriptions are renewed with it (hiding one's own
// presence hides everyone else's from oneself).
func (s *session) setVisibility(ctx actor.Context, v courierpb.Visibility) {
	if v == s.visibility {
		return
	}
	s.visibility = v
	s.renewPresence(ctx)
}

func (s *session) presenceSubscribe(ctx actor.Context, reqID uint64, ids []string, unwatch bool) {
	switch {
	case len(ids) == 0 || len(ids) > maxIDsPerFrame:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("name 1..%d user ids", maxIDsPerFrame))
		return
	case !unwatch && len(s.subs)+len(ids) > MaxPresenceSubscriptions:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("at most %d presence subscriptions per connection", MaxPresenceSubscriptions))
		return
	}
	if !unwatch && !s.limitAction(ctx, reqID, ActionPresenceWatch, len(ids)) {
		return
	}
	for _, id := range ids {
		if id == "" || id == s.claims.UserID {
			continue
		}
		if unwatch {
			if !s.subs[id] {
				continue
			}
			delete(s.subs, id)
		} else {
			if s.subs == nil {
				s.subs = make(map[string]bool)
			}
			s.subs[id] = true
		}
		s.watch(id, unwatch)
	}
	s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Ok{Ok: &courierpb.Ok{}}})
}

// watch tells one user's grain about this subscription. Fire and forget:
// the renewal every lease period repairs one that was lost (the grain moved
// or passivated).
func (s *session) watch(userID string, unwatch bool) {
	_ = s.g.cfg.Cluster.Notify(actors.UserGrainID(userID), &courierpb.WatchPresence{
		ViewerUserId: s.claims.UserID, SessionAddress: s.self.Address, SessionId: s.id,
		ViewerVisibility: s.visibility, Unwatch: unwatch,
	}, "", 0)
}

// renewPresence re-sends every subscription; it runs with the lease renewal.
func (s *session) renewPresence(actor.Context) {
	for id := range s.subs {
		s.watch(id, false)
	}
}

func (s *session) typing(ctx actor.Context, reqID uint64, t *courierpb.Typing) {
	switch {
	case (t.GetToUserId() == "") == (t.GetGroupId() == ""):
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "typing names exactly one of to_user_id and group_id")
		return
	case t.State != courierpb.TypingState_TYPING_STATE_TYPING && t.State != courierpb.TypingState_TYPING_STATE_PAUSED:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "typing state must be TYPING or PAUSED")
		return
	case t.GroupId != "" && !validGroupID(t.GroupId):
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, badGroupID)
		return
	}
	// One-way: an indicator is worth nothing late, so it is never retried.
	if t.GroupId != "" {
		_ = s.g.cfg.Cluster.Notify(actors.GroupGrainID(t.GroupId), &courierpb.GroupTyping{
			GroupId: t.GroupId, FromUserId: s.claims.UserID, FromDeviceId: s.claims.DeviceID, State: t.State,
		}, "", typingTimeout)
		return
	}
	_ = s.g.cfg.Cluster.Notify(actors.UserGrainID(t.ToUserId), &courierpb.TypingTo{
		FromUserId: s.claims.UserID, FromDeviceId: s.claims.DeviceID, State: t.State,
	}, "", typingTimeout)
}

// enqueueDroppable queues an ephemeral frame (presence, typing) only while
// the send queue is less than half full: under backpressure these are the
// first to go, and they never get a client disconnected.
func (s *session) enqueueDroppable(ctx actor.Context, f *courierpb.ServerFrame) {
	if s.stopping || s.out.len() >= s.g.cfg.SendQueue/2 {
		s.g.droppedEphemeral.Add(1)
		return
	}
	s.enqueue(ctx, f)
}
