package gateway

import (
	"sync/atomic"
	"testing"

	"github.com/courier-im/courier/protos/courierpb"
)

func TestFrameQueueIsBoundedFIFOAndGivesMemoryBack(t *testing.T) {
	q := newFrameQueue(100, 0, nil, 0)
	started := 0
	q.startWriter = func() { started++ }
	frame := func(i int) outFrame { return outFrame{frame: &courierpb.ServerFrame{ReqId: uint64(i)}} }
	for round := range 3 {
		for i := range 100 {
			if !q.push(frame(i)) {
				t.Fatalf("round %d: push %d refused below the limit", round, i)
			}
		}
		if q.push(frame(100)) {
			t.Fatalf("round %d: push beyond the limit accepted", round)
		}
		if started != round+1 {
			t.Fatalf("round %d: %d writers started, want one per busy period", round, started)
		}
		for i := range 100 {
			f, ok := q.popOrStop()
			if !ok || f.frame.ReqId != uint64(i) {
				t.Fatalf("round %d: pop %d = %v, %v", round, i, f.frame, ok)
			}
		}
		if _, ok := q.popOrStop(); ok || q.len() != 0 {
			t.Fatal("a drained queue still has items")
		}
		if cap(q.items) > shrinkAbove {
			t.Fatalf("a drained queue keeps %d slots", cap(q.items))
		}
	}
}

func TestFrameQueueBoundsBytesPerSessionAndCutsTheSlowestPastTheNodeBudget(t *testing.T) {
	var node atomic.Int64
	sized := func(n int) outFrame { return outFrame{frame: &courierpb.ServerFrame{}, size: n} }
	const perSession, nodeMax = 1 << 20, 1<<20 + 512<<10
	slow := newFrameQueue(1000, perSession, &node, nodeMax)
	other := newFrameQueue(1000, perSession, &node, nodeMax)
	small := newFrameQueue(1000, perSession, &node, nodeMax)

	// One frame always fits an empty queue, however big.
	if !slow.push(sized(2 << 20)) {
		t.Fatal("a frame larger than the bound was refused by an empty queue")
	}
	if slow.push(sized(1)) {
		t.Fatal("a full queue took more")
	}
	slow.release()
	if node.Load() != 0 || slow.queuedBytes() != 0 {
		t.Fatalf("after release: node %d, queue %d bytes; want 0", node.Load(), slow.queuedBytes())
	}

	// Per session: 64 KiB frames up to 1 MiB.
	n := 0
	for slow.push(sized(64 << 10)) {
		n++
	}
	if n != 16 {
		t.Fatalf("a 1 MiB queue took %d frames of 64 KiB, want 16", n)
	}
	// The node holds 1 MiB of its 1.5 MiB; another slow reader fills the rest.
	for other.push(sized(64 << 10)) {
	}
	if node.Load() > nodeMax+64<<10 {
		t.Fatalf("node holds %d bytes, budget %d", node.Load(), nodeMax)
	}
	// Past the budget a session holding little still gets its frames.
	for i := range 10 {
		if !small.push(sized(1 << 10)) {
			t.Fatalf("a session holding %d bytes was refused past the node budget", i<<10)
		}
	}
	// Popping gives bytes back to the node.
	before := node.Load()
	if _, ok := slow.pop(); !ok || node.Load() != before-64<<10 {
		t.Fatalf("pop: node %d -> %d, want -64 KiB", before, node.Load())
	}
	for _, q := range []*frameQueue{slow, other, small} {
		q.release()
	}
	if node.Load() != 0 {
		t.Fatalf("node holds %d bytes after every queue was released", node.Load())
	}
}
