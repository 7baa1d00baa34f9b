package gateway

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/courierpb"
)

func TestAResendNeverClaimsToBeAFirstTransmission(t *testing.T) {
	send := &courierpb.Send{ClientMsgId: "m1", ToUserId: "bob", Ciphertext: []byte("ct")}
	group := &courierpb.GroupSend{ClientMsgId: "g1", GroupId: "grp", Ciphertext: []byte("ct")}
	tests := []struct {
		name string
		msg  proto.Message
		want proto.Message
	}{
		{"1:1 first", &courierpb.DeliverMessage{FromUserId: "alice", Send: send, FirstTransmission: true},
			&courierpb.DeliverMessage{FromUserId: "alice", Send: send}},
		{"1:1 resend", &courierpb.DeliverMessage{FromUserId: "alice", Send: send},
			&courierpb.DeliverMessage{FromUserId: "alice", Send: send}},
		{"group first", &courierpb.SendGroupMessage{UserId: "alice", Send: group, FirstTransmission: true},
			&courierpb.SendGroupMessage{UserId: "alice", Send: group}},
		{"other requests pass unchanged", &courierpb.AckInbox{DeviceId: 1, UpToInboxSeq: 9},
			&courierpb.AckInbox{DeviceId: 1, UpToInboxSeq: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := proto.Clone(tt.msg)
			got := asResend(tt.msg)
			if !proto.Equal(got, tt.want) {
				t.Errorf("asResend = %v, want %v", got, tt.want)
			}
			if !proto.Equal(tt.msg, orig) {
				t.Errorf("asResend changed the first attempt's message (a local grain may be reading it): %v", tt.msg)
			}
		})
	}
}
