package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
)

// MediaFactory returns a fresh, open store that implements
// persistence.MediaStore, and a Reopen for it or nil when the
// implementation cannot reopen (the reopen check is then skipped). Like
// Factory, it must release what it creates with t.Cleanup, tolerating a
// store the suite already closed.
type MediaFactory func(t *testing.T) (persistence.Store, Reopen)

// RunMedia runs the conformance suite of persistence.MediaStore against
// stores built by factory. Like Run, subtests run in parallel and namespace
// every digest and user id, so stores may share one backing database.
//
// ExpiredBlobs sees every blob of the backing database, whoever wrote it:
// the Expired subtest therefore works in an era of its own (2001) that no
// other subtest writes, and every other subtest references blobs at or
// after at(0) (November 2023).
func RunMedia(t *testing.T, factory MediaFactory) {
	groups := []struct {
		name string
		run  func(*testing.T, MediaFactory)
	}{
		{"PutBlob", testMediaPut},
		{"GetMissing", testMediaGetMissing},
		{"TouchBlob", testMediaTouch},
		{"ExpiredBlobs", testMediaExpired},
		{"DeleteBlob", testMediaDelete},
		{"Usage", testMediaUsage},
		{"ConcurrentPut", testMediaConcurrentPut},
		{"ConcurrentUsage", testMediaConcurrentUsage},
		{"Reopen", testMediaReopen},
		{"Closed", testMediaClosed},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			g.run(t, factory)
		})
	}
}

func mediaStore(t *testing.T, s persistence.Store) persistence.MediaStore {
	t.Helper()
	ms, ok := s.(persistence.MediaStore)
	if !ok {
		t.Fatalf("%T does not implement persistence.MediaStore", s)
	}
	return ms
}

func newMediaFixture(t *testing.T, factory MediaFactory) (*fixture, persistence.MediaStore) {
	t.Helper()
	s, reopen := factory(t)
	if s == nil {
		t.Fatal("factory returned a nil store")
	}
	f := &fixture{s: s, reopen: reopen, prefix: fmt.Sprintf("st%08x-", rand.Uint32())}
	return f, mediaStore(t, s)
}

// blob builds a record; times are at(ms) offsets.
func blob(digest string, size int64, owner string, createdMs, lastRefMs int64) persistence.Blob {
	return persistence.Blob{Digest: digest, Size: size, OwnerID: owner, CreatedAt: at(createdMs), LastReferenced: at(lastRefMs)}
}

func blobsEqual(a, b persistence.Blob) bool {
	return a.Digest == b.Digest && a.Size == b.Size && a.OwnerID == b.OwnerID &&
		a.CreatedAt.Equal(b.CreatedAt) && a.LastReferenced.Equal(b.LastReferenced)
}

func fmtBlob(b persistence.Blob) string {
	return fmt.Sprintf("{%s size=%d owner=%s created=%s lastRef=%s}", b.Digest, b.Size, b.OwnerID,
		b.CreatedAt.UTC().Format(time.RFC3339Nano), b.LastReferenced.UTC().Format(time.RFC3339Nano))
}

func checkBlob(t *testing.T, what string, got, want persistence.Blob) {
	t.Helper()
	if !blobsEqual(got, want) {
		t.Fatalf("%s = %s, want %s", what, fmtBlob(got), fmtBlob(want))
	}
}

func putBlob(t *testing.T, ms persistence.MediaStore, b persistence.Blob) (persistence.Blob, bool) {
	t.Helper()
	stored, existed, err := ms.PutBlob(ctx(t), b)
	if err != nil {
		t.Fatalf("PutBlob(%s): %v", fmtBlob(b), err)
	}
	return stored, existed
}

func getBlob(t *testing.T, ms persistence.MediaStore, digest string) persistence.Blob {
	t.Helper()
	b, err := ms.GetBlob(ctx(t), digest)
	if err != nil {
		t.Fatalf("GetBlob(%q): %v", digest, err)
	}
	return b
}

const day = 24 * time.Hour

func testMediaPut(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	cases := []struct {
		name        string
		prior       *persistence.Blob // stored first, when set
		put         persistence.Blob
		wantExisted bool
		want        persistence.Blob
	}{
		{
			name: "New",
			put:  blob("", 100, "alice", 0, 0),
			want: blob("", 100, "alice", 0, 0),
		},
		{
			name:        "ExistingLaterReference",
			prior:       new(blob("", 100, "alice", 0, 0)),
			put:         blob("", 999, "bob", 5000, 5000),
			wantExisted: true,
			want:        blob("", 100, "alice", 0, 5000),
		},
		{
			name:        "ExistingEarlierReferenceNeverMovesBack",
			prior:       new(blob("", 100, "alice", 10_000, 10_000)),
			put:         blob("", 5, "bob", 3000, 3000),
			wantExisted: true,
			want:        blob("", 100, "alice", 10_000, 10_000),
		},
		{
			name:        "ExistingSameReference",
			prior:       new(blob("", 100, "alice", 0, 7000)),
			put:         blob("", 100, "alice", 0, 7000),
			wantExisted: true,
			want:        blob("", 100, "alice", 0, 7000),
		},
		{
			name:        "ExistingDaysLater",
			prior:       new(blob("", 1<<40, "alice", 0, 0)),
			put:         blob("", 1, "carol", 0, int64(3*day/time.Millisecond)),
			wantExisted: true,
			want:        blob("", 1<<40, "alice", 0, int64(3*day/time.Millisecond)),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			digest := f.id("put-" + tc.name)
			if tc.prior != nil {
				p := *tc.prior
				p.Digest, p.OwnerID = digest, f.id(p.OwnerID)
				if stored, existed := putBlob(t, ms, p); existed {
					t.Fatalf("first PutBlob reported existed (stored %s)", fmtBlob(stored))
				}
			}
			put, want := tc.put, tc.want
			put.Digest, put.OwnerID = digest, f.id(put.OwnerID)
			want.Digest, want.OwnerID = digest, f.id(want.OwnerID)
			stored, existed := putBlob(t, ms, put)
			if existed != tc.wantExisted {
				t.Fatalf("PutBlob existed = %v, want %v", existed, tc.wantExisted)
			}
			checkBlob(t, "PutBlob's stored record", stored, want)
			checkBlob(t, "GetBlob", getBlob(t, ms, digest), want)
		})
	}
	t.Run("EmptyDigest", func(t *testing.T) {
		t.Parallel()
		if _, _, err := ms.PutBlob(ctx(t), blob("", 1, f.id("alice"), 0, 0)); err == nil {
			t.Fatal("PutBlob with an empty digest succeeded")
		}
	})
}

func testMediaGetMissing(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	c := ctx(t)
	putBlob(t, ms, blob(f.id("present"), 1, f.id("alice"), 0, 0))
	for _, d := range []string{f.id("missing"), f.id("presen"), f.id("present2")} {
		if b, err := ms.GetBlob(c, d); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetBlob(%q) = (%s, %v), want ErrNotFound", d, fmtBlob(b), err)
		}
	}
}

func testMediaTouch(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	cases := []struct {
		name    string
		priorMs int64 // LastReferenced stored first
		touchMs int64
		wantMs  int64
	}{
		{"Forward", 1000, 9000, 9000},
		{"ForwardDays", 1000, int64(40 * day / time.Millisecond), int64(40 * day / time.Millisecond)},
		{"BackIsNoOp", 9000, 1000, 9000},
		{"SameIsNoOp", 9000, 9000, 9000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			digest := f.id("touch-" + tc.name)
			putBlob(t, ms, blob(digest, 42, f.id("alice"), 500, tc.priorMs))
			if err := ms.TouchBlob(ctx(t), digest, at(tc.touchMs)); err != nil {
				t.Fatalf("TouchBlob: %v", err)
			}
			checkBlob(t, "GetBlob after TouchBlob", getBlob(t, ms, digest), blob(digest, 42, f.id("alice"), 500, tc.wantMs))
		})
	}
	t.Run("Missing", func(t *testing.T) {
		t.Parallel()
		digest := f.id("touch-missing")
		if err := ms.TouchBlob(ctx(t), digest, at(1000)); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("TouchBlob(missing) = %v, want ErrNotFound", err)
		}
		// A failed touch creates nothing.
		if _, err := ms.GetBlob(ctx(t), digest); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetBlob after TouchBlob(missing) = %v, want ErrNotFound", err)
		}
	})
}

// expiredDigests calls ExpiredBlobs, checks what every blob it returns
// must satisfy, and returns the digests of this fixture's blobs among them.
func expiredDigests(t *testing.T, f *fixture, ms persistence.MediaStore, cutoff time.Time, limit int) []string {
	t.Helper()
	got, err := ms.ExpiredBlobs(ctx(t), cutoff, limit)
	if err != nil {
		t.Fatalf("ExpiredBlobs(%s, %d): %v", cutoff.Format(time.RFC3339), limit, err)
	}
	if len(got) > limit {
		t.Fatalf("ExpiredBlobs(limit %d) returned %d blobs", limit, len(got))
	}
	var out []string
	for _, b := range got {
		if !b.LastReferenced.Before(cutoff) {
			t.Fatalf("ExpiredBlobs(%s) returned %s, referenced at or after the cutoff", cutoff.Format(time.RFC3339), fmtBlob(b))
		}
		if slices.Contains(out, b.Digest) {
			t.Fatalf("ExpiredBlobs returned %q twice", b.Digest)
		}
		if !strings.HasPrefix(b.Digest, f.prefix) {
			t.Fatalf("ExpiredBlobs(%s) returned %s, which this suite did not write in this era",
				cutoff.Format(time.RFC3339), fmtBlob(b))
		}
		// Whatever it returns is the record as stored.
		checkBlob(t, "ExpiredBlobs' record vs GetBlob", b, getBlob(t, ms, b.Digest))
		out = append(out, b.Digest)
	}
	slices.Sort(out)
	return out
}

func testMediaExpired(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	// An era no other subtest writes (see RunMedia).
	base := time.Date(2001, 3, 1, 0, 0, 0, 0, time.UTC)
	ref := func(d time.Duration) time.Time { return base.Add(d) }
	cutoff := ref(5*day + 12*time.Hour)
	type spec struct {
		name string
		last time.Time
	}
	specs := []spec{
		{"old-a", ref(0)},
		{"old-b", ref(2*day + 7*time.Hour)},
		{"old-c", ref(5*day + time.Hour)},                            // the cutoff's day, before it
		{"edge", cutoff},                                             // at the cutoff: not before it
		{"fresh-a", ref(5*day + 13*time.Hour)},                       // the cutoff's day, after it
		{"fresh-b", ref(9 * day)},                                    // a later day
		{"old-d", ref(5*day + 12*time.Hour - time.Millisecond)},      // just before
		{"touched", ref(1 * day)},                                    // touched past the cutoff below
		{"reput", ref(3 * day)},                                      // re-published past the cutoff below
		{"touched-back", ref(4 * day)},                               // touched back: stays expired
		{"deleted", ref(2 * day)},                                    // deleted below
		{"touched-twice", ref(1*day + time.Hour)},                    // touched twice, still before the cutoff
		{"new-after-delete", ref(3*day + time.Hour)},                 // deleted and published again later
		{"later-era", time.Date(2001, 9, 1, 0, 0, 0, 0, time.UTC)},   // far after
		{"earlier-era", time.Date(2000, 9, 1, 0, 0, 0, 0, time.UTC)}, // far before: still found
	}
	id := func(name string) string { return f.id("exp-" + name) }
	for i, s := range specs {
		putBlob(t, ms, persistence.Blob{Digest: id(s.name), Size: int64(i + 1), OwnerID: f.id("owner"),
			CreatedAt: s.last, LastReferenced: s.last})
	}
	ids := func(names ...string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = id(n)
		}
		slices.Sort(out)
		return out
	}
	check := func(what string, c time.Time, limit int, want []string) {
		t.Helper()
		if got := expiredDigests(t, f, ms, c, limit); !slices.Equal(got, want) {
			t.Fatalf("%s: ExpiredBlobs = %v, want %v", what, got, want)
		}
	}
	all := ids("old-a", "old-b", "old-c", "old-d", "touched", "reput", "touched-back", "deleted", "touched-twice",
		"new-after-delete", "earlier-era")
	check("initially", cutoff, 100, all)
	check("again (stable)", cutoff, 100, all)
	check("cutoff before everything", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), 100, nil)
	check("cutoff at the earliest", ref(-180*day), 100, ids("earlier-era"))

	// limit is respected, and each page holds only expired blobs.
	for _, limit := range []int{1, 2, 5} {
		got := expiredDigests(t, f, ms, cutoff, limit)
		if len(got) != limit {
			t.Fatalf("ExpiredBlobs(limit %d) returned %v, want %d of %v", limit, got, limit, all)
		}
		for _, d := range got {
			if !slices.Contains(all, d) {
				t.Fatalf("ExpiredBlobs(limit %d) returned %q, not expired", limit, d)
			}
		}
	}
	if _, err := ms.ExpiredBlobs(ctx(t), cutoff, 0); err == nil {
		t.Fatal("ExpiredBlobs with limit 0 succeeded")
	}

	c := ctx(t)
	if err := ms.TouchBlob(c, id("touched"), cutoff.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := ms.TouchBlob(c, id("touched-back"), ref(-day)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{2 * day, 4*day + time.Hour} {
		if err := ms.TouchBlob(c, id("touched-twice"), ref(d)); err != nil {
			t.Fatal(err)
		}
	}
	putBlob(t, ms, persistence.Blob{Digest: id("reput"), Size: 1, OwnerID: f.id("other"), CreatedAt: ref(8 * day), LastReferenced: ref(8 * day)})
	if err := ms.DeleteBlob(c, id("deleted")); err != nil {
		t.Fatal(err)
	}
	if err := ms.DeleteBlob(c, id("new-after-delete")); err != nil {
		t.Fatal(err)
	}
	putBlob(t, ms, persistence.Blob{Digest: id("new-after-delete"), Size: 1, OwnerID: f.id("other"), CreatedAt: ref(7 * day), LastReferenced: ref(7 * day)})

	after := ids("old-a", "old-b", "old-c", "old-d", "touched-back", "touched-twice", "earlier-era")
	check("after touches, re-publishes and deletes", cutoff, 100, after)
	check("again (stable)", cutoff, 100, after)
	checkBlob(t, "touched twice", getBlob(t, ms, id("touched-twice")), persistence.Blob{Digest: id("touched-twice"),
		Size: 12, OwnerID: f.id("owner"), CreatedAt: ref(1*day + time.Hour), LastReferenced: ref(4*day + time.Hour)})
	check("a cutoff a day later", ref(6*day+12*time.Hour), 100,
		ids("old-a", "old-b", "old-c", "old-d", "edge", "fresh-a", "touched", "touched-back", "touched-twice", "earlier-era"))
	check("a cutoff after everything", time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC), 100,
		ids("old-a", "old-b", "old-c", "old-d", "edge", "fresh-a", "fresh-b", "touched", "reput", "touched-back",
			"touched-twice", "new-after-delete", "later-era", "earlier-era"))

	// A sweeper's loop: take a page, delete it, until nothing is left.
	var swept []string
	for round := 0; ; round++ {
		if round > 20 {
			t.Fatalf("sweeping did not end; swept %v", swept)
		}
		page := expiredDigests(t, f, ms, cutoff, 2)
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			if err := ms.DeleteBlob(c, d); err != nil {
				t.Fatal(err)
			}
		}
		swept = append(swept, page...)
	}
	slices.Sort(swept)
	if !slices.Equal(swept, after) {
		t.Fatalf("swept %v, want %v", swept, after)
	}
	for _, d := range after {
		if _, err := ms.GetBlob(c, d); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetBlob(%q) after the sweep = %v, want ErrNotFound", d, err)
		}
	}
	check("a cutoff after everything, after the sweep", time.Date(2002, 1, 1, 0, 0, 0, 0, time.UTC), 100,
		ids("edge", "fresh-a", "fresh-b", "touched", "reput", "new-after-delete", "later-era"))
}

func testMediaDelete(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	c := ctx(t)
	digest, other := f.id("del"), f.id("del2")
	putBlob(t, ms, blob(digest, 10, f.id("alice"), 0, 0))
	putBlob(t, ms, blob(other, 20, f.id("alice"), 0, 0))
	for i := range 2 {
		if err := ms.DeleteBlob(c, digest); err != nil {
			t.Fatalf("DeleteBlob #%d: %v", i+1, err)
		}
		if _, err := ms.GetBlob(c, digest); !errors.Is(err, persistence.ErrNotFound) {
			t.Fatalf("GetBlob after DeleteBlob #%d = %v, want ErrNotFound", i+1, err)
		}
	}
	if err := ms.DeleteBlob(c, f.id("never")); err != nil {
		t.Fatalf("DeleteBlob(never stored): %v", err)
	}
	if err := ms.TouchBlob(c, digest, at(5000)); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("TouchBlob after DeleteBlob = %v, want ErrNotFound", err)
	}
	checkBlob(t, "the other blob", getBlob(t, ms, other), blob(other, 20, f.id("alice"), 0, 0))
	// Published again, it is a new blob: new owner, size and creation time.
	want := blob(digest, 11, f.id("bob"), 9000, 9000)
	stored, existed := putBlob(t, ms, want)
	if existed {
		t.Fatal("PutBlob after DeleteBlob reported existed")
	}
	checkBlob(t, "PutBlob after DeleteBlob", stored, want)
	checkBlob(t, "GetBlob after re-publishing", getBlob(t, ms, digest), want)
}

func testMediaUsage(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	c := ctx(t)
	const d1, d2 = "2023-11-14", "2023-11-15"
	adds := []struct {
		user, day string
		bytes     int64
		wantTotal int64
	}{
		{"u", d1, 100, 100},
		{"u", d1, 250, 350},
		{"u", d2, 7, 7},
		{"u1", d1, 1 << 40, 1 << 40}, // "u" is a prefix of "u1": no leaking between them
		{"u", d1, 0, 350},
		{"v", d2, 1, 1},
		{"u", d1, 1 << 33, 350 + 1<<33},
		{"u1", d1, 5, 1<<40 + 5},
	}
	for _, a := range adds {
		total, err := ms.AddMediaUsage(c, f.id(a.user), a.day, a.bytes)
		if err != nil {
			t.Fatalf("AddMediaUsage(%s, %s, %d): %v", a.user, a.day, a.bytes, err)
		}
		if total != a.wantTotal {
			t.Fatalf("AddMediaUsage(%s, %s, %d) = %d, want %d", a.user, a.day, a.bytes, total, a.wantTotal)
		}
	}
	reads := []struct {
		user, day string
		want      int64
	}{
		{"u", d1, 350 + 1<<33},
		{"u", d2, 7},
		{"u1", d1, 1<<40 + 5},
		{"u1", d2, 0},
		{"v", d1, 0},
		{"v", d2, 1},
		{"nobody", d1, 0},
		{"u", "2023-11-16", 0},
	}
	for _, r := range reads {
		t.Run(r.user+"/"+r.day, func(t *testing.T) {
			got, err := ms.MediaUsage(ctx(t), f.id(r.user), r.day)
			if err != nil || got != r.want {
				t.Fatalf("MediaUsage(%s, %s) = (%d, %v), want %d", r.user, r.day, got, err, r.want)
			}
		})
	}
}

func testMediaConcurrentPut(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	const workers = 8
	digest := f.id("contended")
	type result struct {
		stored  persistence.Blob
		existed bool
		err     error
	}
	results := make([]result, workers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			b := blob(digest, int64(100+w), f.id(fmt.Sprintf("owner%d", w)), int64(w), int64(1000*w))
			stored, existed, err := ms.PutBlob(ctx(t), b)
			results[w] = result{stored, existed, err}
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for w, r := range results {
		if r.err != nil {
			t.Fatalf("PutBlob of worker %d: %v", w, r.err)
		}
		if !r.existed {
			if winner >= 0 {
				t.Fatalf("workers %d and %d both report they created the blob", winner, w)
			}
			winner = w
		}
	}
	if winner < 0 {
		t.Fatal("every worker reports the blob existed: none created it")
	}
	want := blob(digest, int64(100+winner), f.id(fmt.Sprintf("owner%d", winner)), int64(winner), 1000*(workers-1))
	for w, r := range results {
		// Each caller gets the winner's record, referenced at least as late
		// as its own reference.
		got := r.stored
		if got.Size != want.Size || got.OwnerID != want.OwnerID || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("worker %d got %s, want the winner's %s", w, fmtBlob(got), fmtBlob(want))
		}
		if got.LastReferenced.Before(at(int64(1000 * w))) {
			t.Fatalf("worker %d got %s, referenced before its own reference %s", w, fmtBlob(got), at(int64(1000*w)))
		}
	}
	checkBlob(t, "GetBlob after the race", getBlob(t, ms, digest), want)
}

func testMediaConcurrentUsage(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	const workers, adds = 8, 5
	user, d := f.id("busy"), "2023-11-14"
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			last := int64(0)
			for i := range adds {
				total, err := ms.AddMediaUsage(ctx(t), user, d, int64(w*adds+i+1))
				if err != nil {
					errs <- err
					return
				}
				if total < last+int64(w*adds+i+1) {
					errs <- fmt.Errorf("worker %d: total %d after adding %d to a total of at least %d", w, total, w*adds+i+1, last)
					return
				}
				last = total
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := int64(workers * adds)
	want := n * (n + 1) / 2
	if got, err := ms.MediaUsage(ctx(t), user, d); err != nil || got != want {
		t.Fatalf("MediaUsage after concurrent adds = (%d, %v), want %d", got, err, want)
	}
}

func testMediaReopen(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	if f.reopen == nil {
		t.Skip("implementation cannot reopen")
	}
	c := ctx(t)
	kept, touched, deleted := f.id("kept"), f.id("touched"), f.id("deleted")
	putBlob(t, ms, blob(kept, 1, f.id("alice"), 0, 0))
	putBlob(t, ms, blob(touched, 2, f.id("alice"), 0, 0))
	putBlob(t, ms, blob(deleted, 3, f.id("alice"), 0, 0))
	if err := ms.TouchBlob(c, touched, at(8000)); err != nil {
		t.Fatal(err)
	}
	if err := ms.DeleteBlob(c, deleted); err != nil {
		t.Fatal(err)
	}
	if _, err := ms.AddMediaUsage(c, f.id("alice"), "2023-11-14", 123); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s := f.reopen(t)
	if s == nil {
		t.Fatal("Reopen returned a nil store")
	}
	ms = mediaStore(t, s)
	checkBlob(t, "kept blob after reopen", getBlob(t, ms, kept), blob(kept, 1, f.id("alice"), 0, 0))
	checkBlob(t, "touched blob after reopen", getBlob(t, ms, touched), blob(touched, 2, f.id("alice"), 0, 8000))
	if _, err := ms.GetBlob(c, deleted); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("deleted blob after reopen: %v, want ErrNotFound", err)
	}
	if _, existed := putBlob(t, ms, blob(kept, 9, f.id("bob"), 9, 9)); !existed {
		t.Fatal("PutBlob of a kept blob after reopen reported a new blob")
	}
	if got, err := ms.MediaUsage(c, f.id("alice"), "2023-11-14"); err != nil || got != 123 {
		t.Fatalf("MediaUsage after reopen = (%d, %v), want 123", got, err)
	}
}

func testMediaClosed(t *testing.T, factory MediaFactory) {
	f, ms := newMediaFixture(t, factory)
	c := ctx(t)
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	d, u := f.id("blob"), f.id("user")
	calls := []struct {
		name string
		call func() error
	}{
		{"PutBlob", func() error { _, _, err := ms.PutBlob(c, blob(d, 1, u, 0, 0)); return err }},
		{"GetBlob", func() error { _, err := ms.GetBlob(c, d); return err }},
		{"TouchBlob", func() error { return ms.TouchBlob(c, d, at(1)) }},
		{"ExpiredBlobs", func() error { _, err := ms.ExpiredBlobs(c, at(0), 10); return err }},
		{"DeleteBlob", func() error { return ms.DeleteBlob(c, d) }},
		{"AddMediaUsage", func() error { _, err := ms.AddMediaUsage(c, u, "2023-11-14", 1); return err }},
		{"MediaUsage", func() error { _, err := ms.MediaUsage(c, u, "2023-11-14"); return err }},
	}
	for _, tc := range calls {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, persistence.ErrClosed) {
				t.Fatalf("got %v, want ErrClosed", err)
			}
		})
	}
}
