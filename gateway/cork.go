package gateway

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// corkedConn lets a session's writer put every frame it has queued on the
// wire with one write syscall. gorilla/websocket writes each message (and
// each control frame) straight to the connection; under load a session has
// several frames queued at once (acks, receipts, deliveries), and a
// syscall per frame was the largest single cost of the server's write
// path. While corked, writes collect in a pooled buffer; uncork sends them.
// An idle connection is never corked and holds no buffer.
type corkedConn struct {
	net.Conn

	mu       sync.Mutex
	corked   bool
	flushing bool    // a flush's write is in progress, without mu
	buf      *[]byte // collected writes, from corkPool; nil when empty
	err      error   // the first failed flush: later corked writes fail too
}

const (
	// corkBufSize is the initial capacity of a pooled buffer.
	corkBufSize = 8 << 10
	// corkFlushAt flushes a corked buffer early, so a long run of frames
	// (a replay) streams instead of piling up.
	corkFlushAt = 64 << 10
	// corkKeepMax: larger buffers are not pooled again.
	corkKeepMax = 256 << 10
	// closeFlushTimeout bounds how long Close tries to send what is corked
	// (the close frame among it), like the close frame's own deadline.
	closeFlushTimeout = time.Second
)

var corkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, corkBufSize)
	return &b
}}

// Write passes p through, or keeps it while corked. Writes on one
// connection never interleave within a call (net.Conn's guarantee), so a
// control frame written through while a flush runs lands between frames.
func (c *corkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if !c.corked {
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.buf == nil {
		c.buf = corkPool.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, p...)
	full := len(*c.buf) >= corkFlushAt && !c.flushing
	c.mu.Unlock()
	if full {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// cork holds back the writes that follow until uncork.
func (c *corkedConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork sends what was held back, with deadline, and lets later writes
// through.
func (c *corkedConn) uncork(deadline time.Time) error {
	c.mu.Lock()
	c.corked = false
	pending := c.buf != nil
	c.mu.Unlock()
	if !pending {
		return nil
	}
	_ = c.Conn.SetWriteDeadline(deadline)
	return c.flush()
}

// flush writes the collected bytes. It does not hold mu during the
// syscall, so Close (from another goroutine) never waits behind a write
// to a client that does not read.
func (c *corkedConn) flush() error {
	c.mu.Lock()
	if c.buf == nil || c.flushing {
		c.mu.Unlock()
		return nil
	}
	b := c.buf
	c.buf, c.flushing = nil, true
	c.mu.Unlock()

	_, err := c.Conn.Write(*b)
	release(b)

	c.mu.Lock()
	c.flushing = false
	if err != nil && c.err == nil {
		c.err = err
	}
	more := c.buf != nil && !c.corked
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if more {
		// Written by a control frame while we flushed, after uncork.
		return c.flush()
	}
	return nil
}

func release(b *[]byte) {
	if cap(*b) > corkKeepMax {
		return
	}
	*b = (*b)[:0]
	corkPool.Put(b)
}

// Close sends what is still corked (a close frame, typically) when no
// flush is under way, then closes the connection.
func (c *corkedConn) Close() error {
	c.mu.Lock()
	c.corked = false
	var pending *[]byte
	if !c.flushing && c.err == nil {
		pending, c.buf = c.buf, nil
	}
	c.mu.Unlock()
	if pending != nil {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		_, _ = c.Conn.Write(*pending)
		release(pending)
	}
	return c.Conn.Close()
}

// corkingResponseWriter hands the WebSocket upgrader a corkedConn when it
// hijacks the HTTP connection, and a read buffer of the session's own (br)
// in place of the HTTP server's 4 KiB one: gorilla reads frames through
// it, and the session can see what it holds and swap its buffer out while
// the socket is silent (park.go).
type corkingResponseWriter struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (w *corkingResponseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	cc := &corkedConn{Conn: conn}
	if brw.Reader.Buffered() > 0 {
		// The client sent data before the handshake completed: gorilla
		// refuses that when it sees the bytes, so let it see them.
		return cc, brw, nil
	}
	w.br = bufio.NewReaderSize(cc, readBufferSize)
	return cc, bufio.NewReadWriter(w.br, brw.Writer), nil
}
