package gateway

import (
	"sync"
	"sync/atomic"
)

// frameQueue is a session's bounded send queue. Unlike a buffered channel
// of SendQueue slots it holds memory only for what is queued, so an idle
// connection costs a few words instead of SendQueue×16 bytes (16 KiB at
// the default). Its writer runs only while there is something to write:
// push starts one when none runs, and the writer stops when it drains the
// queue (popOrStop), so an idle connection has no writer goroutine (and
// no writer stack) at all. One lock decides both, so there is never more
// than one writer and frames leave in order.
type frameQueue struct {
	mu    sync.Mutex
	items []outFrame
	head  int
	limit int
	// bytes is the estimated size of what is queued (outFrame.size), held
	// under maxBytes; node is every session's bytes together, and past
	// nodeMax only sessions holding less than queueFloor may queue more
	// (so the slowest readers, which hold the most, are cut off first).
	bytes, maxBytes int
	node            *atomic.Int64
	nodeMax         int64
	// writing: a writer runs (or the queue is closed to new writers).
	writing bool
	// startWriter launches the writer; set once before the first push.
	startWriter func()
}

// shrinkAbove: a drained queue whose backing array grew past this many
// slots gives it back.
const shrinkAbove = 64

// queueFloor is what a session may always queue, whatever the node's
// total: an ack, an error, a receipt for a client that reads.
const queueFloor = 64 << 10

func newFrameQueue(limit, maxBytes int, node *atomic.Int64, nodeMax int64) *frameQueue {
	return &frameQueue{limit: limit, maxBytes: maxBytes, node: node, nodeMax: nodeMax}
}

// push queues f, starting a writer when none runs; false when the queue
// holds limit items or maxBytes already, or when the node's queues hold
// nodeMax and this one holds queueFloor or more.
func (q *frameQueue) push(f outFrame) bool {
	q.mu.Lock()
	if len(q.items)-q.head >= q.limit || !q.roomLocked(f.size) {
		q.mu.Unlock()
		return false
	}
	q.bytes += f.size
	if q.node != nil {
		q.node.Add(int64(f.size))
	}
	q.items = append(q.items, f)
	start := !q.writing && q.startWriter != nil
	if start {
		q.writing = true
	}
	q.mu.Unlock()
	if start {
		q.startWriter()
	}
	return true
}

// popOrStop is the writer's next item; when the queue is empty the writer
// must stop (the next push starts another).
func (q *frameQueue) popOrStop() (outFrame, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f, ok := q.popLocked()
	if !ok {
		q.writing = false
	}
	return f, ok
}

// pop takes the oldest item without waiting.
func (q *frameQueue) pop() (outFrame, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.popLocked()
}

// release drops whatever is still queued (the session is gone) and gives
// its bytes back to the node's total.
func (q *frameQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if _, ok := q.popLocked(); !ok {
			return
		}
	}
}

// closeWriters keeps any new writer from starting (the socket is gone).
func (q *frameQueue) closeWriters() {
	q.mu.Lock()
	q.writing = true
	q.mu.Unlock()
}

// roomLocked reports whether size more bytes may be queued. One frame
// always fits an empty queue, so no frame is too big to send.
func (q *frameQueue) roomLocked(size int) bool {
	if q.bytes == 0 {
		return true
	}
	if q.maxBytes > 0 && q.bytes+size > q.maxBytes {
		return false
	}
	return q.node == nil || q.bytes < queueFloor || q.node.Load()+int64(size) <= q.nodeMax
}

func (q *frameQueue) popLocked() (outFrame, bool) {
	if q.head == len(q.items) {
		return outFrame{}, false
	}
	f := q.items[q.head]
	q.items[q.head] = outFrame{}
	q.head++
	q.bytes -= f.size
	if q.node != nil {
		q.node.Add(-int64(f.size))
	}
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

// queuedBytes is the estimated size of what waits.
func (q *frameQueue) queuedBytes() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// len is how many items wait.
func (q *frameQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}
