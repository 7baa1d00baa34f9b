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

	// owner checks frames against the server's frame limit and fails the
	// requests the server will not take (nil in bare tests).
	owner *Client
	// big holds the encoded size of every large request frame written on
	// this socket by req_id, so a refusal that names no request (an
	// oversized frame the server could not decode, or close 1009) finds
	// the one it was about: the largest still waiting. Guarded by bmu
	// (taken under wmu, never the other way round).
	bmu      sync.Mutex
	big      map[uint64]int64
	bigPrune int // len(big) at which answered requests are dropped from it

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
	if cn.owner != nil && f.ReqId != 0 {
		size := int64(len(b))
		if limit := cn.owner.frameLimit(); limit > 0 && size > limit {
			// Never written: the server would refuse it (or drop the
			// session over it). The socket stays fine, so this is no
			// write error when a request takes the refusal.
			if cn.owner.refuseTooLarge(f.ReqId, tooLarge(size, limit, false)) {
				return nil
			}
			return tooLarge(size, limit, false)
		}
		if size >= bigFrame {
			cn.noteBig(f.ReqId, size)
		}
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

// bigFrame is the size from which request frames are remembered for a
// refusal that names no request; smaller ones are under any sane limit.
const bigFrame = 4 << 10

// noteBig remembers a large request frame before it goes out (a write the
// server cuts short by closing with 1009 still counts). Entries of
// requests no longer waiting are dropped as the map grows.
func (cn *conn) noteBig(reqID uint64, size int64) {
	cn.bmu.Lock()
	defer cn.bmu.Unlock()
	if cn.big == nil {
		cn.big = make(map[uint64]int64)
	}
	if len(cn.big) >= max(cn.bigPrune, 32) {
		for id := range cn.big {
			if !cn.owner.waiting(id) {
				delete(cn.big, id)
			}
		}
		// Many large requests may wait at once: prune again only once
		// the map doubled, so remembering stays O(1) amortised.
		cn.bigPrune = 2 * len(cn.big)
	}
	cn.big[reqID] = size
}

// largestWaiting returns the largest remembered frame whose request still
// waits for its answer (0 if none): when a frame over the limit is among
// them, it is the largest, since every other one was under the limit.
func (cn *conn) largestWaiting() (reqID uint64, size int64) {
	cn.bmu.Lock()
	defer cn.bmu.Unlock()
	for id, n := range cn.big {
		if !cn.owner.waiting(id) {
			delete(cn.big, id)
			continue
		}
		if n > size || (n == size && id < reqID) {
			reqID, size = id, n
		}
	}
	if reqID != 0 {
		delete(cn.big, reqID)
	}
	return reqID, size
}

// forgetBig drops what noteBig remembered of reqID and returns its size
// (0 if nothing).
func (cn *conn) forgetBig(reqID uint64) int64 {
	cn.bmu.Lock()
	defer cn.bmu.Unlock()
	n := cn.big[reqID]
	delete(cn.big, reqID)
	return n
}
