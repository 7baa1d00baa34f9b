package bench

import (
	"math/bits"
)

// bitset is a growable set of small non-negative integers.
type bitset []uint64

// set adds i and reports whether it was there already.
func (b *bitset) set(i int) bool {
	w := i / 64
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w+1-len(*b))...)
	}
	m := uint64(1) << (i % 64)
	was := (*b)[w]&m != 0
	(*b)[w] |= m
	return was
}

func (b bitset) has(i int) bool {
	w := i / 64
	return w < len(b) && b[w]&(1<<(i%64)) != 0
}

func (b bitset) count() int64 {
	var n int
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return int64(n)
}

// missing counts the members of want that got lacks.
func missing(want, got bitset) int64 {
	var n int
	for i, w := range want {
		if i < len(got) {
			w &^= got[i]
		}
		n += bits.OnesCount64(w)
	}
	return int64(n)
}
