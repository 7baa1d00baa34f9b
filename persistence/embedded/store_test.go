package embedded_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/persistence/storetest"
	"github.com/courier-im/courier/protos/courierpb"
)

var quiet = slog.New(slog.DiscardHandler)

func open(t testing.TB, dir string, opts embedded.Options) *embedded.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := embedded.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	// The suite may close first; a second Close only reports ErrClosed.
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, opts storetest.Options) (persistence.Store, storetest.Reopen) {
		dir := t.TempDir()
		eopts := embedded.Options{InboxTTL: opts.InboxTTL}
		return open(t, dir, eopts), func(t *testing.T) persistence.Store {
			return open(t, dir, eopts)
		}
	})
}

// fakeClock is safe for the sweeper goroutine to read while the test
// advances it.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func TestSweeperDeletesExpired(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := open(t, t.TempDir(), embedded.Options{
		InboxTTL:      time.Hour,
		Now:           clock.Now,
		SweepInterval: 5 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	app := func(device uint32, seq uint64, tag string, dedupe ...string) {
		t.Helper()
		var recs []persistence.DedupeRecord
		for _, m := range dedupe {
			recs = append(recs, persistence.DedupeRecord{RecipientID: "u", SenderID: "s", ClientMsgID: m, StoredAtMs: 1})
		}
		e := &courierpb.InboxEntry{InboxSeq: seq, ClientMsgId: tag}
		if err := s.Append(ctx, []persistence.InboxAppend{{UserID: "u", DeviceID: device, Entry: e}}, recs); err != nil {
			t.Fatal(err)
		}
	}
	waitCounts := func(inbox, dedupe, expiry int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			i, d, e, err := s.RawCounts()
			if err != nil {
				t.Fatal(err)
			}
			if i == inbox && d == dedupe && e == expiry {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("raw counts (inbox, dedupe, expiry) = (%d, %d, %d), want (%d, %d, %d)", i, d, e, inbox, dedupe, expiry)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// At T: due at T+60m.
	app(1, 1, "a", "A")
	app(1, 2, "a", "B")
	app(1, 3, "a")
	app(1, 5, "old")
	app(2, 1, "orphan")
	clock.Advance(30 * time.Minute)
	// At T+30m: due at T+90m. Seq 5 is replaced, so its T+60m index key must
	// not take the replacement with it.
	app(1, 4, "b", "C")
	app(1, 5, "new")
	// Leaves an index key whose record is already gone.
	if err := s.DeleteInbox(ctx, "u", 2); err != nil {
		t.Fatal(err)
	}
	// Index keys: one per inbox and expiry bucket (u/1 at T+60m and T+90m,
	// u/2 at T+60m), one per dedupe record.
	waitCounts(5, 3, 6)

	clock.Advance(31 * time.Minute)
	waitCounts(2, 1, 2)
	got, err := s.Range(ctx, "u", 1, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].GetInboxSeq() != 4 || got[1].GetClientMsgId() != "new" {
		t.Fatalf("Range after first sweep = %v, want seq 4 and the replaced seq 5", got)
	}
	if _, err := s.GetDedupe(ctx, "u", nil, "s", "C"); err != nil {
		t.Fatalf("GetDedupe(C) after first sweep: %v", err)
	}

	clock.Advance(30 * time.Minute)
	waitCounts(0, 0, 0)
}

// TestDeleteRangeBacklog covers the range-tombstone path DeleteRange
// takes for a large backlog; the conformance suite only acks a few entries.
func TestDeleteRangeBacklog(t *testing.T) {
	s := open(t, t.TempDir(), embedded.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const total = 3000
	var batch []persistence.InboxAppend
	for seq := uint64(1); seq <= total; seq++ {
		batch = append(batch, persistence.InboxAppend{UserID: "u", DeviceID: 1, Entry: &courierpb.InboxEntry{InboxSeq: seq}})
	}
	if err := s.Append(ctx, batch, nil); err != nil {
		t.Fatal(err)
	}
	for _, upTo := range []uint64{100, 2900} { // below, then above the point-delete limit
		if err := s.DeleteRange(ctx, "u", 1, 0, upTo); err != nil {
			t.Fatal(err)
		}
		got, err := s.Range(ctx, "u", 1, 0, total)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != int(total-upTo) || got[0].GetInboxSeq() != upTo+1 || got[len(got)-1].GetInboxSeq() != total {
			t.Fatalf("after DeleteRange(%d): %d entries from %d", upTo, len(got), got[0].GetInboxSeq())
		}
	}
}

// TestCloseReleasesGoroutines checks that the sweeper and Pebble's
// background goroutines end with Close, so a process that opens and closes
// stores (tests, tools) does not accumulate them.
func TestCloseReleasesGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := embedded.Open(t.TempDir(), embedded.Options{Logger: quiet, SweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := &courierpb.InboxEntry{InboxSeq: 1}
	if err := s.Append(t.Context(), []persistence.InboxAppend{{UserID: "u", DeviceID: 1, Entry: e}}, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // let the sweeper run a few rounds
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before Open, %d after Close", before, runtime.NumGoroutine())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// crashEnv makes the test binary act as the crashing writer.
const crashEnv = "COURIER_EMBEDDED_CRASH_DIR"

// TestCrashDurability SIGKILLs a writer mid-stream and checks that every
// Append that had returned is there after reopening. SIGKILL keeps the OS
// page cache, so this proves the WAL is written and recovered in commit
// order before Append returns; it cannot simulate a power cut.
func TestCrashDurability(t *testing.T) {
	if dir := os.Getenv(crashEnv); dir != "" {
		crashWriter(dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns a subprocess")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurability$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	const killAfter = 200
	acked := uint64(0)
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "appended ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", sc.Text())
		}
		acked = max(acked, n)
		if !killed && acked >= killAfter {
			// Kill, but keep reading: lines already in the pipe are Appends
			// that returned before the kill and must be durable too.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("writer exited before being killed after %d appends: %v", acked, werr)
	}

	s := open(t, dir, embedded.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got, err := s.Range(ctx, "crash", 1, 0, int(acked)+1000)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) < acked {
		t.Fatalf("after crash %d entries survive, but %d Appends had returned", len(got), acked)
	}
	for i, e := range got {
		if e.GetInboxSeq() != uint64(i)+1 {
			t.Fatalf("entry %d has seq %d: the surviving prefix has a hole", i, e.GetInboxSeq())
		}
	}
	t.Logf("killed after %d acknowledged appends; %d entries recovered", acked, len(got))
}

// crashWriter appends one entry at a time and reports each one only after
// Append returned, until it is killed.
func crashWriter(dir string) {
	s, err := embedded.Open(dir, embedded.Options{Logger: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx := context.Background()
	w := bufio.NewWriter(os.Stdout)
	for seq := uint64(1); seq < 1_000_000; seq++ {
		e := &courierpb.InboxEntry{InboxSeq: seq, Ciphertext: make([]byte, 256)}
		if err := s.Append(ctx, []persistence.InboxAppend{{UserID: "crash", DeviceID: 1, Entry: e}}, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(w, "appended %d\n", seq)
		// Flush per line: a line buffered in this process when it dies is an
		// acknowledgement the parent never saw, which is harmless, but the
		// parent needs the lines promptly to decide when to kill.
		if err := w.Flush(); err != nil {
			os.Exit(2)
		}
	}
	os.Exit(3)
}

func BenchmarkAppendParallel(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := open(b, b.TempDir(), embedded.Options{})
			var users atomic.Int64
			payload := make([]byte, 200)
			// Many more writers than cores, as many grains append at once;
			// this is what lets Pebble group their WAL syncs.
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				uid := fmt.Sprintf("bench-%d", users.Add(1))
				ctx := context.Background()
				batch := make([]persistence.InboxAppend, n)
				seq := uint64(0)
				for pb.Next() {
					for i := range batch {
						seq++
						batch[i] = persistence.InboxAppend{UserID: uid, DeviceID: 1, Entry: &courierpb.InboxEntry{InboxSeq: seq, Ciphertext: payload}}
					}
					if err := s.Append(ctx, batch, nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkAppendSerial is the baseline without concurrency: one fsync per
// Append, so it shows what group commit saves.
func BenchmarkAppendSerial(b *testing.B) {
	s := open(b, b.TempDir(), embedded.Options{})
	ctx := context.Background()
	payload := make([]byte, 200)
	for i := 0; b.Loop(); i++ {
		e := &courierpb.InboxEntry{InboxSeq: uint64(i + 1), Ciphertext: payload}
		if err := s.Append(ctx, []persistence.InboxAppend{{UserID: "serial", DeviceID: 1, Entry: e}}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSweeperEmptiesAnInboxLargerThanAChunk: one expiry index key covers a
// whole inbox's bucket, and a sweep that deletes more entries than fit in
// one chunk carries on where it stopped.
func TestSweeperEmptiesAnInboxLargerThanAChunk(t *testing.T) {
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := open(t, t.TempDir(), embedded.Options{
		InboxTTL:      time.Hour,
		Now:           clock.Now,
		SweepInterval: 5 * time.Millisecond,
	})
	ctx := t.Context()
	const n = 1300 // more than two sweep chunks
	for seq := uint64(1); seq <= n; seq += 100 {
		var batch []persistence.InboxAppend
		for i := seq; i < seq+100; i++ {
			batch = append(batch, persistence.InboxAppend{UserID: "u", DeviceID: 1, Entry: &courierpb.InboxEntry{InboxSeq: i}})
		}
		if err := s.Append(ctx, batch, nil); err != nil {
			t.Fatal(err)
		}
	}
	if i, _, e, err := s.RawCounts(); err != nil || i != n || e != 1 {
		t.Fatalf("raw counts: %d entries, %d index keys, %v; want %d, 1", i, e, err, n)
	}
	clock.Advance(time.Hour + time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for {
		i, _, e, err := s.RawCounts()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && e == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after expiry: %d entries and %d index keys left", i, e)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLazyAppendIsReadableAtOnceAndKeptByTheNextSync: AppendLazy's entries
// are visible as soon as it returns, and a later durable write (or a clean
// close) keeps them.
func TestLazyAppendIsReadableAtOnceAndKeptByTheNextSync(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, embedded.Options{})
	ctx := t.Context()
	lazy := []persistence.InboxAppend{{UserID: "u", DeviceID: 1, Entry: &courierpb.InboxEntry{InboxSeq: 1, Kind: courierpb.EntryKind_ENTRY_KIND_DELIVERED}}}
	if err := s.AppendLazy(ctx, lazy); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Range(ctx, "u", 1, 0, 10); err != nil || len(got) != 1 {
		t.Fatalf("after AppendLazy: %v %v, want the entry", got, err)
	}
	if err := s.Append(ctx, []persistence.InboxAppend{{UserID: "u", DeviceID: 1, Entry: &courierpb.InboxEntry{InboxSeq: 2}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, embedded.Options{})
	if got, err := s.Range(ctx, "u", 1, 0, 10); err != nil || len(got) != 2 {
		t.Fatalf("after reopening: %v %v, want both entries", got, err)
	}
}
