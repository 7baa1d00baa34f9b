package client

import (
	"sync"
	"time"
)

// ConnState is a change of a Client's connection that the application may
// want to show ("connecting..."), reported by WithConnStateHandler.
type ConnState int

const (
	// Disconnected: the session was lost and the Client is reconnecting.
	// Reported once per outage, however many reconnect attempts fail.
	Disconnected ConnState = iota + 1
	// Reconnected: a session attached again after Disconnected; entries
	// flow again, resuming where they stopped.
	Reconnected
)

func (s ConnState) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Reconnected:
		return "reconnected"
	}
	return "ConnState(?)"
}

// ConnEvent is one ConnState change.
type ConnEvent struct {
	State ConnState
	// Err is why the session was lost (Disconnected only).
	Err error
	// At is when the Client noticed.
	At time.Time
}

// WithConnStateHandler calls h with every Disconnected and Reconnected
// event, in order. Disconnected comes once per outage (not per failed
// reconnect attempt) and Reconnected when a session attaches again; a pause
// the SDK takes while the application does not read Entries is not an
// outage. Neither comes for the first connection (Dial returns when it is
// up) nor when the Client stops for good: then Entries is closed and Err
// says why.
//
// h runs on a goroutine of its own, one event at a time, so it may block
// or call the Client (Close included) without holding the Client up;
// events wait for it in a bounded queue (when a handler falls far behind,
// the oldest Disconnected/Reconnected pairs are dropped). Close stops the
// goroutine: events not yet handed over are dropped, and Close does not
// wait for a call of h in progress.
func WithConnStateHandler(h func(ConnEvent)) Option {
	return func(o *config) { o.connState = h }
}

// notifierQueue bounds the events waiting for a slow handler.
const notifierQueue = 64

// notifier hands ConnEvents to the application's handler without ever
// making the Client wait for it.
type notifier struct {
	h    func(ConnEvent)
	wake chan struct{}
	stop chan struct{}
	once sync.Once

	mu    sync.Mutex
	queue []ConnEvent
}

func startNotifier(h func(ConnEvent)) *notifier {
	n := &notifier{h: h, wake: make(chan struct{}, 1), stop: make(chan struct{})}
	go n.run()
	return n
}

// post queues e for the handler; it never blocks. A nil notifier (no
// handler) drops it.
func (n *notifier) post(e ConnEvent) {
	if n == nil {
		return
	}
	n.mu.Lock()
	if len(n.queue) >= notifierQueue {
		// Events alternate, so dropping the oldest two keeps the order
		// of states intact.
		n.queue = append(n.queue[:0], n.queue[2:]...)
	}
	n.queue = append(n.queue, e)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	for {
		select {
		case <-n.wake:
		case <-n.stop:
			return
		}
		for {
			n.mu.Lock()
			if len(n.queue) == 0 {
				n.mu.Unlock()
				break
			}
			e := n.queue[0]
			n.queue = n.queue[1:]
			n.mu.Unlock()
			select {
			case <-n.stop:
				return
			default:
			}
			n.h(e)
		}
	}
}

// close stops the handler's goroutine (after a call in progress returns).
func (n *notifier) close() {
	if n == nil {
		return
	}
	n.once.Do(func() { close(n.stop) })
}
