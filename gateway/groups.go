package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Group frames: each becomes a request to Group(group_id), made as the
// authenticated device; the grain decides what the device may see or do.

// handleGroupFrame serves the group frames; it reports false for any
// other frame.
func (s *session) handleGroupFrame(ctx actor.Context, f *courierpb.ClientFrame) bool {
	switch b := f.Body.(type) {
	case *courierpb.ClientFrame_GroupCreate:
		s.groupCreate(ctx, f.ReqId, b.GroupCreate)
	case *courierpb.ClientFrame_GroupUpdate:
		s.groupUpdate(ctx, f.ReqId, b.GroupUpdate)
	case *courierpb.ClientFrame_GroupSend:
		s.groupSend(ctx, f.ReqId, b.GroupSend, f.FirstTransmission)
	case *courierpb.ClientFrame_GroupInfo:
		s.groupInfo(ctx, f.ReqId, b.GroupInfo)
	case *courierpb.ClientFrame_GroupList:
		s.groupList(ctx, f.ReqId)
	case *courierpb.ClientFrame_GroupMembers:
		s.groupMembers(ctx, f.ReqId, b.GroupMembers)
	case *courierpb.ClientFrame_GroupReceipts:
		s.groupReceipts(ctx, f.ReqId, b.GroupReceipts)
	case *courierpb.ClientFrame_GroupRead:
		s.groupRead(ctx, f.ReqId, b.GroupRead)
	default:
		return false
	}
	return true
}

func validGroupID(id string) bool { return id != "" && len(id) <= actors.MaxGroupIDLen }

const badGroupID = "group_id is required (at most 128 bytes)"

// groupCall sends one request to a group grain and answers the frame:
// errOf extracts the grain's error from its reply, ok builds the success.
func (s *session) groupCall(ctx actor.Context, reqID uint64, groupID string, msg proto.Message, key string, unavailable string,
	errOf func(proto.Message) *courierpb.Error, ok func(proto.Message) *courierpb.ServerFrame) {
	if !s.admit(ctx, reqID) {
		return
	}
	s.inflight++
	s.groupRequest(ctx, groupID, msg, key, 0, func(reply proto.Message, err error) {
		s.inflight--
		if err == nil && reply.ProtoReflect().Descriptor() != replyTypeOf(msg) {
			err = fmt.Errorf("group grain answered %T to %T", reply, msg)
			s.logger().Error("unexpected grain reply", "err", err)
		}
		switch {
		case err != nil:
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, unavailable, true))
		case errOf(reply) != nil:
			s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: errOf(reply)}})
		default:
			f := ok(reply)
			f.ReqId = reqID
			s.enqueue(ctx, f)
		}
	})
}

// replyTypeOf is the reply type a group request expects, so an answer of
// another type is refused instead of crashing the session.
func replyTypeOf(req proto.Message) protoreflect.MessageDescriptor {
	var r proto.Message
	switch req.(type) {
	case *courierpb.CreateGroup:
		r = &courierpb.CreateGroupReply{}
	case *courierpb.UpdateGroup:
		r = &courierpb.UpdateGroupReply{}
	case *courierpb.SendGroupMessage:
		r = &courierpb.SendGroupMessageReply{}
	case *courierpb.GetGroupInfo:
		r = &courierpb.GetGroupInfoReply{}
	case *courierpb.GetGroupMembers:
		r = &courierpb.GetGroupMembersReply{}
	case *courierpb.GetGroupReceipts:
		r = &courierpb.GetGroupReceiptsReply{}
	case *courierpb.GroupReceipt:
		r = &courierpb.GroupReceiptReply{}
	default:
		return nil
	}
	return r.ProtoReflect().Descriptor()
}

// groupRequest is requestRetrying for a Group grain.
func (s *session) groupRequest(ctx actor.Context, groupID string, msg proto.Message, key string, attempt int, done func(proto.Message, error)) {
	s.g.cfg.Cluster.RequestAsync(ctx, actors.GroupGrainID(groupID), msg, key, s.g.cfg.RequestTimeout, func(reply proto.Message, err error) {
		if err != nil && attempt < s.g.cfg.RequestRetries && !s.stopping {
			s.groupRequest(ctx, groupID, asResend(msg), key, attempt+1, done)
			return
		}
		done(reply, err)
	})
}

func (s *session) groupCreate(ctx actor.Context, reqID uint64, m *courierpb.GroupCreate) {
	switch {
	case m.CreateId == "" || len(m.CreateId) > actors.MaxClientMsgIDLen:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("create_id must be 1..%d bytes", actors.MaxClientMsgIDLen))
		return
	case len(m.Subject) > actors.MaxGroupSubjectLen || len(m.Description) > actors.MaxGroupDescriptionLen:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("subject and description must be at most %d and %d bytes", actors.MaxGroupSubjectLen, actors.MaxGroupDescriptionLen))
		return
	case len(m.MemberUserIds) >= actors.MaxGroupMembers:
		s.refuse(ctx, reqID, courierpb.ErrorCode_GROUP_FULL, fmt.Sprintf("a group has at most %d members", actors.MaxGroupMembers))
		return
	}
	if !s.limitAction(ctx, reqID, ActionGroupCreate, 1) || !s.limitAction(ctx, reqID, ActionGroupAdd, len(m.MemberUserIds)) {
		return
	}
	groupID := actors.GroupIDFor(s.claims.UserID, m.CreateId)
	msg := &courierpb.CreateGroup{GroupId: groupID, UserId: s.claims.UserID, DeviceId: s.claims.DeviceID, Create: m}
	s.groupCall(ctx, reqID, groupID, msg, s.claims.UserID+"/group-create/"+m.CreateId, "group not created, retry with the same create_id",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.CreateGroupReply).GetError() },
		func(r proto.Message) *courierpb.ServerFrame {
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_GroupInfo{GroupInfo: r.(*courierpb.CreateGroupReply).GetInfo()}}
		})
}

func (s *session) groupUpdate(ctx actor.Context, reqID uint64, m *courierpb.GroupUpdate) {
	switch {
	case !validGroupID(m.GroupId):
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, badGroupID)
		return
	case m.Change == nil:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "a group update names one change")
		return
	case len(m.OpId) > actors.MaxClientMsgIDLen:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("op_id must be at most %d bytes", actors.MaxClientMsgIDLen))
		return
	}
	if add := m.GetAddMembers(); add != nil && !s.limitAction(ctx, reqID, ActionGroupAdd, len(add.UserIds)) {
		return
	}
	key := fmt.Sprintf("%s/group-update/%d", s.id, reqID)
	if m.OpId != "" {
		key = s.claims.UserID + "/group-update/" + m.OpId
	}
	msg := &courierpb.UpdateGroup{GroupId: m.GroupId, UserId: s.claims.UserID, DeviceId: s.claims.DeviceID, Update: m}
	s.groupCall(ctx, reqID, m.GroupId, msg, key, "group not changed, retry",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.UpdateGroupReply).GetError() },
		func(r proto.Message) *courierpb.ServerFrame {
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_GroupUpdateOk{GroupUpdateOk: r.(*courierpb.UpdateGroupReply).GetOk()}}
		})
}

func (s *session) groupSend(ctx actor.Context, reqID uint64, m *courierpb.GroupSend, first bool) {
	switch {
	case !validGroupID(m.GroupId):
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, badGroupID)
		return
	case m.ClientMsgId == "" || len(m.ClientMsgId) > actors.MaxClientMsgIDLen:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("client_msg_id must be 1..%d bytes", actors.MaxClientMsgIDLen))
		return
	case len(m.Ciphertext) == 0 && len(m.PerDevice) == 0:
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "a message needs a ciphertext")
		return
	}
	if s.g.cfg.RequireE2EE {
		if why := groupE2EERefusal(m); why != "" {
			s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, why)
			return
		}
	}
	if !s.limitAction(ctx, reqID, ActionSend, 1) || !s.limitAction(ctx, reqID, ActionSendBytes, s.frameSize) {
		return
	}
	msg := &courierpb.SendGroupMessage{UserId: s.claims.UserID, DeviceId: s.claims.DeviceID, Send: m, FirstTransmission: first}
	key := s.claims.UserID + "/group/" + m.GroupId + "/" + m.ClientMsgId
	s.groupCall(ctx, reqID, m.GroupId, msg, key, "message not stored, retry with the same client_msg_id",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.SendGroupMessageReply).GetError() },
		func(r proto.Message) *courierpb.ServerFrame {
			sr := r.(*courierpb.SendGroupMessageReply)
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_SendAck{SendAck: &courierpb.SendAck{
				ClientMsgId: m.ClientMsgId, StoredAtMs: sr.StoredAtMs, Duplicate: sr.Duplicate, GroupId: m.GroupId, GroupSeq: sr.GroupSeq,
			}}}
		})
}

func (s *session) groupInfo(ctx actor.Context, reqID uint64, m *courierpb.GroupInfoRequest) {
	if !validGroupID(m.GroupId) {
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, badGroupID)
		return
	}
	msg := &courierpb.GetGroupInfo{GroupId: m.GroupId, UserId: s.claims.UserID}
	s.groupCall(ctx, reqID, m.GroupId, msg, fmt.Sprintf("%s/group-info/%d", s.id, reqID), "group unavailable, retry",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.GetGroupInfoReply).GetError() },
		func(r proto.Message) *courierpb.ServerFrame {
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_GroupInfo{GroupInfo: r.(*courierpb.GetGroupInfoReply).GetInfo()}}
		})
}

func (s *session) groupMembers(ctx actor.Context, reqID uint64, m *courierpb.GroupMembersRequest) {
	if !validGroupID(m.GroupId) {
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, badGroupID)
		return
	}
	msg := &courierpb.GetGroupMembers{GroupId: m.GroupId, UserId: s.claims.UserID}
	s.groupCall(ctx, reqID, m.GroupId, msg, fmt.Sprintf("%s/group-members/%d", s.id, reqID), "group unavailable, retry",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.GetGroupMembersReply).GetError() },
		func(r proto.Message) *courierpb.ServerFrame {
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_GroupMemberList{GroupMemberList: r.(*courierpb.GetGroupMembersReply).GetMembers()}}
		})
}

func (s *session) groupReceipts(ctx actor.Context, reqID uint64, m *courierpb.GroupReceiptsRequest) {
	if !validGroupID(m.GroupId) || m.GroupSeq == 0 {
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "group_id and group_seq are required")
		return
	}
	msg := &courierpb.GetGroupReceipts{GroupId: m.GroupId, UserId: s.claims.UserID, GroupSeq: m.GroupSeq}
	s.groupCall(ctx, reqID, m.GroupId, msg, fmt.Sprintf("%s/group-receipts/%d", s.id, reqID), "group unavailable, retry",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.GetGroupReceiptsReply).GetError() },
		func(r proto.Message) *courierpb.ServerFrame {
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_GroupReceipts{GroupReceipts: r.(*courierpb.GetGroupReceiptsReply).GetReceipts()}}
		})
}

func (s *session) groupRead(ctx actor.Context, reqID uint64, m *courierpb.GroupReadReceipt) {
	if !validGroupID(m.GroupId) || m.UpToGroupSeq == 0 {
		s.refuse(ctx, reqID, courierpb.ErrorCode_INVALID_ARGUMENT, "group_id and up_to_group_seq are required")
		return
	}
	msg := &courierpb.GroupReceipt{GroupId: m.GroupId, UserId: s.claims.UserID, Kind: courierpb.EntryKind_ENTRY_KIND_READ, UpToGroupSeq: m.UpToGroupSeq}
	s.groupCall(ctx, reqID, m.GroupId, msg, fmt.Sprintf("%s/group-read/%d", s.id, reqID), "receipt not stored, send it again",
		func(r proto.Message) *courierpb.Error { return r.(*courierpb.GroupReceiptReply).GetError() },
		func(proto.Message) *courierpb.ServerFrame {
			return &courierpb.ServerFrame{Body: &courierpb.ServerFrame_ReadOk{ReadOk: &courierpb.ReadOk{}}}
		})
}

// groupList reads the user's groups from the store's index and asks each
// group for its info (as this user) off the session's mailbox.
func (s *session) groupList(ctx actor.Context, reqID uint64) {
	if s.g.cfg.Groups == nil {
		s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "this server keeps no groups", false))
		return
	}
	if !s.admit(ctx, reqID) {
		return
	}
	s.inflight++
	timeout := 3 * s.g.cfg.RequestTimeout
	groups, cl, user := s.g.cfg.Groups, s.g.cfg.Cluster, s.claims.UserID
	cluster.RunAsync(ctx, context.Background(), timeout, func(c context.Context) (any, error) {
		return listGroups(c, groups, cl, user)
	}, func(res any, err error) {
		s.inflight--
		if err != nil {
			s.logger().Warn("list groups failed", "err", err)
			s.enqueue(ctx, frameError(reqID, courierpb.ErrorCode_UNAVAILABLE, "groups unavailable, retry", true))
			return
		}
		s.enqueue(ctx, &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_GroupList{GroupList: &courierpb.GroupList{Groups: res.([]*courierpb.GroupInfo)}}})
	})
}

// listGroups returns the info of every group userID is a member of.
func listGroups(ctx context.Context, groups persistence.GroupStore, cl *cluster.Cluster, userID string) ([]*courierpb.GroupInfo, error) {
	ids, err := groups.ListUserGroups(ctx, userID)
	if err != nil {
		return nil, err
	}
	var (
		mu   sync.Mutex
		out  []*courierpb.GroupInfo
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, 16)
	)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			reply, err := cl.Request(ctx, actors.GroupGrainID(id), &courierpb.GetGroupInfo{GroupId: id, UserId: userID}, "")
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			r, _ := reply.(*courierpb.GetGroupInfoReply)
			switch {
			case r.GetError() == nil && r.GetInfo() != nil:
				out = append(out, r.Info)
			case r.GetError().GetCode() == courierpb.ErrorCode_NOT_FOUND:
				// Left since the index was read.
			default:
				errs = append(errs, errors.New(r.GetError().GetMessage()))
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	slices.SortFunc(out, func(a, b *courierpb.GroupInfo) int {
		return cmp.Or(cmp.Compare(a.CreatedAtMs, b.CreatedAtMs), cmp.Compare(a.GroupId, b.GroupId))
	})
	return out, nil
}
