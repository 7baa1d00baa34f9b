package gateway

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// A session's reader is parked while its socket is silent: the reader
// goroutine exits, its 1 KiB read buffer is dropped, and the gateway's
// readiness poller starts a new reader when bytes (or a hang-up) arrive.
// Nearly every socket a messaging server holds is silent nearly all the
// time; a goroutine blocked in Read would cost each of them a stack of
// 4 KiB or more for as long as it is open.
//
// The reader parks only after ParkAfter of silence with nothing buffered,
// so a busy socket keeps its reader and pays nothing for this.
//
// States of session.reader; the poller, the idle timer and closeWith race
// to leave readerParked and a compare-and-swap picks the one that does.
const (
	readerRunning int32 = iota // a reader goroutine owns the socket's read side
	readerParked               // no reader; the poller or the idle timer wakes one
	readerDone                 // the read side is finished
)

// readBufferSize is the read buffer of a session with a reader.
const readBufferSize = 1024

// park lets the reader goroutine exit; false means it must go on reading
// (the socket could not be watched). idleLeft is how long the socket may
// stay silent before it is closed. The caller saw nothing buffered.
func (s *session) park(idleLeft time.Duration) bool {
	*s.br = bufio.Reader{} // empty: its buffer is garbage until a reader runs again
	s.idleAt.Store(int64(s.g.clock() + idleLeft))
	s.reader.Store(readerParked)
	if err := s.readyWatch.Arm(); err != nil {
		if !s.reader.CompareAndSwap(readerParked, readerRunning) {
			return true // closed meanwhile: nothing left to read
		}
		s.noPark = true
		s.logger().Warn("cannot park a silent socket; keeping its reader", "err", err)
		s.resetReadBuffer()
		return false
	}
	return true
}

// wake runs on the poller's goroutine when a parked socket has something
// to read (or was hung up): a new reader takes over.
func (s *session) wake() {
	if !s.reader.CompareAndSwap(readerParked, readerRunning) {
		return
	}
	s.resetReadBuffer()
	go s.readLoop()
}

// idleExpired closes a socket that stayed parked for the rest of its idle
// timeout; the gateway's housekeeping calls it (renew.go).
func (s *session) idleExpired() { s.endParked(CloseIdle, idleReason) }

// unpark ends a parked read side when the socket is closed from elsewhere
// (shutdown, a failed write): no reader is there to see the socket go and
// tell the actor.
func (s *session) unpark() { s.endParked(0, "") }

// endParked finishes the read side if it is parked, as a reader would on a
// failed read: the watch is dropped, the socket closed with code (unless it
// is 0: the caller closes it) and then the actor told. The close comes
// first because the stopping actor closes the socket too, with 1000, and
// the client must see why it was cut off. False if the side was not parked
// (a reader runs, or the side is finished already).
func (s *session) endParked(code int, reason string) bool {
	if !s.reader.CompareAndSwap(readerParked, readerDone) {
		return false
	}
	s.readyWatch.Disarm()
	if code != 0 {
		s.closeWith(code, reason)
	}
	s.g.system.Root.Send(s.self, connClosed{})
	return true
}

func (s *session) resetReadBuffer() {
	*s.br = *bufio.NewReaderSize(s.conn.NetConn(), readBufferSize)
}

// skipControlFrames answers the WebSocket pings (and drops the pongs) at
// the front of the read buffer. gorilla answers them too, but only inside
// NextReader, which then waits for a data frame: a client that keeps alive
// with WebSocket pings would keep its reader forever. Anything that is not
// a complete, well-formed, masked ping or pong is left for gorilla, which
// owns the protocol's errors. The caller saw at least one byte buffered.
func (s *session) skipControlFrames() error {
	for s.br.Buffered() > 0 {
		h, err := s.br.Peek(2)
		if err != nil {
			return err
		}
		op, n := int(h[0]&0x0f), int(h[1]&0x7f)
		const fin, masked = 0x80, 0x80
		if h[0]&0xf0 != fin || h[1]&masked == 0 || n > 125 || (op != websocket.PingMessage && op != websocket.PongMessage) {
			return nil
		}
		frame, err := s.br.Peek(2 + 4 + n)
		if err != nil {
			return err // bounded by the read deadline, like any frame
		}
		if op == websocket.PingMessage {
			key, payload := frame[2:6], make([]byte, n)
			for i := range payload {
				payload[i] = frame[6+i] ^ key[i%4]
			}
			err := s.conn.WriteControl(websocket.PongMessage, payload, time.Now().Add(s.g.cfg.WriteTimeout))
			if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
				return err
			}
		}
		_, _ = s.br.Discard(len(frame))
	}
	return nil
}

// rawConn is the socket under the session's connection (under TLS and the
// corking wrapper), for the readiness poller.
func rawConn(c net.Conn) (syscall.Conn, bool) {
	for {
		switch x := c.(type) {
		case *corkedConn:
			c = x.Conn
		case *tls.Conn:
			c = x.NetConn()
		case syscall.Conn:
			return x, true
		default:
			return nil, false
		}
	}
}
