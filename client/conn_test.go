package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/courierpb"
)

// TestFirstTransmissionMarkIsOnTheWireOnly writes one frame as a first
// transmission and then again as a resend: the server must see the mark
// once, and the frame the SDK keeps for resends must never carry it.
func TestFirstTransmissionMarkIsOnTheWireOnly(t *testing.T) {
	got := make(chan *courierpb.ClientFrame, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		defer ws.Close()
		for range 2 {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Error(err)
				return
			}
			var f courierpb.ClientFrame
			if err := proto.Unmarshal(b, &f); err != nil {
				t.Error(err)
				return
			}
			got <- &f
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	cn := &conn{ws: ws}

	frame := &courierpb.ClientFrame{ReqId: 7, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
		ClientMsgId: "m1", ToUserId: "bob", Ciphertext: []byte("ct")}}}
	if err := cn.writeFirst(frame, true); err != nil {
		t.Fatal(err)
	}
	if err := cn.write(frame); err != nil {
		t.Fatal(err)
	}
	if frame.FirstTransmission {
		t.Fatal("writing a first transmission changed the frame kept for resends")
	}
	for i, wantFirst := range []bool{true, false} {
		select {
		case f := <-got:
			if f.FirstTransmission != wantFirst {
				t.Errorf("write %d: first_transmission = %v, want %v", i, f.FirstTransmission, wantFirst)
			}
			want := proto.Clone(frame).(*courierpb.ClientFrame)
			want.FirstTransmission = wantFirst
			if !proto.Equal(f, want) {
				t.Errorf("write %d: server decoded %v, want %v", i, f, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("write %d never arrived", i)
		}
	}
}
