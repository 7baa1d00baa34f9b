package actors

import (
	"context"
	"fmt"

	"github.com/courier-im/courier/persistence"
)

// seqBlock hands out strictly increasing numbers from blocks leased through
// the store's compare-and-set. Two activations of one grain (possible during
// a membership change) lease disjoint blocks, so they never hand out the same
// number; the unused rest of a block is a gap, never a duplicate.
type seqBlock struct {
	counter string
	size    uint64
	next    uint64 // next number to hand out; 0 = no block leased
	last    uint64 // last number of the leased block
}

func newSeqBlock(counter string, size uint64) seqBlock {
	if size == 0 {
		size = 1
	}
	return seqBlock{counter: counter, size: size}
}

// Next returns the next number, leasing a new block when the current one is
// used up. It blocks on the store only when it leases.
// The context comes from newCtx, called only when a lease is due: most
// numbers come from the block in memory, and a timer per message for a
// store call that does not happen is not free.
func (s *seqBlock) Next(newCtx func() (context.Context, context.CancelFunc), store persistence.SequenceStore) (uint64, error) {
	if s.next == 0 || s.next > s.last {
		ctx, cancel := newCtx()
		first, last, err := store.LeaseBlock(ctx, s.counter, s.size)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("lease sequence block %s: %w", s.counter, err)
		}
		s.next, s.last = first, last
	}
	n := s.next
	s.next++
	return n, nil
}
