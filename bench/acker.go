package bench

import (
	"context"
	"sync/atomic"

	"github.com/courier-im/courier/client"
)

// sentStream is what a sender got acknowledged on one stream.
type sentStream struct {
	acked bitset
	next  int // the next sequence number (mixed numbers on the fly)
}

// pending is one send waiting for its single tick.
type pending struct {
	ps  *client.PendingSend
	key streamKey
	seq int
}

// acker collects one sender's send results, in order, on its own
// goroutine, so a sender never waits for a result unless its window is
// full. It owns the sender's streams.
type acker struct {
	ch      chan pending
	window  chan struct{} // closed loop: one token per send in flight; nil: open loop
	streams map[streamKey]*sentStream
	sent    atomic.Int64
	errs    atomic.Int64
	lastErr atomic.Pointer[error]
	done    chan struct{}
}

// openLoopQueue bounds the sends one open-loop sender may have waiting for
// their results before issuing the next blocks (latency is measured from
// the scheduled time, so such a stall still shows).
const openLoopQueue = 4096

func newAcker(window int) *acker {
	a := &acker{streams: make(map[streamKey]*sentStream), done: make(chan struct{})}
	if window > 0 {
		a.window = make(chan struct{}, window)
		a.ch = make(chan pending, window)
	} else {
		a.ch = make(chan pending, openLoopQueue)
	}
	go a.loop()
	return a
}

func (a *acker) loop() {
	defer close(a.done)
	for p := range a.ch {
		if _, err := p.ps.Result(); err == nil {
			a.stream(p.key).acked.set(p.seq)
			a.sent.Add(1)
		} else {
			a.errs.Add(1)
			a.lastErr.Store(&err)
		}
		if a.window != nil {
			<-a.window
		}
	}
}

func (a *acker) stream(k streamKey) *sentStream {
	s := a.streams[k]
	if s == nil {
		s = &sentStream{}
		a.streams[k] = s
	}
	return s
}

// reserve waits for room in the window (closed loop); false when ctx ended.
func (a *acker) reserve(ctx context.Context) bool {
	if a.window == nil {
		return ctx.Err() == nil
	}
	select {
	case a.window <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// push hands a started send to the collector (after reserve).
func (a *acker) push(p pending) { a.ch <- p }

// unsent counts sends the run ended before they were started.
func (a *acker) unsent(n int) { a.errs.Add(int64(n)) }

// close waits for every result; the streams are the caller's afterwards.
func (a *acker) close() {
	close(a.ch)
	<-a.done
}

// sendStream sends n numbered messages on one stream through send.
func sendStream(ctx context.Context, a *acker, p pacer, key streamKey, stream uint32, n, size int, send func(ctx context.Context, payload []byte) *client.PendingSend) {
	for k := range n {
		if !a.reserve(ctx) {
			a.unsent(n - k)
			return
		}
		at, ok := p.wait(ctx, k)
		if !ok {
			if a.window != nil {
				<-a.window
			}
			a.unsent(n - k)
			return
		}
		a.push(pending{ps: send(ctx, newPayload(size, at, uint32(k), stream)), key: key, seq: k})
	}
}
