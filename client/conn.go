package client

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/courierpb"
)

// subprotocolJSON selects protojson text frames (gateway.SubprotocolJSON).
const subprotocolJSON = "json"

var errConnDead = errors.New("connection closed")

var (
	jsonMarshal   = protojson.MarshalOptions{UseProtoNames: true}
	jsonUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
	binMarshal    = proto.MarshalOptions{}
)

// conn is one WebSocket session. Its reader is the Client's run goroutine;
// writers serialise on wmu.
type conn struct {
	ws    *websocket.Conn
	json  bool
	after uint64 // the resume point it was opened with

	wmu  sync.Mutex
	wbuf []byte
	dead bool

	lastRead atomic.Int64 // unix nanoseconds of the last frame read

	kaMu      sync.Mutex
	ka        *time.Timer
	kaStopped bool

	// Owned by the reader.
	rbuf     bytes.Buffer
	attached bool
	overflow bool
}

// write encodes and writes one frame. A failed write kills the socket so
// the reader notices at once and the Client reconnects.
func (cn *conn) write(f *courierpb.ClientFrame) error {
	return cn.writeFirst(f, false)
}

// writeFirst is write; with first, the frame goes out marked as its first
// transmission. The mark is appended to the encoding rather than set on f,
// which other goroutines may be writing again on another session at the
// same time. The json subprotocol goes without it (the server then only
// does more work, never less).
func (cn *conn) writeFirst(f *courierpb.ClientFrame, first bool) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.writeLocked(f, first)
}

// firstTransmissionField is ClientFrame.first_transmission's number.
var firstTransmissionField = (&courierpb.ClientFrame{}).ProtoReflect().Descriptor().Fields().ByName("first_transmission").Number()

func (cn *conn) writeLocked(f *courierpb.ClientFrame, first bool) error {
	if cn.dead {
		return errConnDead
	}
	var (
		typ int
		b   []byte
		err error
	)
	if cn.json {
		typ = websocket.TextMessage
		b, err = jsonMarshal.Marshal(f)
	} else {
		typ = websocket.BinaryMessage
		cn.wbuf, err = binMarshal.MarshalAppend(cn.wbuf[:0], f)
		if first && err == nil {
			// A field may follow the others in any order; the last
			// occurrence wins, as if f had it set.
			cn.wbuf = protowire.AppendTag(cn.wbuf, firstTransmissionField, protowire.VarintType)
			cn.wbuf = protowire.AppendVarint(cn.wbuf, 1)
		}
		b = cn.wbuf
	}
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	_ = cn.ws.SetWriteDeadline(time.Now().Add(defaultWriteTimeout))
	if err := cn.ws.WriteMessage(typ, b); err != nil {
		cn.dead = true
		_ = cn.ws.NetConn().Close()
		return err
	}
	if cap(cn.wbuf) > 64<<10 {
		cn.wbuf = nil
	}
	return nil
}

// read returns the next frame; frames the client cannot decode are skipped
// with skip=true.
func (cn *conn) read() (f *courierpb.ServerFrame, skip bool, err error) {
	typ, r, err := cn.ws.NextReader()
	if err != nil {
		return nil, false, err
	}
	cn.rbuf.Reset()
	if _, err := cn.rbuf.ReadFrom(r); err != nil {
		return nil, false, err
	}
	cn.lastRead.Store(time.Now().UnixNano())
	f = &courierpb.ServerFrame{}
	data := cn.rbuf.Bytes()
	switch {
	case typ == websocket.TextMessage:
		err = jsonUnmarshal.Unmarshal(data, f)
	case typ == websocket.BinaryMessage:
		err = proto.Unmarshal(data, f)
	default:
		err = fmt.Errorf("unexpected message type %d", typ)
	}
	if cn.rbuf.Cap() > 1<<20 {
		cn.rbuf = bytes.Buffer{}
	}
	if err != nil {
		return nil, true, fmt.Errorf("decode server frame: %w", err)
	}
	return f, false, nil
}

// abort closes the socket without a close frame (what a dying network does).
func (cn *conn) abort() {
	_ = cn.ws.NetConn().Close()
}

// shutdown says goodbye with a close frame and closes the socket.
func (cn *conn) shutdown(code int) {
	cn.stopKeepalive()
	cn.wmu.Lock()
	if !cn.dead {
		cn.dead = true
		_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
	}
	cn.wmu.Unlock()
	_ = cn.ws.Close()
}

func (cn *conn) stopKeepalive() {
	cn.kaMu.Lock()
	defer cn.kaMu.Unlock()
	cn.kaStopped = true
	if cn.ka != nil {
		cn.ka.Stop()
	}
}

func (cn *conn) isDead() bool {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	return cn.dead
}
