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
		&courierpb.AttachDevice{}, &courierpb.AttachDeviceReply{},
		&courierpb.DetachDevice{}, &courierpb.DetachDeviceReply{},
		&courierpb.AckInbox{}, &courierpb.AckInboxReply{},
		&courierpb.PushEntries{}, &courierpb.SessionReplaced{},
	}
}
