package client

import (
	"context"
	"fmt"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// Groups. A group has up to 1,024 members. Every message and every change
// (members, admins, subject, description, settings) gets a group_seq, and
// every member device receives them as inbox entries (IsGroupMessage,
// IsGroupEvent) in group_seq order, from the point it joined, with the same
// exactly-once resume as 1:1 messages. A group the user is not a member of
// answers NOT_FOUND, exactly like a group that does not exist.

// MaxGroupMembers is the largest group the server allows.
const MaxGroupMembers = 1024

// GroupInfo describes a group as one member sees it.
type GroupInfo struct {
	ID          string
	Subject     string
	Description string
	CreatorID   string
	CreatedAt   time.Time
	Settings    *courierpb.GroupSettings
	// SenderKeyEpoch changes whenever the membership does.
	SenderKeyEpoch uint64
	MemberCount    int
	// MyRole and JoinedSeq are the signed-in user's.
	MyRole    courierpb.GroupRole
	JoinedSeq uint64
	// Version is the group_seq of the group's latest change.
	Version uint64
	// Duplicate: CreateGroup found the group made by an earlier attempt.
	Duplicate bool
}

// IsAdmin reports whether the signed-in user administers the group.
func (g GroupInfo) IsAdmin() bool {
	return g.MyRole == courierpb.GroupRole_GROUP_ROLE_ADMIN || g.MyRole == courierpb.GroupRole_GROUP_ROLE_CREATOR
}

func groupInfoFromProto(p *courierpb.GroupInfo) GroupInfo {
	if p == nil {
		return GroupInfo{}
	}
	return GroupInfo{
		ID: p.GroupId, Subject: p.Subject, Description: p.Description, CreatorID: p.CreatorUserId,
		CreatedAt: time.UnixMilli(p.CreatedAtMs), Settings: p.Settings, SenderKeyEpoch: p.SenderKeyEpoch,
		MemberCount: int(p.MemberCount), MyRole: p.MyRole, JoinedSeq: p.JoinedGroupSeq, Version: p.Version,
		Duplicate: p.Duplicate,
	}
}

// GroupMember is one member of a group.
type GroupMember struct {
	UserID    string
	Role      courierpb.GroupRole
	JoinedSeq uint64
	AddedBy   string
}

// GroupReceipts says which members received and read one message.
type GroupReceipts struct {
	GroupID     string
	GroupSeq    uint64
	ClientMsgID string
	// Recipients is how many members the message went to (the sender
	// excluded) that are still members.
	Recipients   int
	DeliveredTo  []string
	ReadBy       []string
	DeliveredAll bool
	ReadAll      bool
}

// GroupUpdate is the outcome of a change.
type GroupUpdate struct {
	// Seq is the group_seq of the change's event; 0 when nothing changed
	// (e.g. adding a member twice).
	Seq uint64
	// Info is the group after the change (empty after leaving it).
	Info GroupInfo
}

// GroupOption adjusts CreateGroup.
type GroupOption func(*courierpb.GroupCreate)

// WithDescription sets the new group's description.
func WithDescription(d string) GroupOption {
	return func(c *courierpb.GroupCreate) { c.Description = d }
}

// WithGroupSettings sets who may send, edit the info and add members.
func WithGroupSettings(s *courierpb.GroupSettings) GroupOption {
	return func(c *courierpb.GroupCreate) { c.Settings = s }
}

// WithCreateID makes CreateGroup use this create_id instead of a fresh
// one: creating again with it returns the same group (Duplicate set).
func WithCreateID(id string) GroupOption {
	return func(c *courierpb.GroupCreate) { c.CreateId = id }
}

// call starts a request, retrying retryable errors until ctx ends, and
// waits for its answer.
func (c *Client) call(ctx context.Context, what string, body any) (*courierpb.ServerFrame, error) {
	cl := c.start(ctx, body, true)
	<-cl.done
	if cl.err != nil {
		return nil, fmt.Errorf("%s: %w", what, cl.err)
	}
	return cl.res, nil
}

// CreateGroup creates a group with the signed-in user as its creator (and
// admin) and memberIDs as members. Every member's devices get the creation
// event. A retry after a lost answer returns the same group.
func (c *Client) CreateGroup(ctx context.Context, subject string, memberIDs []string, opts ...GroupOption) (GroupInfo, error) {
	m := &courierpb.GroupCreate{Subject: subject, MemberUserIds: memberIDs}
	for _, o := range opts {
		o(m)
	}
	if m.CreateId == "" {
		m.CreateId = newMsgID()
	}
	if len(memberIDs) >= MaxGroupMembers {
		return GroupInfo{}, &Error{Code: courierpb.ErrorCode_GROUP_FULL, Message: fmt.Sprintf("a group has at most %d members", MaxGroupMembers)}
	}
	f, err := c.call(ctx, "create group", &courierpb.ClientFrame_GroupCreate{GroupCreate: m})
	if err != nil {
		return GroupInfo{}, err
	}
	if f.GetGroupInfo() == nil {
		return GroupInfo{}, fmt.Errorf("create group: unexpected answer %T", f.GetBody())
	}
	return groupInfoFromProto(f.GetGroupInfo()), nil
}

// updateGroup sends one change with a fresh op_id, so a retry after a lost
// answer is answered as the first attempt was.
func (c *Client) updateGroup(ctx context.Context, what string, u *courierpb.GroupUpdate) (GroupUpdate, error) {
	if u.GroupId == "" {
		return GroupUpdate{}, &Error{Code: courierpb.ErrorCode_INVALID_ARGUMENT, Message: "a group id is required"}
	}
	u.OpId = newMsgID()
	f, err := c.call(ctx, what, &courierpb.ClientFrame_GroupUpdate{GroupUpdate: u})
	if err != nil {
		return GroupUpdate{}, err
	}
	ok := f.GetGroupUpdateOk()
	if ok == nil {
		return GroupUpdate{}, fmt.Errorf("%s: unexpected answer %T", what, f.GetBody())
	}
	return GroupUpdate{Seq: ok.GroupSeq, Info: groupInfoFromProto(ok.Info)}, nil
}

// AddMembers adds users to a group (admins only, unless the group's
// settings let every member add). Users already in it are left alone. A
// group over 1,024 members refuses with GROUP_FULL.
func (c *Client) AddMembers(ctx context.Context, groupID string, userIDs ...string) (GroupUpdate, error) {
	return c.updateGroup(ctx, "add members", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: userIDs}}})
}

// RemoveMembers removes users from a group (admins only); they receive
// nothing sent after the removal.
func (c *Client) RemoveMembers(ctx context.Context, groupID string, userIDs ...string) (GroupUpdate, error) {
	return c.updateGroup(ctx, "remove members", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_RemoveMembers{RemoveMembers: &courierpb.GroupUserIds{UserIds: userIDs}}})
}

// Promote makes members admins (admins only).
func (c *Client) Promote(ctx context.Context, groupID string, userIDs ...string) (GroupUpdate, error) {
	return c.updateGroup(ctx, "promote", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_PromoteAdmins{PromoteAdmins: &courierpb.GroupUserIds{UserIds: userIDs}}})
}

// Demote makes admins plain members (admins only; never the creator).
func (c *Client) Demote(ctx context.Context, groupID string, userIDs ...string) (GroupUpdate, error) {
	return c.updateGroup(ctx, "demote", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_DemoteAdmins{DemoteAdmins: &courierpb.GroupUserIds{UserIds: userIDs}}})
}

// LeaveGroup leaves a group. When the last admin leaves, the longest
// standing member becomes admin.
func (c *Client) LeaveGroup(ctx context.Context, groupID string) error {
	_, err := c.updateGroup(ctx, "leave group", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}})
	return err
}

// SetSubject changes a group's subject.
func (c *Client) SetSubject(ctx context.Context, groupID, subject string) (GroupUpdate, error) {
	return c.updateGroup(ctx, "set subject", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_Subject{Subject: subject}})
}

// SetDescription changes a group's description.
func (c *Client) SetDescription(ctx context.Context, groupID, description string) (GroupUpdate, error) {
	return c.updateGroup(ctx, "set description", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_Description{Description: description}})
}

// SetGroupSettings changes who may send, edit the info and add members
// (admins only).
func (c *Client) SetGroupSettings(ctx context.Context, groupID string, s *courierpb.GroupSettings) (GroupUpdate, error) {
	return c.updateGroup(ctx, "set group settings", &courierpb.GroupUpdate{GroupId: groupID,
		Change: &courierpb.GroupUpdate_Settings{Settings: s}})
}

// ListGroups returns the groups the signed-in user is a member of.
func (c *Client) ListGroups(ctx context.Context) ([]GroupInfo, error) {
	f, err := c.call(ctx, "list groups", &courierpb.ClientFrame_GroupList{GroupList: &courierpb.GroupListRequest{}})
	if err != nil {
		return nil, err
	}
	l := f.GetGroupList()
	if l == nil {
		return nil, fmt.Errorf("list groups: unexpected answer %T", f.GetBody())
	}
	out := make([]GroupInfo, 0, len(l.Groups))
	for _, g := range l.Groups {
		out = append(out, groupInfoFromProto(g))
	}
	return out, nil
}

// GroupInfo returns a group's info.
func (c *Client) GroupInfo(ctx context.Context, groupID string) (GroupInfo, error) {
	f, err := c.call(ctx, "group info", &courierpb.ClientFrame_GroupInfo{GroupInfo: &courierpb.GroupInfoRequest{GroupId: groupID}})
	if err != nil {
		return GroupInfo{}, err
	}
	if f.GetGroupInfo() == nil {
		return GroupInfo{}, fmt.Errorf("group info: unexpected answer %T", f.GetBody())
	}
	return groupInfoFromProto(f.GetGroupInfo()), nil
}

// GroupMembers returns a group's members.
func (c *Client) GroupMembers(ctx context.Context, groupID string) ([]GroupMember, error) {
	f, err := c.call(ctx, "group members", &courierpb.ClientFrame_GroupMembers{GroupMembers: &courierpb.GroupMembersRequest{GroupId: groupID}})
	if err != nil {
		return nil, err
	}
	l := f.GetGroupMemberList()
	if l == nil {
		return nil, fmt.Errorf("group members: unexpected answer %T", f.GetBody())
	}
	out := make([]GroupMember, 0, len(l.Members))
	for _, m := range l.Members {
		out = append(out, GroupMember{UserID: m.UserId, Role: m.Role, JoinedSeq: m.JoinedGroupSeq, AddedBy: m.AddedByUserId})
	}
	return out, nil
}

// GroupSendOption adjusts one SendGroup.
type GroupSendOption func(*courierpb.GroupSend)

// WithGroupContentType sets the content type hint of a group message.
func WithGroupContentType(ct string) GroupSendOption {
	return func(s *courierpb.GroupSend) { s.ContentType = ct }
}

// WithMemberCiphertext sets the ciphertext for one device of one member;
// other devices get the SendGroup's ciphertext.
func WithMemberCiphertext(userID string, deviceID uint32, ciphertext []byte) GroupSendOption {
	return func(s *courierpb.GroupSend) {
		s.PerDevice = append(s.PerDevice, &courierpb.GroupDeviceCiphertext{UserId: userID, DeviceId: deviceID, Ciphertext: ciphertext})
	}
}

// WithSenderKeyEpoch records the sender-key epoch the message was
// encrypted for.
func WithSenderKeyEpoch(epoch uint64) GroupSendOption {
	return func(s *courierpb.GroupSend) { s.SenderKeyEpoch = epoch }
}

// WithGroupClientMsgID makes SendGroup use this client_msg_id.
func WithGroupClientMsgID(id string) GroupSendOption {
	return func(s *courierpb.GroupSend) { s.ClientMsgId = id }
}

// SendGroup stores a message in a group and returns on the single tick
// (SendResult.GroupSeq is its place in the group's order); the server then
// delivers it to every member in the background. Like Send, it retries
// with the same client_msg_id until ctx ends, so the message is stored
// once.
//
// With WithE2EE, ciphertext is the plaintext: it is encrypted under this
// device's sender key for the group's current epoch (distributed to the
// members first when new) and the epoch is rotated automatically when the
// membership changed.
func (c *Client) SendGroup(ctx context.Context, groupID string, ciphertext []byte, opts ...GroupSendOption) (SendResult, error) {
	if c.enc != nil {
		s := &courierpb.GroupSend{GroupId: groupID}
		for _, o := range opts {
			o(s)
		}
		fresh := s.ClientMsgId == ""
		if fresh {
			s.ClientMsgId = newMsgID()
		}
		if err := validateGroupSend(&courierpb.GroupSend{GroupId: groupID, ClientMsgId: s.ClientMsgId, ContentType: s.ContentType, Ciphertext: ciphertext}); err != nil {
			return SendResult{ClientMsgID: s.ClientMsgId}, err
		}
		return c.sendGroupEncrypted(ctx, s, ciphertext, fresh)
	}
	return c.SendGroupAsync(ctx, groupID, ciphertext, opts...).Result()
}

// SendGroupAsync starts a SendGroup without waiting for the single tick.
func (c *Client) SendGroupAsync(ctx context.Context, groupID string, ciphertext []byte, opts ...GroupSendOption) *PendingSend {
	s := &courierpb.GroupSend{GroupId: groupID, Ciphertext: ciphertext}
	for _, o := range opts {
		o(s)
	}
	fresh := s.ClientMsgId == ""
	if fresh {
		s.ClientMsgId = newMsgID()
	}
	if err := validateGroupSend(s); err != nil {
		return &PendingSend{id: s.ClientMsgId, cl: failedCall(err)}
	}
	return c.groupSendFrame(ctx, s, fresh)
}

// groupSendFrame starts a GroupSend; first: see startCall.
func (c *Client) groupSendFrame(ctx context.Context, s *courierpb.GroupSend, first bool) *PendingSend {
	return &PendingSend{id: s.ClientMsgId, cl: c.startCall(ctx, &courierpb.ClientFrame_GroupSend{GroupSend: s}, true, first)}
}

func validateGroupSend(s *courierpb.GroupSend) error {
	if s.GroupId == "" {
		return invalidArgument("a group id is required")
	}
	return validatePayload(s.ClientMsgId, s.ContentType, s.Ciphertext, len(s.PerDevice))
}

// MarkGroupRead tells a group that the signed-in user read its messages up
// to and including upToSeq (a group_seq). When every member has read a
// message, its sender gets an IsGroupRead entry.
func (c *Client) MarkGroupRead(ctx context.Context, groupID string, upToSeq uint64) error {
	if groupID == "" || upToSeq == 0 {
		return &Error{Code: courierpb.ErrorCode_INVALID_ARGUMENT, Message: "a group id and a group_seq are required"}
	}
	c.flushAcks() // delivered before read, usually
	_, err := c.call(ctx, "mark group read", &courierpb.ClientFrame_GroupRead{GroupRead: &courierpb.GroupReadReceipt{GroupId: groupID, UpToGroupSeq: upToSeq}})
	return err
}

// GroupReceipts returns which members received and read one of the
// signed-in user's recent group messages (by its group_seq). Older
// messages answer NOT_FOUND.
func (c *Client) GroupReceipts(ctx context.Context, groupID string, groupSeq uint64) (GroupReceipts, error) {
	f, err := c.call(ctx, "group receipts", &courierpb.ClientFrame_GroupReceipts{GroupReceipts: &courierpb.GroupReceiptsRequest{GroupId: groupID, GroupSeq: groupSeq}})
	if err != nil {
		return GroupReceipts{}, err
	}
	r := f.GetGroupReceipts()
	if r == nil {
		return GroupReceipts{}, fmt.Errorf("group receipts: unexpected answer %T", f.GetBody())
	}
	return GroupReceipts{
		GroupID: r.GroupId, GroupSeq: r.GroupSeq, ClientMsgID: r.ClientMsgId, Recipients: int(r.Recipients),
		DeliveredTo: r.DeliveredUserIds, ReadBy: r.ReadUserIds, DeliveredAll: r.DeliveredAll, ReadAll: r.ReadAll,
	}, nil
}
