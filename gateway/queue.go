package gateway

import "sync"

// frameQueue is a session's bounded send queue. Unlike a buffered channel
// of SendQueue slots it holds memory only for what is queued, so an idle
// connection costs a few words instead of SendQueue×16 bytes (16 KiB at
// the default), and the writer waits on one signal channel.
type frameQueue struct {
	mu    sync.Mutex
	items []outFrame
	head  int
	limit int
	// ready is signalled (coalesced) when items were added.
	ready chan struct{}
}

// shrinkAbove: a drained queue whose backing array grew past this many
// slots gives it back.
const shrinkAbove = 64

func newFrameQueue(limit int) *frameQueue {
	return &frameQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues f; false when the queue holds limit items already.
func (q *frameQueue) push(f outFrame) bool {
	q.mu.Lock()
	if len(q.items)-q.head >= q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop takes the oldest item without waiting.
func (q *frameQueue) pop() (outFrame, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return outFrame{}, false
	}
	f := q.items[q.head]
	q.items[q.head] = outFrame{}
	q.head++
	if q.head == len(q.items) {
		if cap(q.items) > shrinkAbove {
			q.items = nil
		} else {
			q.items = q.items[:0]
		}
		q.head = 0
	}
	return f, true
}

// len is how many items wait.
func (q *frameQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}
