package node_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/storematrix"
	"github.com/courier-im/courier/internal/testcert"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

func TestBadFramesGetTheirErrorCodes(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.MaxFrameBytes = 4 << 10 })
	a := register(t, n.URL(), "alice")
	b := register(t, n.URL(), "bob")

	noBody, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 7})
	missingTo, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 8, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ClientMsgId: "m1", Ciphertext: []byte("x")}}})
	missingID, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 9, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: b.UserID, Ciphertext: []byte("x")}}})
	noCiphertext, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 10, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: b.UserID, ClientMsgId: "m2"}}})
	toNobody, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 11, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: "0190f0f0-0000-7000-8000-000000000000", ClientMsgId: "m3", Ciphertext: []byte("x")}}})
	bigSend, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 12, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{ToUserId: b.UserID, ClientMsgId: "m4", Ciphertext: bytes.Repeat([]byte("x"), 6<<10)}}})
	emptyRead, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 13, Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: b.UserID}}})

	cases := []struct {
		name  string
		typ   int
		frame []byte
		reqID uint64
		want  courierpb.ErrorCode
	}{
		{"garbage bytes", websocket.BinaryMessage, []byte{0xff, 0xff, 0xff, 0x01, 0x02}, 0, courierpb.ErrorCode_BAD_FRAME},
		{"text frame on a binary session", websocket.TextMessage, []byte(`{"req_id":1}`), 0, courierpb.ErrorCode_BAD_FRAME},
		{"frame without a body", websocket.BinaryMessage, noBody, 7, courierpb.ErrorCode_UNKNOWN_FRAME},
		{"send without recipient", websocket.BinaryMessage, missingTo, 8, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"send without client_msg_id", websocket.BinaryMessage, missingID, 9, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"send without ciphertext", websocket.BinaryMessage, noCiphertext, 10, courierpb.ErrorCode_INVALID_ARGUMENT},
		{"send to an unknown user", websocket.BinaryMessage, toNobody, 11, courierpb.ErrorCode_NOT_FOUND},
		{"frame over the size limit", websocket.BinaryMessage, bigSend, 0, courierpb.ErrorCode_TOO_LARGE},
		{"read receipt naming no message", websocket.BinaryMessage, emptyRead, 13, courierpb.ErrorCode_INVALID_ARGUMENT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, n.URL(), a.Token, 0)
			c.attached()
			c.writeRaw(tc.typ, tc.frame)
			e := c.expectError(tc.reqID)
			if e.Code != tc.want {
				t.Fatalf("error code %v (%q), want %v", e.Code, e.Message, tc.want)
			}
			if e.Message == "" {
				t.Fatal("error without a message")
			}
			// The session survives one bad frame.
			c.write(&courierpb.ClientFrame{ReqId: 99, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{ClientTimeMs: 1}}})
			for {
				f := c.mustRead()
				if f.GetPong() != nil && f.ReqId == 99 {
					break
				}
			}
		})
	}
}

func TestFrameFarOverTheLimitClosesWith1009(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.MaxFrameBytes = 1 << 10 })
	a := register(t, n.URL(), "alice")
	c := dial(t, n.URL(), a.Token, 0)
	c.attached()
	// The server may stop reading before the whole frame is written, so the
	// write itself can fail; what counts is the close code that comes back.
	_ = c.c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{1}, 64<<10))
	if code := c.closeCode(5 * time.Second); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want %d", code, websocket.CloseMessageTooBig)
	}
}

func TestRepeatedAbuseClosesTheSocketAndOthersAreUnaffected(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "alice")
	b := register(t, n.URL(), "bob")
	mallory := register(t, n.URL(), "mallory")

	ca := dial(t, n.URL(), a.Token, 0)
	ca.attached()
	cb := dial(t, n.URL(), b.Token, 0)
	cb.attached()
	cm := dial(t, n.URL(), mallory.Token, 0)
	cm.attached()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			if err := cm.c.WriteMessage(websocket.BinaryMessage, []byte{0xff, 0x00, byte(i)}); err != nil {
				return // closed on us, as it should be
			}
		}
	}()
	if code := cm.closeCode(10 * time.Second); code != gateway.CloseAbuse {
		t.Fatalf("abusive socket closed with %d, want %d", code, gateway.CloseAbuse)
	}
	wg.Wait()

	// Alice and Bob never noticed.
	for i := range 20 {
		ca.sendAcked(uint64(i+1), b.UserID, fmt.Sprintf("m%d", i), []byte("hi"))
	}
	got := 0
	for got < 20 {
		cb.mustEntry()
		got++
	}
}

func TestTokensAreVerified(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.TokenTTL = time.Second })
	a := register(t, n.URL(), "alice")
	b := register(t, n.URL(), "bob")

	// Swap the claims of Alice's token for Bob's: the signature no longer
	// matches, so nobody can act as another user.
	parts := strings.Split(a.Token, ".")
	claims, _ := json.Marshal(gateway.Claims{UserID: b.UserID, DeviceID: 1, ExpiresAt: time.Now().Add(time.Hour).Unix()})
	asBob := parts[0] + "." + base64.RawURLEncoding.EncodeToString(claims) + "." + parts[2]

	time.Sleep(2100 * time.Millisecond)
	expired := a.Token

	cases := []struct {
		name  string
		token string
		want  string
	}{
		{"missing", "", "UNAUTHENTICATED"},
		{"garbage", "not-a-token", "UNAUTHENTICATED"},
		{"claims of another user", asBob, "UNAUTHENTICATED"},
		{"expired", expired, "TOKEN_EXPIRED"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := websocket.DefaultDialer.Dial(wsURL(n.URL(), tc.token, 0), nil)
			if err == nil {
				t.Fatal("upgrade succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("response %v, want 401", resp)
			}
			var ge gatewayError
			_ = json.NewDecoder(resp.Body).Decode(&ge)
			if ge.Code != tc.want {
				t.Fatalf("code %q, want %q", ge.Code, tc.want)
			}
		})
	}

	t.Run("wrong device secret", func(t *testing.T) {
		code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/token", gateway.TokenRequest{UserID: a.UserID, DeviceID: 1, DeviceSecret: "wrong"}, nil)
		if code != http.StatusUnauthorized || ge.Code != "UNAUTHENTICATED" {
			t.Fatalf("got %d %+v", code, ge)
		}
	})
	t.Run("handle taken", func(t *testing.T) {
		code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/register", gateway.RegisterRequest{Handle: "alice"}, nil)
		if code != http.StatusConflict || ge.Code != "HANDLE_TAKEN" {
			t.Fatalf("got %d %+v", code, ge)
		}
	})
	t.Run("bad handle", func(t *testing.T) {
		code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/register", gateway.RegisterRequest{Handle: "no spaces please"}, nil)
		if code != http.StatusBadRequest || ge.Code != "INVALID_ARGUMENT" {
			t.Fatalf("got %d %+v", code, ge)
		}
	})
}

func TestSenderIsTheTokensUser(t *testing.T) { storematrix.Run(t, testSenderIsTheTokensUser) }

func testSenderIsTheTokensUser(t *testing.T, store storematrix.Store) {
	n := startNode(t, store.Configure)
	a := register(t, n.URL(), "alice")
	b := register(t, n.URL(), "bob")
	ca := dial(t, n.URL(), a.Token, 0)
	ca.attached()
	ca.sendAcked(1, b.UserID, "hello-1", []byte("ciphertext"))
	cb := dial(t, n.URL(), b.Token, 0)
	cb.attached()
	e := cb.mustEntry()
	if e.GetFromUserId() != a.UserID || e.GetFromDeviceId() != 1 || e.GetClientMsgId() != "hello-1" {
		t.Fatalf("entry %v: want from %s device 1", e, a.UserID)
	}
}

func TestTLSServesWSSAndRefusesPlainWS(t *testing.T) {
	cert := testcert.Write(t)
	pool := cert.Pool
	n := startNode(t, func(c *node.Config) { c.TLSCert, c.TLSKey = cert.CertFile, cert.KeyFile })
	if !strings.HasPrefix(n.URL(), "https://") {
		t.Fatalf("URL %s is not https", n.URL())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	a := registerWith(t, hc, n.URL(), "alice")
	b := registerWith(t, hc, n.URL(), "bob")

	ca := dialTLS(t, n.URL(), a.Token, &tls.Config{RootCAs: pool})
	ca.attached()
	ca.sendAcked(1, b.UserID, "over-tls", []byte("secret"))
	cb := dialTLS(t, n.URL(), b.Token, &tls.Config{RootCAs: pool})
	cb.attached()
	if got := cb.mustEntry().GetClientMsgId(); got != "over-tls" {
		t.Fatalf("got %q", got)
	}

	t.Run("plain ws on the TLS port fails", func(t *testing.T) {
		plain := "ws://" + n.Addr() + "/v1/ws?token=" + a.Token
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		if _, _, err := d.Dial(plain, nil); err == nil {
			t.Fatal("plain ws upgrade succeeded on the TLS port")
		}
	})
	t.Run("untrusted certificate is refused by the client", func(t *testing.T) {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{}}
		if _, _, err := d.Dial(wsURL(n.URL(), a.Token, 0), nil); err == nil {
			t.Fatal("wss dial trusted a self-signed certificate")
		}
	})
}

func TestSilentSocketIsClosedAndPingingOneIsNot(t *testing.T) {
	for _, tc := range []struct {
		name      string
		parkAfter time.Duration
	}{
		{"with a reader throughout", -1},
		// Pings 200 ms apart: the pinging socket parks between them.
		{"parked while silent", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, func(c *node.Config) { c.IdleTimeout, c.ParkAfter = 700*time.Millisecond, tc.parkAfter })
			a := register(t, n.URL(), "alice")
			b := register(t, n.URL(), "bob")
			silent := dial(t, n.URL(), a.Token, 0)
			silent.attached()
			pinging := dial(t, n.URL(), b.Token, 0)
			pinging.attached()

			silentClosed := make(chan int, 1)
			go func() {
				_ = silent.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, err := silent.c.ReadMessage()
				code := -1
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				silentClosed <- code
			}()
			for i := range 10 {
				pinging.write(&courierpb.ClientFrame{ReqId: uint64(i + 1), Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
				if f := pinging.mustRead(); f.GetPong() == nil {
					t.Fatalf("got %v, want Pong", f)
				}
				time.Sleep(200 * time.Millisecond)
			}
			if code := <-silentClosed; code != gateway.CloseIdle {
				t.Fatalf("silent socket closed with %d, want %d", code, gateway.CloseIdle)
			}
		})
	}
}

func TestSlowReaderIsDisconnectedAndNeverStallsTheGrain(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.SendQueue = 8 })
	a := register(t, n.URL(), "alice")
	b := register(t, n.URL(), "bob")

	// Bob attaches and then stops reading: his socket buffers fill, then his
	// session's queue, and the gateway must cut him off rather than wait.
	stalled := dial(t, n.URL(), b.Token, 0)
	stalled.attached()

	ca := dial(t, n.URL(), a.Token, 0)
	ca.attached()
	const total = 200
	payload := bytes.Repeat([]byte("c"), 128<<10)
	start := time.Now()
	for i := range total {
		ca.sendAcked(uint64(i+1), b.UserID, fmt.Sprintf("m%03d", i), payload)
	}
	// Every send was stored and acked although Bob read nothing.
	t.Logf("%d sends acked in %v with a stalled recipient", total, time.Since(start))
	// Well before the 10 s write timeout: the full queue, not the socket, ends it.
	waitFor(t, 3*time.Second, func() bool { return n.Gateway().Sessions() == 1 })

	// Bob comes back and gets everything, in order, once.
	cb := dial(t, n.URL(), b.Token, 0)
	cb.attached()
	for i := range total {
		e := cb.mustEntry()
		if want := fmt.Sprintf("m%03d", i); e.ClientMsgId != want {
			t.Fatalf("entry %d is %s, want %s", i, e.ClientMsgId, want)
		}
	}
	// And the stalled socket was closed. The close frame says 4008 when it
	// can get through; to a client that reads nothing it usually cannot (the
	// socket's buffers are full), so the client sees the TCP close (1006).
	_ = stalled.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := stalled.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errorsAs(err, &ce) || (ce.Code != gateway.CloseSlowConsumer && ce.Code != websocket.CloseAbnormalClosure) {
			t.Fatalf("stalled socket ended with %v, want close %d", err, gateway.CloseSlowConsumer)
		}
		break
	}
}

func TestFloodIsRateLimitedWithItsReqIDAndNotDisconnected(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.RatePerSec, c.RateBurst = 5, 5 })
	a := register(t, n.URL(), "alice")
	c := dial(t, n.URL(), a.Token, 0)
	c.attached()
	const flood = 30
	for i := range flood {
		c.write(&courierpb.ClientFrame{ReqId: uint64(i + 1), Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
	}
	pongs, limited := 0, 0
	for pongs+limited < flood {
		f := c.mustRead()
		switch {
		case f.GetPong() != nil:
			pongs++
		case f.GetError().GetCode() == courierpb.ErrorCode_RATE_LIMITED:
			if f.ReqId == 0 || !f.GetError().Retryable {
				t.Fatalf("rate-limit error %v lacks its req_id or retryable flag", f)
			}
			limited++
		default:
			t.Fatalf("unexpected frame %v", f)
		}
	}
	if pongs < 5 || limited == 0 {
		t.Fatalf("%d pongs, %d rate-limited; want the burst answered and the rest limited", pongs, limited)
	}
	// Still connected: a rate-limited client is slowed, not thrown out.
	time.Sleep(500 * time.Millisecond)
	c.write(&courierpb.ClientFrame{ReqId: 999, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
	if f := c.mustRead(); f.GetPong() == nil || f.ReqId != 999 {
		t.Fatalf("got %v after the flood, want Pong 999", f)
	}
}

// TestQuietAckIsAppliedWithoutAnAnswer: an ack marked quiet deletes like
// any other but gets no AckOk; a plain ack still gets one.
func TestQuietAckIsAppliedWithoutAnAnswer(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), "alice")
	b := register(t, n.URL(), "bob")
	ca := dial(t, n.URL(), a.Token, 0)
	ca.attached()
	ca.sendAcked(1, b.UserID, "m1", []byte("one"))
	ca.sendAcked(2, b.UserID, "m2", []byte("two"))

	cb := dial(t, n.URL(), b.Token, 0)
	cb.attached()
	first, second := cb.mustEntry(), cb.mustEntry()
	cb.write(&courierpb.ClientFrame{ReqId: 10, Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: first.InboxSeq, Quiet: true}}})
	cb.write(&courierpb.ClientFrame{ReqId: 11, Body: &courierpb.ClientFrame_Ack{Ack: &courierpb.Ack{UpToInboxSeq: second.InboxSeq}}})
	for {
		f := cb.mustRead()
		if f.ReqId == 10 {
			t.Fatalf("the quiet ack was answered: %v", f)
		}
		if f.ReqId == 11 {
			if f.GetAckOk().GetUpToInboxSeq() != second.InboxSeq {
				t.Fatalf("plain ack answered %v, want AckOk through %d", f, second.InboxSeq)
			}
			break
		}
	}
	// Acks are applied in order, so the quiet one was before AckOk 11: a new
	// session from the start replays nothing.
	again := dial(t, n.URL(), b.Token, 0)
	again.attached()
	if f, err := again.read(300 * time.Millisecond); err == nil && f.GetDeliver() != nil {
		t.Fatalf("acked entries replayed: %v", f)
	}
}

// TestSlowReadersAreCutOffByQueuedBytesNotFrames: a flood of large
// messages to clients that stop reading is bounded by the bytes queued for
// them, per session and for the node, not by the frame count alone (1,024
// frames of 64 KiB would be 64 MiB a reader); a reader that keeps up is
// untouched, and the node's queues hold nothing once the slow ones are gone.
func TestSlowReadersAreCutOffByQueuedBytesNotFrames(t *testing.T) {
	const perSession = 1 << 20
	n := startNode(t, func(c *node.Config) {
		c.SendQueue = 1024
		c.SendQueueBytes = perSession
		c.QueuedBytesTotal = perSession + perSession/2
	})
	a := register(t, n.URL(), "alice")
	slow1 := register(t, n.URL(), "slow1")
	slow2 := register(t, n.URL(), "slow2")
	fast := register(t, n.URL(), "fast")
	for _, acc := range []account{slow1, slow2} {
		c := dial(t, n.URL(), acc.Token, 0)
		c.attached() // and then reads nothing
	}
	cf := dial(t, n.URL(), fast.Token, 0)
	cf.attached()
	ca := dial(t, n.URL(), a.Token, 0)
	ca.attached()

	payload := bytes.Repeat([]byte("f"), 64<<10)
	var peak int64
	req := uint64(0)
	for i := range 120 {
		for _, to := range []string{slow1.UserID, slow2.UserID} {
			req++
			ca.sendAcked(req, to, fmt.Sprintf("m%03d-%s", i, to[:4]), payload)
			peak = max(peak, n.Gateway().QueuedBytes())
		}
		if i%20 == 0 {
			req++
			ca.sendAcked(req, fast.UserID, fmt.Sprintf("f%03d", i), []byte("small"))
			if e := cf.mustEntry(); e.ClientMsgId != fmt.Sprintf("f%03d", i) {
				t.Fatalf("the fast reader got %s", e.ClientMsgId)
			}
		}
	}
	// Each slow reader holds at most its bound, and the node at most its
	// budget plus one frame per session past it.
	if limit := int64(perSession + perSession/2 + 2*(64<<10+2*256)); peak > limit {
		t.Fatalf("queues held %d bytes at their peak, want at most %d", peak, limit)
	}
	waitFor(t, 5*time.Second, func() bool { return n.Gateway().Sessions() == 2 })
	waitFor(t, 5*time.Second, func() bool { return n.Gateway().QueuedBytes() == 0 })
	t.Logf("peak queued %d KiB for two stalled readers", peak>>10)
}
