package node_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

func testLogger(testing.TB) *slog.Logger { return nodetest.Logger() }

func startNode(t testing.TB, mutate func(*node.Config)) *node.Node {
	t.Helper()
	var cfg node.Config
	if mutate != nil {
		mutate(&cfg)
	}
	return nodetest.Start(t, cfg)
}

// account is a registered user with a token for device 1.
type account struct {
	UserID, Secret, Token string
}

func postJSON(t testing.TB, hc *http.Client, u string, body any, out any) (int, gatewayError) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := hc.Post(u, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ge gatewayError
	if resp.StatusCode >= 300 {
		_ = json.Unmarshal(raw, &ge)
		return resp.StatusCode, ge
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("decode %s answer %q: %v", u, raw, err)
		}
	}
	return resp.StatusCode, ge
}

type gatewayError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func registerWith(t testing.TB, hc *http.Client, base, handle string) account {
	t.Helper()
	var reg gateway.RegisterResponse
	if code, ge := postJSON(t, hc, base+"/v1/register", gateway.RegisterRequest{Handle: handle}, &reg); code != http.StatusCreated {
		t.Fatalf("register %s: %d %+v", handle, code, ge)
	}
	var tok gateway.TokenResponse
	if code, ge := postJSON(t, hc, base+"/v1/token", gateway.TokenRequest{UserID: reg.UserID, DeviceID: 1, DeviceSecret: reg.DeviceSecret}, &tok); code != http.StatusOK {
		t.Fatalf("token %s: %d %+v", handle, code, ge)
	}
	return account{UserID: reg.UserID, Secret: reg.DeviceSecret, Token: tok.AccessToken}
}

func register(t testing.TB, base, handle string) account {
	return registerWith(t, http.DefaultClient, base, handle)
}

func wsURL(base, token string, after uint64) string {
	u, _ := url.Parse(base)
	if u.Scheme == "https" {
		u.Scheme = "wss"
	} else {
		u.Scheme = "ws"
	}
	u.Path = "/v1/ws"
	q := url.Values{}
	if token != "" {
		q.Set("token", token)
	}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// wsConn is a raw test client: it speaks frames, nothing more.
type wsConn struct {
	t       testing.TB
	c       *websocket.Conn
	json    bool
	entries []*courierpb.InboxEntry // unpacked from Deliver frames, not yet returned
}

func dial(t testing.TB, base, token string, after uint64) *wsConn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(wsURL(base, token, after), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &wsConn{t: t, c: c}
}

func dialTLS(t testing.TB, base, token string, cfg *tls.Config) *wsConn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial(wsURL(base, token, 0), nil)
	if err != nil {
		t.Fatalf("dial wss: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &wsConn{t: t, c: c}
}

func (w *wsConn) write(f *courierpb.ClientFrame) {
	w.t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		w.t.Fatal(err)
	}
	w.writeRaw(websocket.BinaryMessage, b)
}

func (w *wsConn) writeRaw(typ int, b []byte) {
	w.t.Helper()
	if err := w.c.WriteMessage(typ, b); err != nil {
		w.t.Fatalf("write frame: %v", err)
	}
}

// read returns the next frame, or the error that ended the socket.
func (w *wsConn) read(timeout time.Duration) (*courierpb.ServerFrame, error) {
	_ = w.c.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := w.c.ReadMessage()
	if err != nil {
		return nil, err
	}
	f := &courierpb.ServerFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("undecodable server frame: %w", err)
	}
	return f, nil
}

func (w *wsConn) mustRead() *courierpb.ServerFrame {
	w.t.Helper()
	f, err := w.read(10 * time.Second)
	if err != nil {
		w.t.Fatalf("read frame: %v", err)
	}
	return f
}

// attached reads the Attached frame every session starts with.
func (w *wsConn) attached() *courierpb.Attached {
	w.t.Helper()
	f := w.mustRead()
	a := f.GetAttached()
	if a == nil {
		w.t.Fatalf("first frame is %v, want Attached", f)
	}
	return a
}

// expectError reads frames until an Error for reqID and returns it.
func (w *wsConn) expectError(reqID uint64) *courierpb.Error {
	w.t.Helper()
	for {
		f := w.mustRead()
		if e := f.GetError(); e != nil && f.ReqId == reqID {
			return e
		}
	}
}

func (w *wsConn) send(reqID uint64, to, clientMsgID string, ct []byte) {
	w.write(&courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
		ClientMsgId: clientMsgID, ToUserId: to, Ciphertext: ct,
	}}})
}

// sendAcked sends and waits for its SendAck.
func (w *wsConn) sendAcked(reqID uint64, to, clientMsgID string, ct []byte) *courierpb.SendAck {
	w.t.Helper()
	w.send(reqID, to, clientMsgID, ct)
	for {
		f := w.mustRead()
		if f.ReqId != reqID {
			continue
		}
		if a := f.GetSendAck(); a != nil {
			return a
		}
		w.t.Fatalf("send %s: %v", clientMsgID, f)
	}
}

// closeCode reads until the socket closes and returns its close code.
func (w *wsConn) closeCode(timeout time.Duration) int {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, err := w.read(time.Until(deadline))
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce.Code
		}
		if strings.Contains(err.Error(), "timeout") {
			break
		}
		return -1
	}
	w.t.Fatalf("socket still open after %v", timeout)
	return 0
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// nextEntry returns the next delivered inbox entry, skipping other frames.
func (w *wsConn) nextEntry(timeout time.Duration) (*courierpb.InboxEntry, error) {
	deadline := time.Now().Add(timeout)
	for len(w.entries) == 0 {
		f, err := w.read(time.Until(deadline))
		if err != nil {
			return nil, err
		}
		w.entries = append(w.entries, f.GetDeliver().GetEntries()...)
	}
	e := w.entries[0]
	w.entries = w.entries[1:]
	return e, nil
}

func (w *wsConn) mustEntry() *courierpb.InboxEntry {
	w.t.Helper()
	e, err := w.nextEntry(10 * time.Second)
	if err != nil {
		w.t.Fatalf("read entry: %v", err)
	}
	return e
}
