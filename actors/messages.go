package actors

import (
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/courierpb"
)

// Messages lists every message grains and sessions exchange, so a node can
// decode them from cluster Envelopes. A type missing here is refused by
// peers with an error, never a crash.
func Messages() []proto.Message {
	return []proto.Message{
		&courierpb.DeliverMessage{}, &courierpb.DeliverMessageReply{},
		&courierpb.DeliverReceipt{}, &courierpb.DeliverReceiptReply{},
		&courierpb.SendReadReceipt{},
		&courierpb.AttachDevice{}, &courierpb.AttachDeviceReply{},
		&courierpb.DetachDevice{}, &courierpb.DetachDeviceReply{},
		&courierpb.AckInbox{}, &courierpb.AckInboxReply{},
		&courierpb.PushEntries{}, &courierpb.SessionReplaced{},
		&courierpb.DeliverGroupEntries{}, &courierpb.DeliverGroupEntriesReply{},
		&courierpb.CreateGroup{}, &courierpb.CreateGroupReply{},
		&courierpb.UpdateGroup{}, &courierpb.UpdateGroupReply{},
		&courierpb.SendGroupMessage{}, &courierpb.SendGroupMessageReply{},
		&courierpb.GetGroupInfo{}, &courierpb.GetGroupInfoReply{},
		&courierpb.GetGroupMembers{}, &courierpb.GetGroupMembersReply{},
		&courierpb.GetGroupReceipts{}, &courierpb.GetGroupReceiptsReply{},
		&courierpb.GroupReceipt{}, &courierpb.GroupReceiptReply{},
		&courierpb.WakeGroup{}, &courierpb.WakeGroupReply{},
		&courierpb.UserSettings{}, &courierpb.UserSettingsReply{},
		&courierpb.WatchPresence{}, &courierpb.WatchPresenceReply{},
		&courierpb.TypingTo{}, &courierpb.TypingToReply{},
		&courierpb.GroupTyping{}, &courierpb.GroupTypingReply{},
		&courierpb.PresenceUpdate{}, &courierpb.PresenceGone{}, &courierpb.TypingNotice{},
		&courierpb.CreateLinkCode{}, &courierpb.CreateLinkCodeReply{},
		&courierpb.RedeemLinkCode{}, &courierpb.RedeemLinkCodeReply{},
		&courierpb.UnlinkDevice{}, &courierpb.UnlinkDeviceReply{},
		&courierpb.IdentityChanged{}, &courierpb.IdentityChangedReply{},
		&courierpb.StoreTranscript{}, &courierpb.StoreTranscriptReply{},
		&courierpb.CallSignalRequest{}, &courierpb.CallSignalReply{},
		&courierpb.PeerCallSignal{}, &courierpb.CallEvent{},
	}
}
