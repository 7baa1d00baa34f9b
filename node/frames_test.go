package node_test

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// Every uint64 is a valid req_id: the server once queued its closes as
// frames whose req_id was 2^64-1-code, so a Ping near 2^64 closed the
// socket (with 0, 1000 or 4009) instead of getting its Pong.
func TestEveryReqIDGetsItsPong(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "pinger")
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	const top = math.MaxUint64
	ids := []uint64{0, 1, 2, 1 << 32, 1 << 63, top, top - 1}
	// The old close markers: top-code for every close code the server uses,
	// and either side of them.
	for _, code := range []uint64{0, 1000, 1006, 1011, 4000, 4001, 4008, 4009, 4010, 4011, 4999, 5000, 5001} {
		ids = append(ids, top-code, top-code+1, top-code-1)
	}
	for i, id := range ids {
		w.write(&courierpb.ClientFrame{ReqId: id, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: int64(i)}}})
		f, err := w.read(5 * time.Second)
		if err != nil {
			t.Fatalf("ping req_id %d: no pong: %v", id, err)
		}
		if f.ReqId != id || f.GetPong().GetClientTimeMs() != int64(i) {
			t.Fatalf("ping req_id %d: got %v", id, f)
		}
	}
}

// dialJSON opens a session on the json subprotocol and reads its Attached.
func dialJSON(t *testing.T, base, token string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{gateway.SubprotocolJSON}, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(wsURL(base, token, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if f := readJSON(t, c); f.GetAttached() == nil {
		t.Fatalf("first frame %v, want attached", f)
	}
	return c
}

func readJSONRaw(c *websocket.Conn) (int, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return c.ReadMessage()
}

func readJSON(t *testing.T, c *websocket.Conn) *courierpb.ServerFrame {
	t.Helper()
	typ, b, err := readJSONRaw(c)
	if err != nil {
		t.Fatalf("read json frame: %v", err)
	}
	var f courierpb.ServerFrame
	if typ != websocket.TextMessage {
		t.Fatalf("json session sent message type %d", typ)
	}
	if err := protojson.Unmarshal(b, &f); err != nil {
		t.Fatalf("undecodable json frame %q: %v", b, err)
	}
	return &f
}

// A text frame that is not UTF-8 is garbage like any other: answered with
// BAD_FRAME (whose message quotes none of it), the socket stays usable, and
// a client that keeps at it is closed with 4009, never with the 1006 that
// RFC 6455 forbids on the wire.
func TestJSONInvalidUTF8IsABadFrameNotAClose(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "utf8-abuser")
	garbage := [][]byte{
		{0xff, 0xfe, 0xfd},
		[]byte("{\"req_id\":\"1\",\"ping\":{}}\xc3"),
		[]byte("{\"req_id\":\"1\",\"send\":{\"to_user_id\":\"\xed\xa0\x80MARK\"}}"), // a UTF-16 surrogate
		[]byte("not json at all MARK"),
		[]byte(`{"req_id":"1","no_such_field_MARK":{}}`),
	}
	c := dialJSON(t, n.URL(), a.Token)
	for i, g := range garbage {
		if err := c.WriteMessage(websocket.TextMessage, g); err != nil {
			t.Fatal(err)
		}
		f := readJSON(t, c)
		e := f.GetError()
		if e.GetCode() != courierpb.ErrorCode_BAD_FRAME {
			t.Fatalf("garbage %d (%q): got %v, want BAD_FRAME", i, g, f)
		}
		if strings.Contains(e.GetMessage(), "MARK") || bytes.ContainsAny([]byte(e.GetMessage()), "\xff\xfe\xc3") {
			t.Fatalf("garbage %d: error message %q echoes the client's bytes", i, e.GetMessage())
		}
		if i < len(garbage)-1 { // MaxAbuse (5) closes after the last
			ping := fmt.Sprintf(`{"req_id":"%d","ping":{}}`, uint64(math.MaxUint64)-uint64(i))
			if err := c.WriteMessage(websocket.TextMessage, []byte(ping)); err != nil {
				t.Fatal(err)
			}
			if f := readJSON(t, c); f.GetPong() == nil || f.ReqId != uint64(math.MaxUint64)-uint64(i) {
				t.Fatalf("ping after garbage %d: %v", i, f)
			}
		}
	}
	_, _, err := readJSONRaw(c)
	ce, ok := err.(*websocket.CloseError)
	if !ok || ce.Code != gateway.CloseAbuse {
		t.Fatalf("after %d bad frames: %v, want close %d", len(garbage), err, gateway.CloseAbuse)
	}
}

// Every string a client can put in a frame is bounded: a 1 MiB id in any
// field of any frame is answered INVALID_ARGUMENT, naming the field but not
// quoting it, and activates no grain. The frame limit is raised so the
// frames reach the decoder instead of being refused as TOO_LARGE.
func TestOverlongIDsInEveryFrameAreRefusedBeforeAGrain(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.MaxFrameBytes = 4 << 20 })
	a := register(t, n.URL(), "long-ids")
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	huge := strings.Repeat("Z", 1<<20)
	cases := map[string]func(s string) *courierpb.ClientFrame{
		"send.to_user_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: s, ClientMsgId: "m"}}}
		},
		"send.client_msg_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: a.UserID, ClientMsgId: s}}}
		},
		"send.content_type": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: a.UserID, ClientMsgId: "m", ContentType: s}}}
		},
		"read.peer_user_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: s, ClientMsgIds: []string{"m"}}}}
		},
		"read.client_msg_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: a.UserID, ClientMsgIds: []string{"m", s}}}}
		},
		"group_create.create_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: s}}}
		},
		"group_create.subject": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: "c", Subject: s}}}
		},
		"group_create.description": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: "c", Description: s}}}
		},
		"group_create.member_user_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: "c", MemberUserIds: []string{s}}}}
		},
		"group_update.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: s, Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}}}}
		},
		"group_update.op_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: "g", OpId: s, Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}}}}
		},
		"group_update.add_members.user_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: "g", Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: []string{s}}}}}}
		},
		"group_update.subject": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: "g", Change: &courierpb.GroupUpdate_Subject{Subject: s}}}}
		},
		"group_update.description": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: "g", Change: &courierpb.GroupUpdate_Description{Description: s}}}}
		},
		"group_send.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{GroupId: s, ClientMsgId: "m"}}}
		},
		"group_send.client_msg_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{GroupId: "g", ClientMsgId: s}}}
		},
		"group_send.content_type": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{GroupId: "g", ClientMsgId: "m", ContentType: s}}}
		},
		"group_send.per_device.user_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{GroupId: "g", ClientMsgId: "m", PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: s}}}}}
		},
		"group_info.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupInfo{GroupInfo: &courierpb.GroupInfoRequest{GroupId: s}}}
		},
		"group_members.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupMembers{GroupMembers: &courierpb.GroupMembersRequest{GroupId: s}}}
		},
		"group_receipts.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupReceipts{GroupReceipts: &courierpb.GroupReceiptsRequest{GroupId: s}}}
		},
		"group_read.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_GroupRead{GroupRead: &courierpb.GroupReadReceipt{GroupId: s}}}
		},
		"contacts_update.add_user_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: []string{s}}}}
		},
		"contacts_update.add_handles": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddHandles: []string{s}}}}
		},
		"contacts_update.remove_user_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{RemoveUserIds: []string{s}}}}
		},
		"block.user_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Block{Block: &courierpb.BlockUpdate{UserId: s, Blocked: true}}}
		},
		"presence_subscribe.user_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_PresenceSubscribe{PresenceSubscribe: &courierpb.PresenceSubscribe{UserIds: []string{s}}}}
		},
		"presence_unsubscribe.user_ids": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_PresenceUnsubscribe{PresenceUnsubscribe: &courierpb.PresenceUnsubscribe{UserIds: []string{s}}}}
		},
		"typing.to_user_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Typing{Typing: &courierpb.Typing{ToUserId: s}}}
		},
		"typing.group_id": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_Typing{Typing: &courierpb.Typing{GroupId: s}}}
		},
		"push_token.token": func(s string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{Body: &courierpb.ClientFrame_PushToken{PushToken: &courierpb.PushTokenUpdate{Token: s}}}
		},
	}
	before := n.Cluster().Activations()
	req := uint64(100)
	for name, body := range cases {
		req++
		cf := body(huge)
		cf.ReqId = req
		w.write(cf)
		f := w.mustRead()
		e := f.GetError()
		if f.ReqId != req || e.GetCode() != courierpb.ErrorCode_INVALID_ARGUMENT {
			t.Fatalf("%s with a 1 MiB value: req %d got %v, want INVALID_ARGUMENT", name, req, prototextShort(f))
		}
		field := name[strings.LastIndex(name, ".")+1:]
		if !strings.Contains(e.GetMessage(), field) || strings.Contains(e.GetMessage(), "ZZZ") {
			t.Fatalf("%s: message %q should name %s and quote nothing", name, e.GetMessage(), field)
		}
	}
	// Refusals are not abuse: the socket still answers.
	w.write(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
	if f := w.mustRead(); f.GetPong() == nil {
		t.Fatalf("ping after refusals: %v", f)
	}
	after := n.Cluster().Activations()
	for kind, n := range after {
		if n > before[kind] {
			t.Fatalf("%s activations went from %d to %d: an over-long id reached a grain", kind, before[kind], n)
		}
	}
}

// prototextShort prints a frame for a failure without a megabyte of id.
func prototextShort(f *courierpb.ServerFrame) string {
	s := fmt.Sprint(f)
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
