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

// TestLargestWaitingFrame: a refusal that names no request is about the
// largest frame still waiting; answered requests are forgotten, and the
// map of remembered frames does not grow with answered ones.
func TestLargestWaitingFrame(t *testing.T) {
	c := &Client{calls: map[uint64]*call{}}
	cn := &conn{owner: c}
	for id := uint64(1); id <= 1000; id++ {
		if id%100 == 0 { // a few wait; the rest were answered
			c.calls[id] = &call{}
		}
		cn.noteBig(id, int64(bigFrame+id%7*1000+id))
	}
	if n := len(cn.big); n > 100 {
		t.Fatalf("%d frames remembered with 10 waiting", n)
	}
	// Sizes are bigFrame + id%7*1000 + id: 1000 is the largest waiting
	// (+7000), then 300 (+6300).
	for _, want := range []uint64{1000, 300} {
		if id, size := cn.largestWaiting(); id != want || size != int64(bigFrame+want%7*1000+want) {
			t.Fatalf("largestWaiting = %d, %d; want %d", id, size, want)
		}
	}
	if n := cn.forgetBig(600); n != int64(bigFrame+5600) {
		t.Fatalf("forgetBig(600) = %d", n)
	}
	if n := cn.forgetBig(600); n != 0 {
		t.Fatalf("forgetBig(600) again = %d", n)
	}
	c.calls = map[uint64]*call{}
	if id, size := cn.largestWaiting(); id != 0 || size != 0 || len(cn.big) != 0 {
		t.Fatalf("nothing waits, largestWaiting = %d, %d (%d remembered)", id, size, len(cn.big))
	}
}
