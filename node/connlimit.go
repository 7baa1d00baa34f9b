package node

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/courier-im/courier/gateway"
)

// perIPListener caps the connections one client IP (an IPv6 /64) holds
// open at once. The excess is closed as soon as it is accepted, before any
// TLS handshake or request is read, so a client holding many idle sockets
// costs the node descriptors only up to its cap, and everyone else is
// served. WebSockets count as long as they stay open.
type perIPListener struct {
	net.Listener
	max int
	// loopback: count loopback peers too (gateway.Limits.LimitLoopback).
	loopback bool
	log      *slog.Logger
	// refused counts connections closed for being over the cap.
	refused atomic.Int64

	mu   sync.Mutex
	open map[string]int // guarded by mu; a key leaves the map at zero
}

func limitPerIP(ln net.Listener, max int, loopback bool, log *slog.Logger) *perIPListener {
	return &perIPListener{Listener: ln, max: max, loopback: loopback, log: log, open: make(map[string]int)}
}

// Accept returns the next connection within its IP's cap, closing the
// ones over it. It never blocks on a refused client.
func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, limited := l.connKey(c)
		if !limited {
			return c, nil
		}
		l.mu.Lock()
		n := l.open[key]
		if n >= l.max {
			l.mu.Unlock()
			if r := l.refused.Add(1); r&(r-1) == 0 { // the 1st, 2nd, 4th, ... refusal
				l.log.Warn("refused a connection: too many open from one address", "addr", key, "max", l.max, "refused_total", r)
			}
			// RST rather than FIN: nothing was read, and the client learns
			// at once instead of waiting for an answer.
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			continue
		}
		l.open[key] = n + 1
		l.mu.Unlock()
		return &countedConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *perIPListener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key] <= 1 {
		delete(l.open, key)
	} else {
		l.open[key]--
	}
}

// connKey is c's per-IP key; limited is false for a peer the cap leaves
// alone (loopback, unless configured otherwise).
func (l *perIPListener) connKey(c net.Conn) (key string, limited bool) {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String(), true
	}
	return gateway.IPKey(host), l.loopback || !gateway.IsLoopback(host)
}

// countedConn gives its slot back once, on the first Close.
type countedConn struct {
	net.Conn
	l      *perIPListener
	key    string
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.key)
	}
	return c.Conn.Close()
}

// SyscallConn hands the socket to the gateway's readiness poller, which
// parks silent WebSockets (gateway/park.go).
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
