package gateway

import "sync"

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
	// writing: a writer runs (or the queue is closed to new writers).
	writing bool
	// startWriter launches the writer; set once before the first push.
	startWriter func()
}

// shrinkAbove: a drained queue whose backing array grew past this many
// slots gives it back.
const shrinkAbove = 64

func newFrameQueue(limit int) *frameQueue {
	return &frameQueue{limit: limit}
}

// push queues f, starting a writer when none runs; false when the queue
// holds limit items already.
func (q *frameQueue) push(f outFrame) bool {
	q.mu.Lock()
	if len(q.items)-q.head >= q.limit {
		q.mu.Unlock()
		return false
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

// closeWriters keeps any new writer from starting (the socket is gone).
func (q *frameQueue) closeWriters() {
	q.mu.Lock()
	q.writing = true
	q.mu.Unlock()
}

func (q *frameQueue) popLocked() (outFrame, bool) {
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
