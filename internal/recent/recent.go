// Package recent is a bounded map that forgets its oldest keys: the dedupe
// window of grains (recent client_msg_ids) and of clients (entries already
// shown).
package recent

// Map remembers the last capacity keys put into it, each with a value, and
// evicts the oldest first. The zero Map is not usable; call New. Not safe
// for concurrent use: each owner (a grain, a client's dispatcher) has its own.
type Map[K comparable, V any] struct {
	capacity int
	values   map[K]V
	order    []K // ring of keys in insertion order
	head     int
}

// New returns a Map holding at most capacity keys (at least 1). The map
// grows with use: most owners never fill the window, and sizing it up front
// would cost each of them the whole window in memory.
func New[K comparable, V any](capacity int) *Map[K, V] {
	return &Map[K, V]{capacity: max(capacity, 1), values: make(map[K]V)}
}

// Get returns the value of key, if it is remembered.
func (m *Map[K, V]) Get(key K) (V, bool) {
	v, ok := m.values[key]
	return v, ok
}

// Put remembers key with v. Updating a remembered key keeps its age.
func (m *Map[K, V]) Put(key K, v V) {
	if _, ok := m.values[key]; ok {
		m.values[key] = v
		return
	}
	if len(m.order) < m.capacity {
		m.order = append(m.order, key)
	} else {
		delete(m.values, m.order[m.head])
		m.order[m.head] = key
		m.head = (m.head + 1) % m.capacity
	}
	m.values[key] = v
}

// Delete forgets key; its slot in the ring is reused when it comes round.
func (m *Map[K, V]) Delete(key K) { delete(m.values, key) }

// Len is how many keys are remembered.
func (m *Map[K, V]) Len() int { return len(m.values) }
