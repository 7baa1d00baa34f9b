package scylla

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeBatches records the batches a coalescer sends; each waits on gate
// (when set) so writes pile up behind the ones in flight.
type fakeBatches struct {
	mu      sync.Mutex
	batches [][]write
	gate    chan struct{}
	fail    error
}

func (f *fakeBatches) exec(ctx context.Context, rows []write) error {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, rows)
	return f.fail
}

func row(part string, bytes int) write { return write{partition: part, bytes: bytes} }

// busyCoalescer returns a coalescer that may have one batch out and has
// it out, blocked until f.gate closes, so the writes that follow queue.
// The blocked write's result arrives on errs with the others'.
func busyCoalescer(t *testing.T, fail error) (*fakeBatches, *coalescer, chan error) {
	t.Helper()
	f := &fakeBatches{gate: make(chan struct{}), fail: fail}
	c := newCoalescer(f.exec, time.Second)
	c.maxInFlight = 1
	errs := make(chan error, 64)
	go func() { errs <- c.write(context.Background(), []write{row("first", 1)}, 1) }()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.inFlight == 1 && len(c.queue) == 0 })
	return f, c, errs
}

func queued(c *coalescer) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func TestCoalescerSharesBatchesWithinTheLimits(t *testing.T) {
	// The first write goes out alone and blocks in exec; the next ones queue.
	f, c, errs := busyCoalescer(t, nil)
	const n = 25 // one partition each: 10 + 10 + 5 under maxBatchPartitions
	for i := range n {
		go func() { errs <- c.write(context.Background(), []write{row(fmt.Sprint("p", i), 10)}, 1) }()
	}
	waitFor(t, func() bool { return queued(c) == n })
	close(f.gate)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	c.wait()
	var sizes []int
	for _, b := range f.batches {
		sizes = append(sizes, len(b))
	}
	if fmt.Sprint(sizes) != "[1 10 10 5]" {
		t.Fatalf("batches of %v rows, want [1 10 10 5] (queued writes share batches of at most %d partitions)", sizes, maxBatchPartitions)
	}
}

func TestCoalescerKeepsAUnitWholeAndUnderTheByteLimit(t *testing.T) {
	f, c, errs := busyCoalescer(t, nil)
	half := maxBatchBytes / 2
	// Two rows of one unit, then a unit that no longer fits in that batch.
	go func() { errs <- c.write(context.Background(), []write{row("b", half), row("c", half/2)}, 2) }()
	waitFor(t, func() bool { return queued(c) == 1 })
	go func() { errs <- c.write(context.Background(), []write{row("d", half)}, 1) }()
	waitFor(t, func() bool { return queued(c) == 2 })
	close(f.gate)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	c.wait()
	var got []string
	for _, b := range f.batches {
		var parts string
		for _, r := range b {
			parts += r.partition
		}
		got = append(got, parts)
	}
	if fmt.Sprint(got) != "[first bc d]" {
		t.Fatalf("batches %v, want [first bc d]", got)
	}
}

func TestCoalescerFailsEveryUnitOfAFailedBatch(t *testing.T) {
	boom := errors.New("write timeout")
	f, c, errs := busyCoalescer(t, boom)
	for i := range 3 {
		go func() { errs <- c.write(context.Background(), []write{row(fmt.Sprint(i), 1)}, 1) }()
	}
	waitFor(t, func() bool { return queued(c) == 3 })
	close(f.gate)
	for range 4 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("write = %v, want the batch's error", err)
		}
	}
	c.wait()
}

func TestCoalescerCallerStopsWaitingWhenItsContextEnds(t *testing.T) {
	f := &fakeBatches{gate: make(chan struct{})}
	c := newCoalescer(f.exec, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.write(ctx, []write{row("a", 1)}, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write = %v, want the caller's deadline", err)
	}
	close(f.gate) // the batch still goes out; wait returns once it has
	c.wait()
	if len(f.batches) != 1 {
		t.Fatalf("%d batches sent, want 1", len(f.batches))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}
