package client

// msgKey identifies a message for duplicate suppression.
type msgKey struct {
	from, id string
}

// recentSet remembers the last size keys it was given (FIFO eviction).
type recentSet struct {
	size int
	set  map[msgKey]struct{}
	ring []msgKey
	next int
}

func newRecentSet(size int) *recentSet {
	if size <= 0 {
		size = 1
	}
	// The map grows with use: most clients never fill the window, and
	// sizing it up front costs every client the whole window in memory.
	return &recentSet{size: size, set: make(map[msgKey]struct{})}
}

// seen reports whether k is among the remembered keys and remembers it if
// not, forgetting the oldest key once full.
func (r *recentSet) seen(k msgKey) bool {
	if _, ok := r.set[k]; ok {
		return true
	}
	if len(r.ring) < r.size {
		r.ring = append(r.ring, k)
	} else {
		delete(r.set, r.ring[r.next])
		r.ring[r.next] = k
		r.next = (r.next + 1) % r.size
	}
	r.set[k] = struct{}{}
	return false
}

func (r *recentSet) len() int { return len(r.set) }
