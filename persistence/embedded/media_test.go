package embedded_test

import (
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/persistence/storetest"
)

func TestMediaConformance(t *testing.T) {
	storetest.RunMedia(t, func(t *testing.T) (persistence.Store, storetest.Reopen) {
		dir := t.TempDir()
		return open(t, dir, embedded.Options{}), func(t *testing.T) persistence.Store {
			return open(t, dir, embedded.Options{})
		}
	})
}

// TestMediaUsageExpires: a usage record is hidden MediaUsageTTL after its
// last add and then swept; blob records and their index never expire on
// their own.
func TestMediaUsageExpires(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := open(t, t.TempDir(), embedded.Options{Now: clock.Now, SweepInterval: 5 * time.Millisecond})
	ctx := t.Context()
	const day = "2030-01-01"
	if _, err := s.AddMediaUsage(ctx, "u", day, 10); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutBlob(ctx, persistence.Blob{Digest: "d", Size: 1, OwnerID: "u", CreatedAt: clock.Now(), LastReferenced: clock.Now()}); err != nil {
		t.Fatal(err)
	}
	// A later add moves the expiry.
	clock.Advance(persistence.MediaUsageTTL - time.Hour)
	if total, err := s.AddMediaUsage(ctx, "u", day, 5); err != nil || total != 15 {
		t.Fatalf("AddMediaUsage = (%d, %v), want 15", total, err)
	}
	clock.Advance(2 * time.Hour)
	if got, err := s.MediaUsage(ctx, "u", day); err != nil || got != 15 {
		t.Fatalf("MediaUsage TTL after the first add = (%d, %v), want 15", got, err)
	}
	clock.Advance(persistence.MediaUsageTTL)
	if got, err := s.MediaUsage(ctx, "u", day); err != nil || got != 0 {
		t.Fatalf("MediaUsage TTL after the last add = (%d, %v), want 0", got, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		blobs, index, usage, err := s.RawMediaCounts()
		if err != nil {
			t.Fatal(err)
		}
		if usage == 0 {
			if blobs != 1 || index != 1 {
				t.Fatalf("after the sweep: %d blob records and %d index keys, want 1 and 1", blobs, index)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sweeper left %d usage records", usage)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// An add after expiry starts from zero.
	if total, err := s.AddMediaUsage(ctx, "u", day, 3); err != nil || total != 3 {
		t.Fatalf("AddMediaUsage after expiry = (%d, %v), want 3", total, err)
	}
}

// TestBlobIndexFollowsTheRecord: touches, re-publishes and deletes leave
// exactly one index key per blob record.
func TestBlobIndexFollowsTheRecord(t *testing.T) {
	s := open(t, t.TempDir(), embedded.Options{})
	ctx := t.Context()
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, d := range []string{"a", "b", "c"} {
		if _, _, err := s.PutBlob(ctx, persistence.Blob{Digest: d, Size: 1, OwnerID: "u", CreatedAt: t0, LastReferenced: t0}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []func() error{
		func() error { return s.TouchBlob(ctx, "a", t0.Add(time.Hour)) },
		func() error { return s.TouchBlob(ctx, "a", t0.Add(-time.Hour)) },
		func() error {
			_, _, err := s.PutBlob(ctx, persistence.Blob{Digest: "b", LastReferenced: t0.Add(2 * time.Hour)})
			return err
		},
		func() error { return s.DeleteBlob(ctx, "c") },
		func() error { return s.DeleteBlob(ctx, "c") },
		// Before the epoch sorts before it.
		func() error {
			_, _, err := s.PutBlob(ctx, persistence.Blob{Digest: "old", LastReferenced: time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)})
			return err
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	blobs, index, _, err := s.RawMediaCounts()
	if err != nil || blobs != 3 || index != 3 {
		t.Fatalf("RawMediaCounts = (%d blobs, %d index keys, %v), want 3 and 3", blobs, index, err)
	}
	got, err := s.ExpiredBlobs(ctx, t0.Add(90*time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Digest != "old" || got[1].Digest != "a" {
		t.Fatalf("ExpiredBlobs = %+v, want old, then a", got)
	}
}
