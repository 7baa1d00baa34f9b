package gateway

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/protos/courierpb"
)

// Fuzz targets of the frame decoder (issue #20, "Hostile users"). Run:
//
//	go test ./gateway/ -run '^$' -fuzz '^FuzzDecodeFrameProto$' -fuzztime 10m -parallel 1
//	go test ./gateway/ -run '^$' -fuzz '^FuzzDecodeFrameJSON$' -fuzztime 10m -parallel 1
//
// Plain `go test` replays the seeds below and testdata/fuzz/<Name>/.

// seedFrames is one valid frame of every ClientFrame body kind, shaped as
// a client sends them. TestSeedFramesCoverEveryBodyKind keeps it complete.
func seedFrames() []*courierpb.ClientFrame {
	const user = "0b5e3c2a-6c1f-4a8e-9f0d-3b7a1c2d4e5f"
	const group = "g-7f3a"
	dc := []*courierpb.DeviceCiphertext{{DeviceId: 1, Ciphertext: []byte{0x33, 1, 2}}, {DeviceId: 2, Ciphertext: []byte{0x33, 3}}}
	frames := []*courierpb.ClientFrame{
		{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ClientMsgId: "m-1", ToUserId: user, Ciphertext: []byte("hello"), ContentType: "text"}}},
		{Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ClientMsgId: "m-2", ToUserId: user, PerDevice: dc, SenderDevices: dc[:1]}}},
		{Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: 42}}},
		{Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: math.MaxUint64, Quiet: true}}},
		{Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: user, ClientMsgIds: []string{"m-1", "m-2"}}}},
		{Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: 1_700_000_000_000}}},
		{Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: math.MinInt64}}},
		{Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: "c-1", Subject: "Ünïcode 🎉", Description: "d",
			MemberUserIds: []string{user}, Settings: &courierpb.GroupSettings{Send: courierpb.GroupPermission_GROUP_PERMISSION_ADMINS_ONLY}}}},
		{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: group, OpId: "op", Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{UserIds: []string{user}}}}}},
		{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: group, Change: &courierpb.GroupUpdate_Leave{Leave: &courierpb.GroupLeave{}}}}},
		{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: group, Change: &courierpb.GroupUpdate_Subject{Subject: "s"}}}},
		{Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{GroupId: group, Change: &courierpb.GroupUpdate_Settings{Settings: &courierpb.GroupSettings{EditInfo: 7}}}}},
		{Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{ClientMsgId: "gm-1", GroupId: group, Ciphertext: []byte{0x33}, SenderKeyEpoch: 3,
			PerDevice: []*courierpb.GroupDeviceCiphertext{{UserId: user, DeviceId: 1, Ciphertext: []byte{1}}}}}},
		{Body: &courierpb.ClientFrame_GroupInfo{GroupInfo: &courierpb.GroupInfoRequest{GroupId: group}}},
		{Body: &courierpb.ClientFrame_GroupList{GroupList: &courierpb.GroupListRequest{}}},
		{Body: &courierpb.ClientFrame_GroupMembers{GroupMembers: &courierpb.GroupMembersRequest{GroupId: group}}},
		{Body: &courierpb.ClientFrame_GroupReceipts{GroupReceipts: &courierpb.GroupReceiptsRequest{GroupId: group, GroupSeq: 9}}},
		{Body: &courierpb.ClientFrame_GroupRead{GroupRead: &courierpb.GroupReadReceipt{GroupId: group, UpToGroupSeq: 9}}},
		{Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: []string{user}, AddHandles: []string{"alice"}, RemoveUserIds: []string{"x"}}}},
		{Body: &courierpb.ClientFrame_Contacts{Contacts: &courierpb.ContactsRequest{}}},
		{Body: &courierpb.ClientFrame_Block{Block: &courierpb.BlockUpdate{UserId: user, Blocked: true}}},
		{Body: &courierpb.ClientFrame_Privacy{Privacy: &courierpb.PrivacyUpdate{Presence: courierpb.Visibility_VISIBILITY_NOBODY}}},
		{Body: &courierpb.ClientFrame_PresenceSubscribe{PresenceSubscribe: &courierpb.PresenceSubscribe{UserIds: []string{user}}}},
		{Body: &courierpb.ClientFrame_PresenceUnsubscribe{PresenceUnsubscribe: &courierpb.PresenceUnsubscribe{UserIds: []string{user}}}},
		{Body: &courierpb.ClientFrame_Typing{Typing: &courierpb.Typing{ToUserId: user, State: courierpb.TypingState_TYPING_STATE_TYPING}}},
		{Body: &courierpb.ClientFrame_Typing{Typing: &courierpb.Typing{GroupId: group, State: courierpb.TypingState_TYPING_STATE_PAUSED}}},
		{Body: &courierpb.ClientFrame_PushToken{PushToken: &courierpb.PushTokenUpdate{Token: "apns:0123abcd"}}},
		{Body: &courierpb.ClientFrame_CallSignal{CallSignal: &courierpb.CallSignal{CallId: "8d1c0a52-call", PeerUserId: user,
			Type: courierpb.CallSignalType_CALL_SIGNAL_OFFER, Media: courierpb.CallMedia_CALL_MEDIA_VIDEO, Payload: []byte{0x33, 0x01}}}},
	}
	for i, f := range frames {
		f.ReqId, f.FirstTransmission = uint64(i+1), i%2 == 0
	}
	// The edges of req_id: every uint64 is one.
	frames = append(frames,
		&courierpb.ClientFrame{ReqId: math.MaxUint64, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}},
		&courierpb.ClientFrame{ReqId: math.MaxUint64 - 4009, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}},
		&courierpb.ClientFrame{}, // no body: UNKNOWN_FRAME
	)
	return frames
}

func TestSeedFramesCoverEveryBodyKind(t *testing.T) {
	seen := map[protoreflect.Name]bool{}
	for _, f := range seedFrames() {
		m := f.ProtoReflect()
		if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body")); fd != nil {
			seen[fd.Name()] = true
		}
	}
	fields := (&courierpb.ClientFrame{}).ProtoReflect().Descriptor().Oneofs().ByName("body").Fields()
	for i := range fields.Len() {
		if name := fields.Get(i).Name(); !seen[name] {
			t.Errorf("no seed frame has body %s: add one to seedFrames", name)
		}
	}
}

// nastyProto are binary frames that broke, or could break, protobuf
// decoders: overflowing and overlong varints, lengths past the end,
// truncation, wrong wire types, deep groups, invalid UTF-8 in a string.
func nastyProto() [][]byte {
	send := proto.Marshal
	valid, _ := send(seedFrames()[0])
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	sendWith := func(field []byte) []byte { // a Send body holding field
		return cat(tag(10, protowire.BytesType), protowire.AppendVarint(nil, uint64(len(field))), field)
	}
	deep := func(n int, closed bool) []byte {
		b := bytes.Repeat(tag(15, protowire.StartGroupType), n)
		if closed {
			b = append(b, bytes.Repeat(tag(15, protowire.EndGroupType), n)...)
		}
		return b
	}
	return [][]byte{
		{},
		valid[:len(valid)-1],
		valid[:len(valid)/2],
		cat(valid, valid), // a repeated singular message merges
		cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x01}),                // req_id 2^64-1
		cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 9), []byte{0x02}),                // 2^64 and more
		cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0x80}, 10), []byte{0x00}),               // 11-byte varint
		cat(tag(1, protowire.VarintType), bytes.Repeat([]byte{0xff}, 5)),                              // cut mid-varint
		cat(tag(1, protowire.BytesType), []byte{3, 'a', 'b', 'c'}),                                    // known field, wrong wire type
		cat(tag(10, protowire.BytesType), []byte{0xff, 0xff, 0xff, 0xff, 0x0f}),                       // length far past the end
		cat(tag(10, protowire.BytesType), bytes.Repeat([]byte{0xff}, 9), []byte{0x01}),                // length 2^64-1
		sendWith(cat(tag(2, protowire.BytesType), []byte{3, 0xff, 0xfe, 'x'})),                        // to_user_id not UTF-8
		sendWith(cat(tag(2, protowire.BytesType), []byte{3, 0xed, 0xa0, 0x80})),                       // a UTF-16 surrogate
		cat(tag(99, protowire.Fixed64Type), make([]byte, 8), tag(13, protowire.BytesType), []byte{0}), // unknown field, then ping
		cat(tag(protowire.MaxValidNumber, protowire.VarintType), []byte{1}),
		{0x00, 0x01},       // field number 0
		{0x0f, 0x01},       // wire type 7
		{0x0c},             // a group end with no start
		deep(200, true),    // a deep but well-formed unknown group
		deep(10_001, true), // past the decoder's recursion limit
		deep(10_001, false),
	}
}

// nastyJSON are text frames that broke, or could break, JSON decoders.
func nastyJSON() [][]byte {
	return [][]byte{
		{},
		[]byte("null"),
		[]byte("[]"),
		[]byte(`"ping"`),
		[]byte("{}"),
		[]byte(" \t\r\n{ } "),
		[]byte(`{"req_id":"18446744073709551615","ping":{}}`),
		[]byte(`{"req_id":18446744073709551615,"ping":{}}`),
		[]byte(`{"req_id":"18446744073709551616","ping":{}}`),
		[]byte(`{"req_id":-1,"ping":{}}`),
		[]byte(`{"req_id":1e19,"ping":{}}`),
		[]byte(`{"req_id":1.5,"ping":{}}`),
		[]byte(`{"req_id":1e400,"ping":{}}`),
		[]byte(`{"reqId":"7","ping":{"clientTimeMs":"-9223372036854775808"}}`),
		[]byte(`{"req_id":1,"req_id":2,"ping":{}}`),
		[]byte(`{"req_id":1,"reqId":2,"ping":{}}`),
		[]byte(`{"send":{},"ping":{}}`),
		[]byte(`{"ping":null}`),
		[]byte(`{"ping":{},"send":null}`),
		[]byte(`{"send":{"ciphertext":"not base64!"}}`),
		[]byte(`{"send":{"ciphertext":"aGk","to_user_id":"\u0000"}}`),
		[]byte(`{"send":{"to_user_id":"\ud800"}}`),
		[]byte(`{"send":{"to_user_id":"\udc00\ud800"}}`),
		[]byte(`{"send":{"to_user_id":"\ud83d\ude00"}}`),
		[]byte(`{"privacy":{"presence":"VISIBILITY_NOBODY"}}`),
		[]byte(`{"privacy":{"presence":99}}`),
		[]byte(`{"privacy":{"presence":"NO_SUCH_VALUE"}}`),
		[]byte(`{"group_update":{"group_id":"g","leave":{},"subject":"s"}}`),
		[]byte(`{"req_id":"1","no_such_field":{}}`),
		[]byte(`{"req_id":"1","ping":{}`),
		[]byte(`{"req_id":"1","ping":{}}}`),
		[]byte(`{"req_id":"1","ping":{}} {}`),
		[]byte("{\"req_id\":\"1\",\"ping\":{}}\xc3"),
		[]byte("{\"send\":{\"to_user_id\":\"\xed\xa0\x80\"}}"),
		{0xff, 0xfe, 0xfd},
		[]byte("\ufeff{}"), // a byte order mark
		bytes.Repeat([]byte("["), 10_000),
		[]byte(strings.Repeat(`{"send":`, 5_000) + strings.Repeat("}", 5_000)),
		[]byte(`{"send":{"per_device":[` + strings.Repeat(`{"device_id":1},`, 500) + `{}]}}`),
	}
}

// The decode errors a client may be told. Each is fixed text, so none can
// quote the frame (the "never echo client bytes" rule).
var decodeErrors = []error{errFrameNotUTF8, errFrameNotJSON, errFrameNotProto}

func FuzzDecodeFrameProto(f *testing.F) {
	for _, fr := range seedFrames() {
		b, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range nastyProto() {
		f.Add(b)
	}
	c := codec{json: false}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, c, websocket.BinaryMessage, data)
	})
}

func FuzzDecodeFrameJSON(f *testing.F) {
	for _, fr := range seedFrames() {
		b, err := jsonOut.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range nastyJSON() {
		f.Add(b)
	}
	c := codec{json: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, c, websocket.TextMessage, data)
	})
}

// checkDecode states what holds for any bytes a client sends as a frame of
// msgType to a session using c.
func checkDecode(t *testing.T, c codec, msgType int, data []byte) {
	in := bytes.Clone(data)
	// The other message type is refused whatever it holds.
	other := websocket.TextMessage + websocket.BinaryMessage - msgType
	if _, err := c.decode(other, data); err == nil {
		t.Fatalf("a frame of type %d was decoded by a session expecting %d", other, msgType)
	} else {
		checkErrorText(t, err, data)
	}

	f, err := c.decode(msgType, data)
	if !bytes.Equal(data, in) {
		t.Fatal("decode changed its input")
	}
	if err != nil {
		if f != nil {
			t.Fatalf("decode returned a frame with error %v", err)
		}
		if !isOneOf(err, decodeErrors) {
			t.Fatalf("decode error %q is none of the fixed decode errors", err)
		}
		checkErrorText(t, err, data)
		return
	}
	if c.json && hasUnknown(f.ProtoReflect()) {
		t.Fatal("the json codec kept unknown fields; it must refuse them")
	}

	// The bounds check runs on whatever decoded, and its errors name the
	// schema only. No string can be over a bound (>= 64 bytes) unless the
	// frame is longer than the bound: decoding never lengthens a string
	// (a JSON escape is longer than what it stands for).
	if err := actors.CheckFrameBounds(f); err != nil {
		var be *actors.FrameBoundsError
		if !errors.As(err, &be) {
			t.Fatalf("CheckFrameBounds error %q is not a *FrameBoundsError", err)
		}
		if len(data) <= be.Limit {
			t.Fatalf("a %d-byte frame broke the %d-byte bound of %s", len(data), be.Limit, be.Field)
		}
		checkErrorText(t, err, data)
	}

	// Re-encoding in the session's own encoding gives back the same frame.
	// Binary frames keep unknown fields (they go out again as read); json
	// has none to lose.
	again := roundTrip(t, c, f)
	if !proto.Equal(f, again) {
		t.Fatalf("re-encoded frame decodes differently:\n  first  %v\n  second %v", f, again)
	}
	// Either encoding carries the same frame. protojson drops unknown
	// fields, so a binary frame with some has no JSON twin equal to it.
	if !hasUnknown(f.ProtoReflect()) {
		if twin := roundTrip(t, codec{json: !c.json}, f); !proto.Equal(f, twin) {
			t.Fatalf("frame changed through the other codec:\n  first  %v\n  second %v", f, twin)
		}
	}
}

// roundTrip encodes f as a client using c would and decodes it again.
func roundTrip(t *testing.T, c codec, f *courierpb.ClientFrame) *courierpb.ClientFrame {
	t.Helper()
	var (
		b   []byte
		err error
		typ = websocket.BinaryMessage
	)
	if c.json {
		typ = websocket.TextMessage
		b, err = protojson.Marshal(f) // camelCase, as a client may send it
	} else {
		b, err = proto.Marshal(f)
	}
	if err != nil {
		t.Fatalf("a decoded frame does not encode (json=%v): %v", c.json, err)
	}
	again, err := c.decode(typ, b)
	if err != nil {
		t.Fatalf("an encoded frame does not decode (json=%v): %v\n  frame %v\n  bytes %q", c.json, err, f, b)
	}
	return again
}

// checkErrorText fails when err, whose text may go back to the client,
// quotes the frame or could not be sent back in a json session.
func checkErrorText(t *testing.T, err error, data []byte) {
	t.Helper()
	msg := err.Error()
	if !utf8.ValidString(msg) {
		t.Fatalf("error text %q is not UTF-8: a json session cannot send it", msg)
	}
	if _, jerr := jsonOut.Marshal(frameError(1, courierpb.ErrorCode_BAD_FRAME, msg, false)); jerr != nil {
		t.Fatalf("error text %q does not encode as json: %v", msg, jerr)
	}
	// Any frame of a few bytes appears in some English text by chance; from
	// 8 bytes on, finding it in the message means the message quotes it.
	if len(data) >= 8 && strings.Contains(msg, string(data)) {
		t.Fatalf("error text %q quotes the frame", msg)
	}
	if be := (*actors.FrameBoundsError)(nil); errors.As(err, &be) {
		return // names a schema field: checked by the caller
	}
	if !isOneOf(err, decodeErrors) && !strings.HasPrefix(msg, "this session expects ") {
		t.Fatalf("error %q is not one of the fixed texts", msg)
	}
}

func isOneOf(err error, targets []error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// hasUnknown reports whether m or any message within it holds unknown
// fields.
func hasUnknown(m protoreflect.Message) bool {
	if len(m.GetUnknown()) > 0 {
		return true
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind:
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				found = fd.MapValue().Message() != nil && hasUnknown(mv.Message())
				return !found
			})
		case fd.IsList():
			for i := 0; i < v.List().Len() && !found; i++ {
				found = hasUnknown(v.List().Get(i).Message())
			}
		default:
			found = hasUnknown(v.Message())
		}
		return !found
	})
	return found
}
