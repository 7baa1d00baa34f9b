package actors

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bounds on every string a client can put in a frame. They live here, in
// one table, because the grains enforce them on what they store and the
// gateway refuses a frame that breaks any of them before it reaches a
// grain (CheckFrameBounds): an over-long id would otherwise become a map
// key, a grain identity or a stored entry.
const (
	// MaxUserIDLen bounds a user id: ids are 36-byte UUIDs, so a longer
	// one names nobody.
	MaxUserIDLen = 64
	// MaxHandleLen bounds a handle (the gateway's handle pattern allows 64).
	MaxHandleLen           = 64
	MaxClientMsgIDLen      = 128
	MaxContentTypeLen      = 64
	MaxGroupIDLen          = 128
	MaxGroupSubjectLen     = 128
	MaxGroupDescriptionLen = 2048
	MaxPushTokenLen        = 4096
	// MaxCallIDLen bounds a call id (a UUID is 36 bytes).
	MaxCallIDLen = 64
	// MaxCallPayload bounds one call signal's ciphertext (an SDP offer is
	// a few KiB; video with many codecs stays well under this).
	MaxCallPayload = 64 << 10
)

// frameStringLimits bounds each string field reachable from a
// ClientFrame, by full field name (repeated fields: each element). A
// field missing here falls back to defaultStringLimit, and
// TestEveryClientFrameStringIsBounded fails until it is listed.
var frameStringLimits = map[protoreflect.FullName]int{
	"courier.v1.Send.client_msg_id":             MaxClientMsgIDLen,
	"courier.v1.Send.to_user_id":                MaxUserIDLen,
	"courier.v1.Send.content_type":              MaxContentTypeLen,
	"courier.v1.ReadReceipt.peer_user_id":       MaxUserIDLen,
	"courier.v1.ReadReceipt.client_msg_ids":     MaxClientMsgIDLen,
	"courier.v1.GroupCreate.create_id":          MaxClientMsgIDLen,
	"courier.v1.GroupCreate.subject":            MaxGroupSubjectLen,
	"courier.v1.GroupCreate.description":        MaxGroupDescriptionLen,
	"courier.v1.GroupCreate.member_user_ids":    MaxUserIDLen,
	"courier.v1.GroupUpdate.group_id":           MaxGroupIDLen,
	"courier.v1.GroupUpdate.op_id":              MaxClientMsgIDLen,
	"courier.v1.GroupUpdate.subject":            MaxGroupSubjectLen,
	"courier.v1.GroupUpdate.description":        MaxGroupDescriptionLen,
	"courier.v1.GroupUserIds.user_ids":          MaxUserIDLen,
	"courier.v1.GroupSend.client_msg_id":        MaxClientMsgIDLen,
	"courier.v1.GroupSend.group_id":             MaxGroupIDLen,
	"courier.v1.GroupSend.content_type":         MaxContentTypeLen,
	"courier.v1.GroupDeviceCiphertext.user_id":  MaxUserIDLen,
	"courier.v1.GroupInfoRequest.group_id":      MaxGroupIDLen,
	"courier.v1.GroupMembersRequest.group_id":   MaxGroupIDLen,
	"courier.v1.GroupReceiptsRequest.group_id":  MaxGroupIDLen,
	"courier.v1.GroupReadReceipt.group_id":      MaxGroupIDLen,
	"courier.v1.ContactsUpdate.add_user_ids":    MaxUserIDLen,
	"courier.v1.ContactsUpdate.add_handles":     MaxHandleLen,
	"courier.v1.ContactsUpdate.remove_user_ids": MaxUserIDLen,
	"courier.v1.BlockUpdate.user_id":            MaxUserIDLen,
	"courier.v1.PresenceSubscribe.user_ids":     MaxUserIDLen,
	"courier.v1.PresenceUnsubscribe.user_ids":   MaxUserIDLen,
	"courier.v1.Typing.to_user_id":              MaxUserIDLen,
	"courier.v1.Typing.group_id":                MaxGroupIDLen,
	"courier.v1.PushTokenUpdate.token":          MaxPushTokenLen,
	"courier.v1.CallSignal.call_id":             MaxCallIDLen,
	"courier.v1.CallSignal.peer_user_id":        MaxUserIDLen,
}

// defaultStringLimit bounds a string field added to the protocol without
// an entry in frameStringLimits: the size of an id.
const defaultStringLimit = MaxClientMsgIDLen

// FrameBoundsError names the field of a frame that is too long. Its text
// quotes the schema, never the client's bytes.
type FrameBoundsError struct {
	Field protoreflect.FullName
	Limit int
}

func (e *FrameBoundsError) Error() string {
	return fmt.Sprintf("%s must be at most %d bytes", e.Field.Name(), e.Limit)
}

// CheckFrameBounds reports the first string field of m (walked through
// nested messages and repeated fields) longer than its bound in
// frameStringLimits, as a *FrameBoundsError; nil when all fit. Bytes
// fields (ciphertexts) are bounded by the frame size instead.
func CheckFrameBounds(m proto.Message) error {
	return checkBounds(m.ProtoReflect())
}

func checkBounds(m protoreflect.Message) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			// ClientFrame has no maps; a new one is bounded by frame size
			// until it is listed.
		case fd.Kind() == protoreflect.StringKind && fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = checkString(fd, l.Get(i).String())
			}
		case fd.Kind() == protoreflect.StringKind:
			err = checkString(fd, v.String())
		case fd.Kind() == protoreflect.MessageKind && fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = checkBounds(l.Get(i).Message())
			}
		case fd.Kind() == protoreflect.MessageKind:
			err = checkBounds(v.Message())
		}
		return err == nil
	})
	return err
}

func checkString(fd protoreflect.FieldDescriptor, s string) error {
	limit, ok := frameStringLimits[fd.FullName()]
	if !ok {
		limit = defaultStringLimit
	}
	if len(s) > limit {
		return &FrameBoundsError{Field: fd.FullName(), Limit: limit}
	}
	return nil
}
