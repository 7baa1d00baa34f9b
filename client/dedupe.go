package client

import "github.com/courier-im/courier/internal/recent"

// msgKey identifies a message for duplicate suppression.
type msgKey struct {
	from, id string
}

// recentSet remembers the last size keys it was given (FIFO eviction).
type recentSet struct{ m *recent.Map[msgKey, struct{}] }

func newRecentSet(size int) *recentSet {
	return &recentSet{m: recent.New[msgKey, struct{}](size)}
}

// seen reports whether k is among the remembered keys and remembers it if
// not, forgetting the oldest key once full.
func (r *recentSet) seen(k msgKey) bool {
	if _, ok := r.m.Get(k); ok {
		return true
	}
	r.m.Put(k, struct{}{})
	return false
}

func (r *recentSet) len() int { return r.m.Len() }
