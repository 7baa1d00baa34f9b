package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

// A conns connection is a bare authenticated WebSocket, not an SDK client:
// one reader goroutine and small buffers, so the worker's own footprint
// stays far below the server's and a worker process can hold ~19,900.

// sourceIP is the k-th loopback source address: 127.0.1.1, 127.0.1.2, …
// Each address has its own ~28,000 ephemeral ports, so spreading over them
// lifts the 64k-connections-per-destination limit of one source address.
func sourceIP(k int) net.IP {
	return net.IPv4(127, 0, byte(1+k/254), byte(1+k%254))
}

// maxSourceIPs is how many sourceIP addresses exist.
const maxSourceIPs = 254 * 254

// isLoopback reports whether a base URL's host is a loopback address.
func isLoopback(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// gateway is one server a worker connects to.
type gateway struct {
	base, ws string
	local    bool // loopback: spread source addresses
}

func gatewayOf(base string) (gateway, error) {
	u, err := url.Parse(base)
	if err != nil {
		return gateway{}, fmt.Errorf("bench: gateway %q: %w", base, err)
	}
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.Path = strings.TrimRight(u.Path, "/") + "/v1/ws"
	return gateway{base: base, ws: u.String(), local: isLoopback(base)}, nil
}

// dialers hands out one WebSocket dialer per source address.
type dialers struct {
	tls     *tls.Config
	sources int
	pool    websocket.BufferPool
	mu      sync.Mutex
	byIP    map[int]*websocket.Dialer
	plain   *websocket.Dialer
}

func newDialers(t *tls.Config, sources int) *dialers {
	d := &dialers{tls: t, sources: sources, pool: &sync.Pool{}, byIP: make(map[int]*websocket.Dialer)}
	d.plain = d.make(nil)
	return d
}

func (d *dialers) make(local net.Addr) *websocket.Dialer {
	nd := &net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}
	return &websocket.Dialer{
		NetDialContext:   nd.DialContext,
		HandshakeTimeout: 30 * time.Second,
		TLSClientConfig:  d.tls,
		ReadBufferSize:   512,
		WriteBufferSize:  512,
		WriteBufferPool:  d.pool,
	}
}

// forConn is the dialer of global connection g to gw.
func (d *dialers) forConn(gw gateway, g int) *websocket.Dialer {
	if !gw.local || d.sources <= 0 {
		return d.plain
	}
	k := g % d.sources
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.byIP[k]; w != nil {
		return w
	}
	w := d.make(&net.TCPAddr{IP: sourceIP(k)})
	d.byIP[k] = w
	return w
}

// fetchToken exchanges a device secret for an access token (POST /v1/token).
func fetchToken(ctx context.Context, hc *http.Client, base string, cr client.Credentials) (string, error) {
	body, _ := json.Marshal(map[string]any{"user_id": cr.UserID, "device_id": cr.DeviceID, "device_secret": cr.DeviceSecret})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/token", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("get token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("get token: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", fmt.Errorf("get token: decode: %w", err)
	}
	return out.AccessToken, nil
}

// errUnauthorized: the gateway refused the token (expired while waiting).
var errUnauthorized = errors.New("token refused")

// openConn opens an authenticated session and waits for Attached.
func openConn(ctx context.Context, d *websocket.Dialer, gw gateway, token string) (*websocket.Conn, error) {
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+token)
	ws, resp, err := d.DialContext(ctx, gw.ws+"?after=0", hdr)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, errUnauthorized
		}
		if resp != nil {
			return nil, fmt.Errorf("open session: %s", resp.Status)
		}
		return nil, fmt.Errorf("open session: %w", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = ws.SetReadDeadline(deadline)
	for {
		f, err := readFrame(ws)
		if err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("wait for attach: %w", err)
		}
		if f.GetAttached() != nil {
			break
		}
		if e := f.GetError(); e != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("attach refused: %s: %s", e.Code, e.Message)
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, nil
}

func readFrame(ws *websocket.Conn) (*courierpb.ServerFrame, error) {
	_, data, err := ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	f := &courierpb.ServerFrame{}
	if err := proto.Unmarshal(data, f); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	return f, nil
}

// held is one open connection. Only the pinger and the final close write;
// wmu orders them.
type held struct {
	ws     *websocket.Conn
	wmu    sync.Mutex
	closed bool
	pinger *time.Timer
}

// keepAlive pings the connection every interval from the moment it is
// open (the first after a random part of it, so pings spread evenly) until
// it is closed: a connection opened early in a long connect phase must not
// go silent past the server's idle timeout while the others connect.
func (h *held) keepAlive(every time.Duration, frame []byte) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	var tick func()
	tick = func() {
		if h.ping(frame) == nil {
			h.wmu.Lock()
			if !h.closed {
				h.pinger.Reset(every)
			}
			h.wmu.Unlock()
		}
	}
	h.pinger = time.AfterFunc(time.Duration(rand.Int64N(int64(every))), tick)
}

// ping writes one Ping frame; the server drops sockets silent for 60 s.
func (h *held) ping(frame []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.closed {
		return nil
	}
	_ = h.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return h.ws.WriteMessage(websocket.BinaryMessage, frame)
}

// close says goodbye and closes the socket.
func (h *held) close() {
	h.wmu.Lock()
	if !h.closed {
		h.closed = true
		if h.pinger != nil {
			h.pinger.Stop()
		}
		_ = h.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	}
	h.wmu.Unlock()
	_ = h.ws.Close()
}

func (h *held) isClosed() bool {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.closed
}

// pingFrame is the encoded keep-alive every held connection sends.
func pingFrame() []byte {
	b, _ := proto.Marshal(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
	return b
}
