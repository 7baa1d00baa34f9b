package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/testcert"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// parkQuickly makes silent sockets park after 100 ms.
func parkQuickly(c *node.Config) { c.ParkAfter = 100 * time.Millisecond }

func waitParked(t *testing.T, n *node.Node, want int) {
	t.Helper()
	waitFor(t, 5*time.Second, func() bool { return n.Gateway().ParkedReaders() == want })
}

func TestParkedSocketsWakeForEveryFrameAndLoseNone(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"ws", false}, {"wss", true}} {
		t.Run(tc.name, func(t *testing.T) {
			hc, mutate := http.DefaultClient, parkQuickly
			var tlsCfg *tls.Config
			if tc.tls {
				cert := testcert.Write(t)
				tlsCfg = &tls.Config{RootCAs: cert.Pool}
				hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 10 * time.Second}
				mutate = func(c *node.Config) { parkQuickly(c); c.TLSCert, c.TLSKey = cert.CertFile, cert.KeyFile }
			}
			n := startNode(t, mutate)
			dialer := func(token string) *wsConn {
				if tlsCfg != nil {
					return dialTLS(t, n.URL(), token, tlsCfg)
				}
				return dial(t, n.URL(), token, 0)
			}
			a := registerWith(t, hc, n.URL(), "alice")
			b := registerWith(t, hc, n.URL(), "bob")
			ca, cb := dialer(a.Token), dialer(b.Token)
			ca.attached()
			cb.attached()

			// Each round starts with both sockets parked: Alice's frame wakes
			// her reader; Bob's delivery goes out while his is parked, and
			// his ack wakes it. The 3 KiB frame is larger than the 1 KiB
			// read buffer a woken reader gets.
			for round := range 4 {
				waitParked(t, n, 2)
				ct := bytes.Repeat([]byte{byte('a' + round)}, 100+round*1000)
				id := fmt.Sprintf("m%d", round)
				ca.sendAcked(uint64(round+1), b.UserID, id, ct)
				e := cb.mustEntry()
				if e.GetClientMsgId() != id || !bytes.Equal(e.GetCiphertext(), ct) {
					t.Fatalf("round %d: got %q (%d bytes), want %q (%d bytes)", round, e.GetClientMsgId(), len(e.GetCiphertext()), id, len(ct))
				}
				cb.write(&courierpb.ClientFrame{ReqId: uint64(100 + round), Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: e.InboxSeq}}})
				if f := cb.mustRead(); f.GetAckOk() == nil {
					t.Fatalf("round %d: ack answered with %v", round, f)
				}
			}
			if got := n.Gateway().Sessions(); got != 2 {
				t.Fatalf("Sessions = %d, want 2", got)
			}
		})
	}
}

func TestWebSocketPingsKeepAParkedSocketOpenAndParked(t *testing.T) {
	n := startNode(t, func(c *node.Config) { parkQuickly(c); c.IdleTimeout = 700 * time.Millisecond })
	a := register(t, n.URL(), "alice")
	c := dial(t, n.URL(), a.Token, 0)
	c.attached()

	var pongs atomic.Int32
	c.c.SetPongHandler(func(data string) error {
		if data == fmt.Sprintf("p%d", pongs.Load()) {
			pongs.Add(1)
		}
		return nil
	})
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.c.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	// 2 s of WebSocket pings 200 ms apart, nearly three idle timeouts: each
	// counts as the client speaking, and the socket parks between them
	// (gorilla alone would answer a ping only in a reader that then waits
	// for a data frame, and keep it).
	sawParked := false
	for i := range 10 {
		if err := c.c.WriteControl(websocket.PingMessage, fmt.Appendf(nil, "p%d", i), time.Now().Add(time.Second)); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) {
			sawParked = sawParked || n.Gateway().ParkedReaders() == 1
			time.Sleep(10 * time.Millisecond)
		}
	}
	select {
	case err := <-readErr:
		t.Fatalf("socket ended while pinging: %v", err)
	default:
	}
	if got := pongs.Load(); got < 9 {
		t.Fatalf("%d pongs with the pings' payloads in order, want 10", got)
	}
	if !sawParked {
		t.Fatal("the socket never parked between WebSocket pings")
	}
	// Silent from now on: closed at the idle timeout.
	err := <-readErr
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != gateway.CloseIdle {
		t.Fatalf("silent socket ended with %v, want close %d", err, gateway.CloseIdle)
	}
}

func TestParkedSocketThePeerDropsEndsItsSession(t *testing.T) {
	n := startNode(t, parkQuickly)
	a := register(t, n.URL(), "alice")
	c := dial(t, n.URL(), a.Token, 0)
	c.attached()
	waitParked(t, n, 1)
	_ = c.c.NetConn().Close() // no close frame: the TCP connection just goes
	waitFor(t, 5*time.Second, func() bool { return n.Gateway().Sessions() == 0 })
	if got := n.Gateway().ParkedReaders(); got != 0 {
		t.Fatalf("ParkedReaders = %d after the socket went, want 0", got)
	}
}

func TestShutdownClosesParkedSocketsGoingAway(t *testing.T) {
	n := startNode(t, parkQuickly)
	const clients = 3
	conns := make([]*wsConn, clients)
	for i := range conns {
		acc := register(t, n.URL(), fmt.Sprintf("user%d", i))
		conns[i] = dial(t, n.URL(), acc.Token, 0)
		conns[i].attached()
	}
	waitParked(t, n, clients)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := n.Gateway().Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with parked sockets: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Shutdown took %v", took)
	}
	for i, c := range conns {
		if code := c.closeCode(5 * time.Second); code != websocket.CloseGoingAway {
			t.Fatalf("client %d: close %d, want %d", i, code, websocket.CloseGoingAway)
		}
	}
}
