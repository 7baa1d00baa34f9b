package scylla_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/scylla"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
	"github.com/courier-im/courier/persistence/storetest"
)

var _ persistence.MediaStore = (*scylla.Store)(nil)

func TestMediaConformance(t *testing.T) {
	base := scyllatest.Options(t)
	// Create the keyspace and schema once, before the suite's parallel
	// subtests open their stores on it.
	open(t, base)
	storetest.RunMedia(t, func(t *testing.T) (persistence.Store, storetest.Reopen) {
		return open(t, base), func(t *testing.T) persistence.Store { return open(t, base) }
	})
}

// TestMediaIndexIsCleaned checks what the conformance suite cannot see:
// ExpiredBlobs deletes the index rows that later references and deletes
// left behind, and forgets the days it drained.
func TestMediaIndexIsCleaned(t *testing.T) {
	s := open(t, scyllatest.Options(t))
	ctx := t.Context()
	day0 := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	ref := func(days int) time.Time { return day0.Add(time.Duration(days)*24*time.Hour + time.Hour) }
	put := func(digest string, days int) {
		t.Helper()
		if _, _, err := s.PutBlob(ctx, persistence.Blob{Digest: digest, Size: 1, OwnerID: "u", CreatedAt: ref(days), LastReferenced: ref(days)}); err != nil {
			t.Fatal(err)
		}
	}
	touch := func(digest string, days int) {
		t.Helper()
		if err := s.TouchBlob(ctx, digest, ref(days)); err != nil {
			t.Fatal(err)
		}
	}
	del := func(digest string) {
		t.Helper()
		if err := s.DeleteBlob(ctx, digest); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, wantRows, wantDays []string) {
		t.Helper()
		rows, days, err := s.MediaIndex(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rows, wantRows) || !slices.Equal(days, wantDays) {
			t.Fatalf("%s: index rows %v, days %v; want %v, %v", what, rows, days, wantRows, wantDays)
		}
	}
	expired := func(cutoff time.Time, want ...string) {
		t.Helper()
		got, err := s.ExpiredBlobs(ctx, cutoff, 100)
		if err != nil {
			t.Fatal(err)
		}
		var digests []string
		for _, b := range got {
			digests = append(digests, b.Digest)
		}
		slices.Sort(digests)
		if !slices.Equal(digests, want) {
			t.Fatalf("ExpiredBlobs(%s) = %v, want %v", cutoff, digests, want)
		}
	}

	put("a", 0)
	touch("a", 2)
	touch("a", 4)
	touch("a", 1) // back: writes nothing
	put("a", 3)   // back: writes nothing
	put("b", 1)
	del("b")
	put("c", 3)
	check("before", []string{"a@2010-01-01T01:00:00Z", "a@2010-01-03T01:00:00Z", "a@2010-01-05T01:00:00Z", "c@2010-01-04T01:00:00Z"},
		[]string{"2010-01-01", "2010-01-02", "2010-01-03", "2010-01-04", "2010-01-05"})

	// A cutoff inside day 2 reads days 0 to 2 up to the cutoff: a's rows
	// there are stale, b's day is empty. Days 0 and 1 are drained; day 2,
	// the cutoff's own, is kept even though it is empty now.
	expired(ref(2).Add(time.Hour))
	check("after a cutoff on day 2", []string{"a@2010-01-05T01:00:00Z", "c@2010-01-04T01:00:00Z"},
		[]string{"2010-01-03", "2010-01-04", "2010-01-05"})

	expired(ref(10), "a", "c")
	check("after a cutoff after everything", []string{"a@2010-01-05T01:00:00Z", "c@2010-01-04T01:00:00Z"},
		[]string{"2010-01-04", "2010-01-05"})

	del("a")
	del("c")
	expired(ref(10))
	check("after deleting everything", nil, nil)
}

// TestMediaPublishFromTwoStores races publishes of one digest from two
// stores (two sessions, as two nodes would have): the LWT, not a lock in
// this process, picks the one creator.
func TestMediaPublishFromTwoStores(t *testing.T) {
	opts := scyllatest.Options(t)
	stores := []*scylla.Store{open(t, opts), open(t, opts)}
	ctx := t.Context()
	for round := range 5 {
		digest := fmt.Sprintf("shared-%d", round)
		var created atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				at := time.UnixMilli(1_700_000_000_000 + int64(w)).UTC()
				_, existed, err := stores[w%2].PutBlob(ctx, persistence.Blob{Digest: digest, Size: 1, OwnerID: fmt.Sprint(w), CreatedAt: at, LastReferenced: at})
				if err != nil {
					errs <- err
					return
				}
				if !existed {
					created.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := created.Load(); n != 1 {
			t.Fatalf("round %d: %d publishes report they created the blob, want 1", round, n)
		}
		b, err := stores[0].GetBlob(ctx, digest)
		if err != nil || !b.LastReferenced.Equal(time.UnixMilli(1_700_000_000_007)) {
			t.Fatalf("round %d: GetBlob = (%+v, %v), want the latest reference", round, b, err)
		}
	}
}
