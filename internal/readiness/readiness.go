// Package readiness tells when an idle socket has something to read, so
// that nothing has to sit blocked in Read while it waits.
//
// Go's own network poller wakes a goroutine parked in Read; that costs
// each idle socket a goroutine and its stack (4 KiB or more) for as long
// as it is open. A messaging gateway holds tens of thousands of sockets
// that are silent nearly all the time. With a Poller, the gateway lets a
// connection's reader goroutine exit while the socket is silent and starts
// a new one when the Poller says data (or a hang-up) has arrived.
//
// Watches are one-shot: after a Watch fires it must be armed again. A
// Watch only reports that the kernel holds bytes for the socket; bytes
// already read into a user-space buffer (bufio, TLS) are the caller's to
// drain before it arms.
package readiness

import "errors"

// ErrUnsupported: this platform has no Poller; keep a reader per socket.
var ErrUnsupported = errors.New("readiness: not supported on this platform")

// ErrClosed: the Poller was closed.
var ErrClosed = errors.New("readiness: poller closed")
