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
