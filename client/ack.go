package client

import "sync"

// ackBatcher decides when cumulative acks go out: the first entry handed to
// the application after a flush arms one timer, and the flush acks
// everything handed out by then in one frame.
type ackBatcher struct {
	mu     sync.Mutex
	handed uint64 // highest inbox_seq handed to the application
	acked  uint64 // highest inbox_seq an Ack (or a resume) covered
	armed  bool
}

// hand records that seq was handed out; it reports whether the caller must
// arm the flush timer.
func (a *ackBatcher) hand(seq uint64) (arm bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if seq > a.handed {
		a.handed = seq
	}
	if a.armed || a.handed <= a.acked {
		return false
	}
	a.armed = true
	return true
}

// flush disarms the timer and returns what to acknowledge now, if anything.
func (a *ackBatcher) flush() (upTo uint64, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if a.handed <= a.acked {
		return 0, false
	}
	return a.handed, true
}

// sent records that an Ack through upTo went out (or that a reconnect with
// after=upTo acknowledged it).
func (a *ackBatcher) sent(upTo uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if upTo > a.acked {
		a.acked = upTo
	}
}

// last returns the highest inbox_seq handed to the application: the resume
// point of the next connection.
func (a *ackBatcher) last() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.handed
}

// retract forgets that the last Ack went out (the server refused it), so
// the next flush sends it again.
func (a *ackBatcher) retract() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acked = 0
}
