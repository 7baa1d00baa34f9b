package scylla_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/persistence/scylla"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
)

// BenchmarkInboxAppend measures one grain's group commit per store: each
// of 64 concurrent writers (grains) appends groups of 8 messages to its own
// recipient, entries and dedupe records together, as actors.storeBatch
// does. It reports the latency of one Append (p50, p99) and messages/s;
// scylla runs once per AppendMode, which is how the default was chosen.
//
//	go test -run '^$' -bench InboxAppend -benchtime 20000x ./persistence/scylla/
func BenchmarkInboxAppend(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) persistence.Store
	}{
		{"embedded", func(b *testing.B) persistence.Store {
			s, err := embedded.Open(b.TempDir(), embedded.Options{Logger: testLogger()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		}},
		{"scylla-coalesced", func(b *testing.B) persistence.Store {
			o := scyllatest.Options(b)
			o.AppendMode = scylla.AppendCoalesced
			return open(b, o)
		}},
		{"scylla-batched", func(b *testing.B) persistence.Store {
			o := scyllatest.Options(b)
			o.AppendMode = scylla.AppendBatched
			return open(b, o)
		}},
		{"scylla-concurrent", func(b *testing.B) persistence.Store {
			o := scyllatest.Options(b)
			o.AppendMode = scylla.AppendConcurrent
			return open(b, o)
		}},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			s := st.open(b)
			benchAppend(b, s, 64, 8)
		})
	}
}

func benchAppend(b *testing.B, s persistence.Store, writers, group int) {
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, writers)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			user := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), w)
			seq := uint64(0)
			for next.Add(1) <= int64(b.N) {
				as := make([]persistence.InboxAppend, group)
				ds := make([]persistence.DedupeRecord, group)
				for i := range group {
					seq++
					as[i] = persistence.InboxAppend{UserID: user, DeviceID: 1, Entry: entry(seq)}
					ds[i] = persistence.DedupeRecord{RecipientID: user, SenderID: "sender", ClientMsgID: fmt.Sprintf("m%d", seq), StoredAtMs: 1}
				}
				t0 := time.Now()
				if err := s.Append(ctx, as, ds); err != nil {
					b.Error(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(all)*group)/elapsed.Seconds(), "msgs/s")
}
