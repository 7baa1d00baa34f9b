package gateway

import (
	"testing"

	"github.com/courier-im/courier/protos/courierpb"
)

func TestFrameQueueIsBoundedFIFOAndGivesMemoryBack(t *testing.T) {
	q := newFrameQueue(100)
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
