package scylla

import (
	"context"
	"sync"
	"time"
)

// coalescer merges the small writes of many grains into shared unlogged
// batches. A message costs a handful of one-row requests (an inbox entry,
// its dedupe record, a receipt, two acks' range deletes), each from a
// different grain, and the database spends most of a small request on the
// request itself, not on the row: at a few thousand messages a second the
// CQL node was the busiest process on the machine. So while maxInFlight
// batches are out, further writes queue, and the next batch takes
// everything queued, up to the batch limits.
//
// Each unit (one Append phase, one range delete) is applied on each replica
// per partition exactly as alone: a multi-partition unlogged batch is a set
// of per-partition mutations. Callers keep their order guarantees because
// a unit's caller waits for its batch before writing anything else. A
// failed batch fails every unit in it; all are idempotent, fixed-key
// writes, so their callers may retry.
type coalescer struct {
	exec        func(ctx context.Context, rows []write) error
	timeout     time.Duration
	maxInFlight int

	mu       sync.Mutex
	queue    []*unit
	inFlight int
	runners  sync.WaitGroup
}

// unit is one caller's rows; they always travel in one batch.
type unit struct {
	rows       []write
	bytes      int
	partitions int
	done       chan error
}

const (
	// coalesceInFlight is how many coalesced batches one store has out at
	// once. Small writes arrive far faster than that many round trips, so
	// they still queue and share batches (0.23 requests per message in
	// bench direct, from 1.29); grains that commit large groups already
	// keep as many requests busy as with one batch per Append (8 here
	// made BenchmarkInboxAppend 20 % slower than AppendBatched, 32 matched it).
	coalesceInFlight = 32
	// maxBatchPartitions keeps coalesced batches under the databases'
	// warning threshold for unlogged batches across partitions
	// (unlogged_batch_across_partitions_warn_threshold, 10 by default).
	maxBatchPartitions = 10
)

func newCoalescer(exec func(context.Context, []write) error, timeout time.Duration) *coalescer {
	return &coalescer{exec: exec, timeout: timeout, maxInFlight: coalesceInFlight}
}

// fits reports whether rows can go in a coalesced batch at all; larger
// writes are sent on their own.
func fits(rows []write, partitions int) bool {
	size := 0
	for _, r := range rows {
		size += r.bytes
	}
	return len(rows) <= maxBatchRows && size <= maxBatchBytes && partitions <= maxBatchPartitions
}

// write sends rows in a shared batch and waits for it, or for ctx.
func (c *coalescer) write(ctx context.Context, rows []write, partitions int) error {
	u := &unit{rows: rows, partitions: partitions, done: make(chan error, 1)}
	for _, r := range rows {
		u.bytes += r.bytes
	}
	c.mu.Lock()
	c.queue = append(c.queue, u)
	start := c.inFlight < c.maxInFlight
	if start {
		c.inFlight++
		c.runners.Add(1)
	}
	c.mu.Unlock()
	if start {
		go c.run()
	}
	select {
	case err := <-u.done:
		return err
	case <-ctx.Done():
		// The batch may still be applied: the same unknown outcome as a
		// request that timed out.
		return ctx.Err()
	}
}

// run sends batches until the queue is empty.
func (c *coalescer) run() {
	defer c.runners.Done()
	for {
		c.mu.Lock()
		batch := c.takeLocked()
		if batch == nil {
			c.inFlight--
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		var rows []write
		for _, u := range batch {
			rows = append(rows, u.rows...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		err := c.exec(ctx, rows)
		cancel()
		for _, u := range batch {
			u.done <- err
		}
	}
}

// takeLocked removes the next batch's units from the queue, oldest first.
func (c *coalescer) takeLocked() []*unit {
	n, rows, size, parts := 0, 0, 0, 0
	for _, u := range c.queue {
		if n > 0 && (rows+len(u.rows) > maxBatchRows || size+u.bytes > maxBatchBytes || parts+u.partitions > maxBatchPartitions) {
			break
		}
		n, rows, size, parts = n+1, rows+len(u.rows), size+u.bytes, parts+u.partitions
	}
	if n == 0 {
		return nil
	}
	batch := make([]*unit, n)
	copy(batch, c.queue)
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	return batch
}

// wait returns once no batch is out (Close, after every caller is gone).
func (c *coalescer) wait() { c.runners.Wait() }
