package scylla_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/scylla"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
	"github.com/courier-im/courier/persistence/storetest"
	"github.com/courier-im/courier/protos/courierpb"
)

func testLogger() *slog.Logger {
	if os.Getenv("COURIER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// open opens a store and closes it when t ends (tolerating a store the
// test closed itself).
func open(t testing.TB, opts scylla.Options) *scylla.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := scylla.Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open(%v, keyspace %s): %v", opts.Hosts, opts.Keyspace, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	for _, mode := range []scylla.AppendMode{scylla.AppendCoalesced, scylla.AppendBatched, scylla.AppendConcurrent} {
		t.Run(mode.String(), func(t *testing.T) {
			base := scyllatest.Options(t)
			base.AppendMode = mode
			// Create the keyspace and schema once, before the suite's
			// parallel subtests open their stores on it.
			open(t, base)
			storetest.Run(t, func(t *testing.T, o storetest.Options) (persistence.Store, storetest.Reopen) {
				opts := base
				opts.InboxTTL = o.InboxTTL
				return open(t, opts), func(t *testing.T) persistence.Store { return open(t, opts) }
			})
		})
	}
}

func entry(seq uint64) *courierpb.InboxEntry {
	return &courierpb.InboxEntry{
		InboxSeq:    seq,
		Kind:        courierpb.EntryKind_ENTRY_KIND_MESSAGE,
		FromUserId:  "sender",
		ClientMsgId: fmt.Sprintf("m%d", seq),
		Ciphertext:  fmt.Appendf(nil, "payload %d", seq),
	}
}

// TestLeasesFromTwoStoresAreDisjoint races two stores (two sessions, as two
// nodes would have) on one counter: the compare-and-set, not a lock in
// this process, keeps the blocks apart.
func TestLeasesFromTwoStoresAreDisjoint(t *testing.T) {
	opts := scyllatest.Options(t)
	a := open(t, opts)
	b := open(t, opts)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	type lease struct{ first, last uint64 }
	var mu sync.Mutex
	var got []lease
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for range 25 {
				first, last, err := s.LeaseBlock(ctx, "shared", 10)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				got = append(got, lease{first, last})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(x, y lease) int { return int(x.first) - int(y.first) })
	for i := 1; i < len(got); i++ {
		if got[i].first <= got[i-1].last {
			t.Fatalf("leases %v and %v overlap", got[i-1], got[i])
		}
	}
	if len(got) != 200 {
		t.Fatalf("%d leases, want 200", len(got))
	}
}

// TestOpenUnreachableIsUnavailable: no database at the address means a
// retryable error after OpenTimeout, not a hang or a panic.
func TestOpenUnreachableIsUnavailable(t *testing.T) {
	start := time.Now()
	_, err := scylla.Open(t.Context(), scylla.Options{
		Hosts:       []string{"127.0.0.1:1"},
		OpenTimeout: 2 * time.Second,
		Logger:      testLogger(),
	})
	if !errors.Is(err, persistence.ErrUnavailable) {
		t.Fatalf("Open(nothing listening) = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Open took %v to give up", d)
	}
}

func TestParseReplication(t *testing.T) {
	cases := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", "1", false},
		{"3", "3", false},
		{"dc1:3", "dc1:3", false},
		{" dc2:2, dc1:3 ", "dc1:3,dc2:2", false},
		{"0", "", true},
		{"dc1", "", true},
		{"dc1:x", "", true},
		{"dc1:0", "", true},
		{"d'c:1", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			r, err := scylla.ParseReplication(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseReplication(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if err == nil && r.String() != tc.want {
				t.Fatalf("ParseReplication(%q) = %s, want %s", tc.in, r, tc.want)
			}
		})
	}
}
