package node_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// How long a socket may take to answer. A Ping is answered by the session
// itself; a request may wait on a grain for RequestTimeout (5s) per
// attempt, and is retried twice.
const (
	fuzzPongWithin   = 5 * time.Second
	fuzzAnswerWithin = 20 * time.Second
)

// fuzzMaxFrameBytes is the node's frame limit in the fuzz run, low enough
// that inputs reach both refusals of a large frame: TOO_LARGE up to four
// times the limit, close 1009 beyond.
const fuzzMaxFrameBytes = 16 << 10

// FuzzSessionAnswersEveryFrame sends arbitrary frames to a live node over
// both subprotocols (issue #20: no stuck sockets). After every frame:
//   - a frame the server can decode, with a req_id, gets a frame carrying
//     that req_id (Typing and quiet acks are one-way unless refused);
//   - a frame it cannot decode gets a BAD_FRAME (or TOO_LARGE) with req_id
//     0, ahead of the answer to the next frame;
//   - a Ping sent behind it is answered with its Pong;
//
// unless the server closes the socket, which it must do with a close frame
// carrying a code RFC 6455 lets it send and a reason of at most 123 bytes.
// After a close the node still serves a fresh connection. Every frame the
// server sends decodes in the session's encoding.
//
// One node serves the whole run, and the sockets are kept open across
// inputs (a fresh one costs an upgrade and an attach), so an input can also
// find state earlier inputs left behind. Run:
//
//	go test ./node/ -run '^$' -fuzz '^FuzzSessionAnswersEveryFrame$' -fuzztime 5m -parallel 1
func FuzzSessionAnswersEveryFrame(f *testing.F) {
	n := startNode(f, func(c *node.Config) {
		c.MaxFrameBytes = fuzzMaxFrameBytes
		// Every fifth undecodable input closes the socket (abuse) and the
		// next dials again: far more connects than a person makes.
		c.Limits.Actions[gateway.ActionConnect].PerUser = gateway.Off
	})
	h := &fuzzHarness{base: n.URL()}
	for i, json := range []bool{false, true} {
		acc := register(f, n.URL(), fmt.Sprintf("fuzz-%d-%d", i, time.Now().UnixNano()))
		h.clients[i] = &fuzzClient{token: acc.Token, json: json}
	}
	// Messages go to a user who never connects, so no inbox the fuzzer
	// reads grows: replays on reconnect stay short.
	sink := register(f, n.URL(), fmt.Sprintf("fuzz-sink-%d", time.Now().UnixNano()))
	f.Cleanup(func() {
		for _, c := range h.clients {
			c.close()
		}
	})
	groups := make([]string, 2)
	for i, c := range h.clients {
		if err := c.ensure(h.base); err != nil {
			f.Fatal(err)
		}
		g, err := c.createGroup(sink.UserID)
		if err != nil {
			f.Fatal(err)
		}
		groups[i] = g
	}

	for i, c := range h.clients {
		for _, fr := range fuzzSeedFrames(sink.UserID, groups[i]) {
			b := encodeClientFrame(f, fr, c.json)
			f.Add(b, c.json, c.json)
			f.Add(b[:len(b)/2], c.json, c.json) // truncated
		}
	}
	for _, b := range [][]byte{
		{0xff, 0xfe, 0xfd}, // not UTF-8
		[]byte("{\"req_id\":\"1\",\"ping\":{}}\xc3"),
		[]byte(`{"req_id":"18446744073709551615","ping":{}}`),
		[]byte(`{"req_id":"18446744073709551616","ping":{}}`),
		[]byte(`{"send":{"to_user_id":"\ud800","client_msg_id":"m","ciphertext":"aGk="},"req_id":"5"}`),
		bytes.Repeat([]byte("["), 5_000),
		[]byte(strings.Repeat(`{"send":`, 2_000) + strings.Repeat("}", 2_000)),
		[]byte("not json at all"),
		{},
	} {
		f.Add(b, true, true)
	}
	huge := protowire.AppendTag(nil, 1, protowire.VarintType)
	for _, b := range [][]byte{
		append(bytes.Clone(huge), bytes.Repeat([]byte{0xff}, 9)...),                 // cut mid-varint
		append(append(bytes.Clone(huge), bytes.Repeat([]byte{0xff}, 9)...), 0x02),   // 2^64: overflows
		append(append(bytes.Clone(huge), bytes.Repeat([]byte{0x80}, 10)...), 0x00),  // 11 bytes
		append(protowire.AppendTag(nil, 10, protowire.BytesType), 0xff, 0xff, 0x0f), // length past the end
		bytes.Repeat(protowire.AppendTag(nil, 15, protowire.StartGroupType), 10_001),
		{},
	} {
		f.Add(b, false, false)
	}
	// Frames over the limit: refused, and far over it: closed with 1009.
	for _, json := range []bool{false, true} {
		f.Add(bytes.Repeat([]byte{'x'}, fuzzMaxFrameBytes+1), json, json)
		f.Add(bytes.Repeat([]byte{'x'}, 4*fuzzMaxFrameBytes+1), json, json)
	}
	// The other message type for each subprotocol.
	f.Add([]byte(`{"req_id":"9","ping":{}}`), false, true)
	f.Add(encodeClientFrame(f, &courierpb.ClientFrame{ReqId: 9, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}}, false), true, false)

	f.Fuzz(func(t *testing.T, data []byte, json, text bool) {
		h.check(t, data, json, text)
	})
}

// fuzzSeedFrames is one valid frame of every ClientFrame body kind, sent to
// users and groups that exist (sink, group) where the frame names one, plus
// req_ids at the edges.
func fuzzSeedFrames(sink, group string) []*courierpb.ClientFrame {
	frames := []*courierpb.ClientFrame{
		{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ClientMsgId: "m-1", ToUserId: sink, Ciphertext: []byte("hi"), ContentType: "text"}}},
		{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ClientMsgId: "m-2", ToUserId: sink,
			PerDevice: []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: []byte{0x33, 1}}}}}},
		{Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: 1}}},
		{Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: math.MaxUint64, Quiet: true}}},
		{Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: sink, ClientMsgIds: []string{"m-1"}}}},
		{Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: 1}}},
		{Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: "c-1", Subject: "s", MemberUserIds: []string{sink}}}},
		{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: group, OpId: "op",
			Change: &courierpb.GroupUpdate_Subject{Subject: "new"}}}},
		{Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{ClientMsgId: "gm-1", GroupId: group, Ciphertext: []byte{0x33}}}},
		{Body: &courierpb.ClientFrame_GroupInfo{GroupInfo: &courierpb.GroupInfoRequest{GroupId: group}}},
		{Body: &courierpb.ClientFrame_GroupList{GroupList: &courierpb.GroupListRequest{}}},
		{Body: &courierpb.ClientFrame_GroupMembers{GroupMembers: &courierpb.GroupMembersRequest{GroupId: group}}},
		{Body: &courierpb.ClientFrame_GroupReceipts{GroupReceipts: &courierpb.GroupReceiptsRequest{GroupId: group, GroupSeq: 1}}},
		{Body: &courierpb.ClientFrame_GroupRead{GroupRead: &courierpb.GroupReadReceipt{GroupId: group, UpToGroupSeq: 1}}},
		{Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: []string{sink}, AddHandles: []string{"nobody"}}}},
		{Body: &courierpb.ClientFrame_Contacts{Contacts: &courierpb.ContactsRequest{}}},
		{Body: &courierpb.ClientFrame_Block{Block: &courierpb.BlockUpdate{UserId: sink, Blocked: false}}},
		{Body: &courierpb.ClientFrame_Privacy{Privacy: &courierpb.PrivacyUpdate{Presence: courierpb.Visibility_VISIBILITY_CONTACTS}}},
		{Body: &courierpb.ClientFrame_PresenceSubscribe{PresenceSubscribe: &courierpb.PresenceSubscribe{UserIds: []string{sink}}}},
		{Body: &courierpb.ClientFrame_PresenceUnsubscribe{PresenceUnsubscribe: &courierpb.PresenceUnsubscribe{UserIds: []string{sink}}}},
		{Body: &courierpb.ClientFrame_Typing{Typing: &courierpb.Typing{ToUserId: sink, State: courierpb.TypingState_TYPING_STATE_TYPING}}},
		{Body: &courierpb.ClientFrame_PushToken{PushToken: &courierpb.PushTokenUpdate{Token: "apns:00ff"}}},
		{Body: &courierpb.ClientFrame_CallSignal{CallSignal: &courierpb.CallSignal{CallId: "8d1c0a52-call", PeerUserId: sink,
			Type: courierpb.CallSignalType_CALL_SIGNAL_OFFER, Media: courierpb.CallMedia_CALL_MEDIA_VIDEO, Payload: []byte{0x33, 0x01}}}},
	}
	for i, f := range frames {
		f.ReqId = uint64(i + 1)
	}
	return append(frames,
		&courierpb.ClientFrame{ReqId: math.MaxUint64, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}},
		&courierpb.ClientFrame{ReqId: math.MaxUint64 - 4009, Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{}}},
		&courierpb.ClientFrame{ReqId: 77}, // no body
	)
}

func encodeClientFrame(tb testing.TB, f *courierpb.ClientFrame, json bool) []byte {
	tb.Helper()
	var b []byte
	var err error
	if json {
		b, err = protojson.Marshal(f)
	} else {
		b, err = proto.Marshal(f)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fuzzHarness holds what the fuzz inputs share: the node and one socket per
// subprotocol (index 0 proto, 1 json).
type fuzzHarness struct {
	base    string
	clients [2]*fuzzClient
	marker  atomic.Uint64
}

// check sends data as one frame and holds the socket to the rules above.
func (h *fuzzHarness) check(t *testing.T, data []byte, json, text bool) {
	c := h.clients[0]
	if json {
		c = h.clients[1]
	}
	if err := c.ensure(h.base); err != nil {
		t.Fatalf("a fresh connection to the node failed: %v", err)
	}
	// What the server must make of data, decided here independently of
	// the gateway's codec.
	decoded, ok := decodeClientFrame(data, json, text)
	tooLarge := len(data) > fuzzMaxFrameBytes
	expect := expectation{
		badFrame: !ok || tooLarge,
		answerTo: math.MaxUint64, // none
	}
	if ok && !tooLarge && decoded.ReqId != 0 && answered(decoded) {
		expect.answerTo = decoded.ReqId
		expect.answer = true
	}
	marker := h.marker.Add(1) | 1<<62
	if ok && decoded.ReqId == marker {
		marker = h.marker.Add(1) | 1<<62
	}
	ping := encodeClientFrame(t, &courierpb.ClientFrame{ReqId: marker, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}}, json)
	// A write that fails means the server already closed: the read below
	// finds its close frame.
	_ = c.conn.SetWriteDeadline(time.Now().Add(fuzzPongWithin))
	if err := c.conn.WriteMessage(messageType(text), data); err == nil {
		_ = c.conn.WriteMessage(messageType(json), ping)
	}

	start := time.Now()
	var gotPong, gotAnswer, gotBad bool
	for !(gotPong && (gotAnswer || !expect.answer)) {
		deadline := start.Add(fuzzAnswerWithin)
		if !gotPong {
			deadline = start.Add(fuzzPongWithin)
		}
		fr, err := c.read(deadline)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					missing := "Pong"
					if gotPong {
						missing = fmt.Sprintf("answer to req_id %d", expect.answerTo)
					}
					t.Fatalf("stuck socket (json=%v, text=%v): after %v no %s for frame %s",
						json, text, time.Since(start).Round(time.Millisecond), missing, short(data))
				}
				t.Fatalf("socket ended without a close frame (json=%v, text=%v) after frame %s: %v", json, text, short(data), err)
			}
			checkCloseFrame(t, ce, data)
			c.close()
			// The node survived whatever this was: a fresh client is served.
			if err := c.ensure(h.base); err != nil {
				t.Fatalf("after close %d, a fresh connection failed: %v", ce.Code, err)
			}
			return
		}
		if e := fr.GetError(); e != nil && len(data) >= 8 && strings.Contains(e.GetMessage(), string(data)) {
			t.Fatalf("error %q quotes the frame", e.GetMessage())
		}
		switch {
		case fr.ReqId == marker && fr.GetPong() != nil:
			if expect.badFrame && !gotBad {
				t.Fatalf("undecodable frame %s (json=%v, text=%v) was not answered with BAD_FRAME before the next frame's answer", short(data), json, text)
			}
			gotPong = true
		case fr.ReqId == marker:
			t.Fatalf("ping req_id %d answered with %v", marker, fr)
		case expect.answer && fr.ReqId == expect.answerTo:
			gotAnswer = true
		case expect.badFrame && fr.ReqId == 0 && !gotPong:
			if code := fr.GetError().GetCode(); code == courierpb.ErrorCode_BAD_FRAME || code == courierpb.ErrorCode_TOO_LARGE {
				gotBad = true
			}
		}
	}
}

func messageType(text bool) int {
	if text {
		return websocket.TextMessage
	}
	return websocket.BinaryMessage
}

type expectation struct {
	badFrame bool   // the server cannot decode the frame (or will not: too large)
	answer   bool   // a frame with req_id answerTo must come back
	answerTo uint64 // the decoded req_id
}

// answered: every decodable frame with a req_id is answered, except the
// two that are one-way by design (wire.proto): a typing indicator and a
// quiet ack are answered only when refused.
func answered(f *courierpb.ClientFrame) bool {
	switch b := f.Body.(type) {
	case *courierpb.ClientFrame_Typing:
		return false
	case *courierpb.ClientFrame_Ack:
		return !b.Ack.Quiet
	}
	return true
}

// decodeClientFrame decodes data as a session of the given subprotocol
// should: only its own message type, json only when UTF-8, unknown json
// fields refused.
func decodeClientFrame(data []byte, json, text bool) (*courierpb.ClientFrame, bool) {
	if json != text {
		return nil, false
	}
	f := &courierpb.ClientFrame{}
	if json {
		if !utf8.Valid(data) || protojson.Unmarshal(data, f) != nil {
			return nil, false
		}
		return f, true
	}
	return f, proto.Unmarshal(data, f) == nil
}

// checkCloseFrame holds a close to RFC 6455: a code an endpoint may send
// (section 7.4; never 1005, 1006 or 1015, which mean there was no close
// frame) and a reason that fits a control frame.
func checkCloseFrame(t *testing.T, ce *websocket.CloseError, data []byte) {
	t.Helper()
	legal := ce.Code >= 3000 && ce.Code <= 4999
	switch ce.Code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014:
		legal = true
	}
	if !legal {
		t.Fatalf("socket closed with %d (%q) after frame %s: not a code a server may send", ce.Code, ce.Text, short(data))
	}
	if len(ce.Text) > 123 || !utf8.ValidString(ce.Text) {
		t.Fatalf("close %d reason %q: over 123 bytes or not UTF-8", ce.Code, ce.Text)
	}
}

func short(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// fuzzClient is one device's socket, kept open across fuzz inputs and
// dialled again when the server closes it.
type fuzzClient struct {
	token string
	json  bool
	conn  *websocket.Conn
}

func (c *fuzzClient) ensure(base string) error {
	if c.conn != nil {
		return nil
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if c.json {
		d.Subprotocols = []string{gateway.SubprotocolJSON}
	}
	conn, resp, err := d.Dial(wsURL(base, c.token, 0), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		return fmt.Errorf("dial (HTTP %d): %w", status, err)
	}
	c.conn = conn
	f, err := c.read(time.Now().Add(fuzzAnswerWithin))
	if err != nil {
		c.close()
		return fmt.Errorf("read Attached: %w", err)
	}
	if f.GetAttached() == nil {
		c.close()
		return fmt.Errorf("first frame is %v, want Attached", f)
	}
	return nil
}

func (c *fuzzClient) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// read returns the next frame, which must be of the session's message
// type and decode in its encoding.
func (c *fuzzClient) read(deadline time.Time) (*courierpb.ServerFrame, error) {
	_ = c.conn.SetReadDeadline(deadline)
	typ, b, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	f := &courierpb.ServerFrame{}
	switch {
	case c.json && typ == websocket.TextMessage:
		err = protojson.Unmarshal(b, f)
	case !c.json && typ == websocket.BinaryMessage:
		err = proto.Unmarshal(b, f)
	default:
		err = fmt.Errorf("message type %d on a json=%v session", typ, c.json)
	}
	if err != nil {
		return nil, fmt.Errorf("undecodable server frame %q: %w", b, err)
	}
	return f, nil
}

// createGroup creates a group of this client with member and returns its id.
func (c *fuzzClient) createGroup(member string) (string, error) {
	const req = 1
	f := &courierpb.ClientFrame{ReqId: req, Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{
		CreateId: fmt.Sprintf("fuzz-%d", time.Now().UnixNano()), Subject: "fuzz", MemberUserIds: []string{member},
	}}}
	b, err := proto.Marshal(f)
	if c.json {
		b, err = protojson.Marshal(f)
	}
	if err != nil {
		return "", err
	}
	if err := c.conn.WriteMessage(messageType(c.json), b); err != nil {
		return "", err
	}
	for {
		fr, err := c.read(time.Now().Add(fuzzAnswerWithin))
		if err != nil {
			return "", err
		}
		if fr.ReqId != req {
			continue
		}
		if g := fr.GetGroupInfo(); g != nil {
			return g.GroupId, nil
		}
		return "", fmt.Errorf("group create answered %v", fr)
	}
}
