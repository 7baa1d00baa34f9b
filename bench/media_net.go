package bench

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// mediaNet is one media client's HTTP stack: its own transport (a phone
// has its own connections), whose connections the bench can cut KillEvery
// after they were opened, and a round tripper that counts what the SDK
// does about it.
//
// Resumes are counted from the requests themselves, the way the SDK's
// protocol shows them: an upload resumes when it asks the server for its
// offset (HEAD) and then sends from there (the PATCH after a HEAD; one
// resume however many HEADs it took), a download when it asks for a Range
// (the SDK sends one only when it already holds bytes).
type mediaNet struct {
	killEvery time.Duration

	kills     atomic.Int64 // connections the bench closed
	busyKills atomic.Int64 // of which had carried bytes in the last busyWindow
	wireUp    atomic.Int64 // bytes written on the client's connections
	wireDown  atomic.Int64 // bytes read from them
	upResumes atomic.Int64
	dnResumes atomic.Int64

	mu        sync.Mutex
	headSeen  bool      // a HEAD since the last PATCH
	firstGet  bool      // the first blob GET was timed
	getSent   time.Time // when the first blob GET was sent
	firstByte time.Time // when its first body byte arrived

	closeMu sync.Mutex
	conns   map[*killConn]struct{}
}

func newMediaNet(tlsConf *tls.Config, killEvery time.Duration) (*mediaNet, *http.Client) {
	n := &mediaNet{killEvery: killEvery, conns: map[*killConn]struct{}{}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConf != nil {
		// Each transport configures HTTP/2 into its TLS config.
		tr.TLSClientConfig = tlsConf.Clone()
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return n.wrap(c), nil
	}
	// The SDK takes the client's Timeout off for media (a large file takes
	// long); token requests keep it.
	return n, &http.Client{Transport: &mediaRoundTripper{n: n, next: tr}, Timeout: 30 * time.Second}
}

// killConn is a connection that counts its bytes and, with KillEvery, is
// closed that long after it was opened.
type killConn struct {
	net.Conn
	n      *mediaNet
	timer  *time.Timer
	once   sync.Once
	lastIO atomic.Int64 // unix nanoseconds of the last read or write of a byte
}

// busyWindow: a connection cut within this long after its last byte was
// cut mid-transfer (an idle pooled connection is not).
const busyWindow = 50 * time.Millisecond

func (n *mediaNet) wrap(c net.Conn) net.Conn {
	kc := &killConn{Conn: c, n: n}
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	if n.killEvery > 0 {
		n.conns[kc] = struct{}{}
		kc.timer = time.AfterFunc(n.killEvery, func() {
			n.kills.Add(1)
			if time.Since(time.Unix(0, kc.lastIO.Load())) < busyWindow {
				n.busyKills.Add(1)
			}
			_ = kc.Close()
		})
	}
	return kc
}

func (c *killConn) Read(b []byte) (int, error) {
	k, err := c.Conn.Read(b)
	if k > 0 {
		c.n.wireDown.Add(int64(k))
		c.lastIO.Store(time.Now().UnixNano())
	}
	return k, err
}

func (c *killConn) Write(b []byte) (int, error) {
	k, err := c.Conn.Write(b)
	if k > 0 {
		c.n.wireUp.Add(int64(k))
		c.lastIO.Store(time.Now().UnixNano())
	}
	return k, err
}

func (c *killConn) Close() error {
	c.once.Do(func() {
		// Under closeMu: wrap sets timer under it, and the timer's own
		// callback may close the connection before wrap has returned.
		c.n.closeMu.Lock()
		defer c.n.closeMu.Unlock()
		if c.timer != nil {
			c.timer.Stop()
			delete(c.n.conns, c)
		}
	})
	return c.Conn.Close()
}

// stopKilling cancels the kill timers of open connections (the run is
// over: closing the clients must not count as kills).
func (n *mediaNet) stopKilling() {
	n.closeMu.Lock()
	defer n.closeMu.Unlock()
	for c := range n.conns {
		c.timer.Stop()
	}
	n.killEvery = 0
}

// ttfb is the first blob GET's time from request to first body byte (0
// when none arrived).
func (n *mediaNet) ttfb() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.firstByte.IsZero() {
		return 0
	}
	return n.firstByte.Sub(n.getSent)
}

type mediaRoundTripper struct {
	n    *mediaNet
	next http.RoundTripper
}

func (t *mediaRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	n := t.n
	blobGet := req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/v1/media/blobs/")
	timeIt := false
	n.mu.Lock()
	switch {
	case req.Method == http.MethodHead && strings.HasPrefix(req.URL.Path, "/v1/media/"):
		n.headSeen = true
	case req.Method == http.MethodPatch:
		if n.headSeen {
			n.upResumes.Add(1)
		}
		n.headSeen = false
	case blobGet && req.Header.Get("Range") != "":
		n.dnResumes.Add(1)
	case blobGet && !n.firstGet:
		n.firstGet, timeIt = true, true
		n.getSent = time.Now()
	}
	n.mu.Unlock()
	resp, err := t.next.RoundTrip(req)
	if err != nil || !timeIt {
		return resp, err
	}
	resp.Body = &firstByteBody{ReadCloser: resp.Body, n: n}
	return resp, nil
}

// firstByteBody notes when the first byte of a body arrived.
type firstByteBody struct {
	io.ReadCloser
	n    *mediaNet
	seen bool
}

func (b *firstByteBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	if k > 0 && !b.seen {
		b.seen = true
		b.n.mu.Lock()
		b.n.firstByte = time.Now()
		b.n.mu.Unlock()
	}
	return k, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (t *mediaRoundTripper) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
