package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/courier-im/courier/persistence"
)

type lease struct{ first, last uint64 }

func testLeaseBlock(t *testing.T, factory Factory) {
	t.Run("Sequential", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		// "c" and "c1" are prefixes of each other's names and must not share
		// a counter.
		a, b := f.id("c"), f.id("c1")
		steps := []struct {
			counter string
			size    uint64
			want    lease
		}{
			{a, 100, lease{1, 100}},
			{a, 100, lease{101, 200}},
			{a, 1, lease{201, 201}},
			{b, 5, lease{1, 5}},
			{a, 7, lease{202, 208}},
			{b, 1000, lease{6, 1005}},
		}
		for _, counter := range []string{a, b} {
			if got, err := f.s.LastLeased(ctx(t), counter); err != nil || got != 0 {
				t.Fatalf("LastLeased(%q) before any lease = (%d, %v), want (0, nil)", counter, got, err)
			}
		}
		for i, st := range steps {
			first, last, err := f.s.LeaseBlock(ctx(t), st.counter, st.size)
			if err != nil {
				t.Fatalf("step %d: LeaseBlock(%q, %d): %v", i, st.counter, st.size, err)
			}
			if got := (lease{first, last}); got != st.want {
				t.Fatalf("step %d: LeaseBlock(%q, %d) = %v, want %v", i, st.counter, st.size, got, st.want)
			}
			if got, err := f.s.LastLeased(ctx(t), st.counter); err != nil || got != st.want.last {
				t.Fatalf("step %d: LastLeased(%q) = (%d, %v), want (%d, nil)", i, st.counter, got, err, st.want.last)
			}
		}
		// Reading is not leasing: the next lease starts where the last ended.
		if first, _, err := f.s.LeaseBlock(ctx(t), a, 1); err != nil || first != 209 {
			t.Fatalf("LeaseBlock after LastLeased = (%d, %v), want first 209", first, err)
		}
	})

	// A reader racing leases sees a value that only grows, is the end of
	// some lease, and is never behind a lease that had returned before it
	// read: what a grain relies on to bound an attaching device's replay.
	t.Run("LastLeasedDuringLeases", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		const (
			leases = 60
			size   = 3
		)
		counter := f.id("raced")
		c := ctx(t)
		var returned atomic.Uint64 // the end of the newest lease that returned
		done := make(chan error, 1)
		go func() {
			defer close(done)
			for range leases {
				_, last, err := f.s.LeaseBlock(c, counter, size)
				if err != nil {
					done <- err
					return
				}
				returned.Store(last)
			}
		}()
		var prev uint64
		for reading := true; reading; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("LeaseBlock: %v", err)
				}
				reading = false
			default:
			}
			floor := returned.Load()
			got, err := f.s.LastLeased(c, counter)
			if err != nil {
				t.Fatalf("LastLeased: %v", err)
			}
			if got < floor || got < prev || got%size != 0 {
				t.Fatalf("LastLeased = %d after %d had returned (previous read %d); want the end of a lease, at least %d",
					got, floor, prev, max(floor, prev))
			}
			prev = got
		}
	})

	t.Run("ConcurrentCAS", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		const (
			workers = 8
			each    = 50
			size    = 7
		)
		counter := f.id("contested")
		c := ctx(t)
		got := make([][]lease, workers)
		errs := make([]error, workers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				<-start
				for range each {
					first, last, err := f.s.LeaseBlock(c, counter, size)
					if err != nil {
						errs[w] = err
						return
					}
					got[w] = append(got[w], lease{first, last})
				}
			})
		}
		close(start)
		wg.Wait()
		for w, err := range errs {
			if err != nil {
				t.Fatalf("worker %d: %v", w, err)
			}
		}

		all := slices.Concat(got...)
		slices.SortFunc(all, func(x, y lease) int {
			switch {
			case x.first < y.first:
				return -1
			case x.first > y.first:
				return 1
			}
			return 0
		})
		next := uint64(1)
		for _, l := range all {
			if l.last-l.first+1 != size || l.last < l.first {
				t.Fatalf("lease %v is not %d numbers", l, size)
			}
			if l.first != next {
				t.Fatalf("leases overlap or leave a gap: %v follows a lease ending at %d", l, next-1)
			}
			next = l.last + 1
		}
		if want := uint64(workers*each*size) + 1; next != want {
			t.Fatalf("leases end at %d, want %d", next-1, want-1)
		}
	})
}

func testSecrets(t *testing.T, factory Factory) {
	t.Run("LoadOrStore", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		key, other := f.id("signing-key"), f.id("signing-key-2")
		steps := []struct {
			name      string
			candidate []byte
			want      []byte
		}{
			{key, []byte("alpha\x00\xff"), []byte("alpha\x00\xff")},
			{key, []byte("beta"), []byte("alpha\x00\xff")},
			{other, []byte("gamma"), []byte("gamma")},
			{key, []byte("delta"), []byte("alpha\x00\xff")},
		}
		for i, st := range steps {
			got, err := f.s.LoadOrStoreSecret(ctx(t), st.name, st.candidate)
			if err != nil {
				t.Fatalf("step %d: LoadOrStoreSecret(%q): %v", i, st.name, err)
			}
			if !bytes.Equal(got, st.want) {
				t.Fatalf("step %d: LoadOrStoreSecret(%q, %q) = %q, want %q", i, st.name, st.candidate, got, st.want)
			}
		}
	})

	// The token key earlier versions kept in the store is read and then
	// deleted when a node moves it to its key file.
	t.Run("LoadAndDelete", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		c := ctx(t)
		// "k" is a prefix of "k1": neither may touch the other.
		name, other := f.id("k"), f.id("k1")
		if v, err := f.s.LoadSecret(c, name); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("LoadSecret of a missing name = (%q, %v), want ErrNotFound", v, err)
		}
		if err := f.s.DeleteSecret(c, name); err != nil {
			t.Fatalf("DeleteSecret of a missing name: %v", err)
		}
		for n, v := range map[string]string{name: "first\x00", other: "other"} {
			if _, err := f.s.LoadOrStoreSecret(c, n, []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		if v, err := f.s.LoadSecret(c, name); err != nil || string(v) != "first\x00" {
			t.Fatalf("LoadSecret = (%q, %v), want %q", v, err, "first\x00")
		}
		if err := f.s.DeleteSecret(c, name); err != nil {
			t.Fatalf("DeleteSecret: %v", err)
		}
		if v, err := f.s.LoadSecret(c, name); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("LoadSecret after DeleteSecret = (%q, %v), want ErrNotFound", v, err)
		}
		if v, err := f.s.LoadSecret(c, other); err != nil || string(v) != "other" {
			t.Fatalf("the other secret after DeleteSecret = (%q, %v), want %q", v, err, "other")
		}
		if err := f.s.DeleteSecret(c, name); err != nil {
			t.Fatalf("DeleteSecret again: %v", err)
		}
		// Deleted, the name takes a new value.
		if v, err := f.s.LoadOrStoreSecret(c, name, []byte("second")); err != nil || string(v) != "second" {
			t.Fatalf("LoadOrStoreSecret after DeleteSecret = (%q, %v), want %q", v, err, "second")
		}
		if v, err := f.s.LoadSecret(c, name); err != nil || string(v) != "second" {
			t.Fatalf("LoadSecret = (%q, %v), want %q", v, err, "second")
		}
	})

	t.Run("ConcurrentRace", func(t *testing.T) {
		f := newFixture(t, factory, Options{})
		const racers = 16
		name := f.id("raced")
		c := ctx(t)
		got := make([][]byte, racers)
		errs := make([]error, racers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				<-start
				got[i], errs[i] = f.s.LoadOrStoreSecret(c, name, fmt.Appendf(nil, "candidate-%d", i))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("racer %d: %v", i, err)
			}
		}
		winner := got[0]
		if !bytes.HasPrefix(winner, []byte("candidate-")) {
			t.Fatalf("stored value %q is none of the candidates", winner)
		}
		for i, v := range got {
			if !bytes.Equal(v, winner) {
				t.Fatalf("racer %d got %q, racer 0 got %q", i, v, winner)
			}
		}
		later, err := f.s.LoadOrStoreSecret(c, name, []byte("late"))
		if err != nil || !bytes.Equal(later, winner) {
			t.Fatalf("LoadOrStoreSecret after the race = (%q, %v), want %q", later, err, winner)
		}
	})
}
