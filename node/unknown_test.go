package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/protos/courierpb"
)

// Sends to ids nobody registered are each answered NOT_FOUND, and the User
// grains they activated leave at once instead of living until passivation
// (5 minutes): 2,000 of them once grew the server by ~700 MiB.
func TestSendsToUnknownIDsLeaveNoGrainBehind(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "stranger-sender")
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	users := func() int { return n.Cluster().Activations()[actors.KindUser] }
	before := users()               // the sender's own grain
	const total, window = 2000, 500 // window stays under MaxInflight
	notFound := 0
	for sent := 0; sent < total; sent += window {
		for i := range window {
			w.send(uint64(sent+i+1), uuid.NewString(), fmt.Sprintf("m%d", sent+i), []byte("x"))
		}
		for range window {
			f := w.mustRead()
			if f.GetError().GetCode() != courierpb.ErrorCode_NOT_FOUND {
				t.Fatalf("send to an unknown id: %v, want NOT_FOUND", f)
			}
			notFound++
		}
	}
	if notFound != total {
		t.Fatalf("%d of %d sends answered NOT_FOUND", notFound, total)
	}
	deadline := time.Now().Add(2 * time.Second)
	for users() > before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d User activations 2s after %d sends to unknown ids (%d before)", users(), total, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The known user's grain stays, and still serves.
	if got := w.sendAcked(1<<40, a.UserID, "self", []byte("hi")); got == nil {
		t.Fatal("no ack for a send to a known user")
	}
}

// The same for group ids nobody created: each request is NOT_FOUND and no
// Group grain stays behind, while a real group created meanwhile works.
func TestRequestsToUnknownGroupsLeaveNoGrainBehind(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "group-prober")
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	groups := func() int { return n.Cluster().Activations()[actors.KindGroup] }
	const total = 500
	for i := range total {
		w.write(&courierpb.ClientFrame{ReqId: uint64(i + 1), Body: &courierpb.ClientFrame_GroupInfo{GroupInfo: &courierpb.GroupInfoRequest{GroupId: uuid.NewString()}}})
	}
	for range total {
		if f := w.mustRead(); f.GetError().GetCode() != courierpb.ErrorCode_NOT_FOUND {
			t.Fatalf("info of an unknown group: %v, want NOT_FOUND", f)
		}
	}
	w.write(&courierpb.ClientFrame{ReqId: 1 << 40, Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: "real", Subject: "real"}}})
	if f := w.mustRead(); f.GetGroupInfo().GetGroupId() == "" {
		t.Fatalf("create after probing: %v", f)
	}
	deadline := time.Now().Add(2 * time.Second)
	for groups() > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d Group activations 2s after %d requests to unknown groups", groups(), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
