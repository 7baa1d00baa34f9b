package actors

// recentSet remembers the last capacity keys with a value each, evicting the
// oldest. It is the grain's in-memory dedupe window; the store's dedupe
// records back it for keys older than the window or from before a restart.
type recentSet[V any] struct {
	capacity int
	values   map[string]V
	order    []string // ring of keys in insertion order
	head     int
}

func newRecentSet[V any](capacity int) *recentSet[V] {
	if capacity < 1 {
		capacity = 1
	}
	return &recentSet[V]{capacity: capacity, values: make(map[string]V)}
}

func (r *recentSet[V]) Get(key string) (V, bool) {
	v, ok := r.values[key]
	return v, ok
}

// Put inserts or updates key. An update keeps the key's original age.
func (r *recentSet[V]) Put(key string, v V) {
	if _, ok := r.values[key]; ok {
		r.values[key] = v
		return
	}
	if len(r.order) < r.capacity {
		r.order = append(r.order, key)
	} else {
		delete(r.values, r.order[r.head])
		r.order[r.head] = key
		r.head = (r.head + 1) % r.capacity
	}
	r.values[key] = v
}

// Delete forgets key; its slot in the ring is reused when it comes round.
func (r *recentSet[V]) Delete(key string) { delete(r.values, key) }

func (r *recentSet[V]) Len() int { return len(r.values) }
