package gateway

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/courierpb"
)

// SubprotocolJSON selects protojson text frames instead of binary protobuf.
const SubprotocolJSON = "json"

// SubprotocolProto names the default binary protobuf framing explicitly.
const SubprotocolProto = "proto"

// codec turns frames into WebSocket messages and back.
type codec struct{ json bool }

var jsonOut = protojson.MarshalOptions{UseProtoNames: true}
var jsonIn = protojson.UnmarshalOptions{DiscardUnknown: false}

func (c codec) encode(f *courierpb.ServerFrame) (int, []byte, error) {
	if c.json {
		b, err := jsonOut.Marshal(f)
		return websocket.TextMessage, b, err
	}
	b, err := proto.Marshal(f)
	return websocket.BinaryMessage, b, err
}

// Decode failures. Their text goes back to the client in a BAD_FRAME, so
// it is fixed: the decoders' own errors quote the input (protojson prints
// the offending token, invalid UTF-8 included, which the json codec could
// then not even encode), and an answer must never echo a client's bytes.
var (
	errFrameNotUTF8  = errors.New("text frame is not valid UTF-8")
	errFrameNotJSON  = errors.New("text frame is not a JSON ClientFrame")
	errFrameNotProto = errors.New("binary frame is not a protobuf ClientFrame")
)

func (c codec) decode(msgType int, data []byte) (*courierpb.ClientFrame, error) {
	f := &courierpb.ClientFrame{}
	switch {
	case c.json && msgType == websocket.TextMessage:
		// RFC 6455 requires text frames to be UTF-8; answering rather
		// than failing the connection treats it like any other garbage.
		if !utf8.Valid(data) {
			return nil, errFrameNotUTF8
		}
		if err := jsonIn.Unmarshal(data, f); err != nil {
			return nil, errFrameNotJSON
		}
	case !c.json && msgType == websocket.BinaryMessage:
		if err := proto.Unmarshal(data, f); err != nil {
			return nil, errFrameNotProto
		}
	default:
		want := "binary"
		if c.json {
			want = "text"
		}
		return nil, fmt.Errorf("this session expects %s frames", want)
	}
	return f, nil
}
