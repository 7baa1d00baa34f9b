package gateway

import (
	"fmt"

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

func (c codec) decode(msgType int, data []byte) (*courierpb.ClientFrame, error) {
	f := &courierpb.ClientFrame{}
	switch {
	case c.json && msgType == websocket.TextMessage:
		if err := jsonIn.Unmarshal(data, f); err != nil {
			return nil, fmt.Errorf("decode json frame: %w", err)
		}
	case !c.json && msgType == websocket.BinaryMessage:
		if err := proto.Unmarshal(data, f); err != nil {
			return nil, fmt.Errorf("decode protobuf frame: %w", err)
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
