package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// BenchmarkRequestRoundTrip is the cost of the cross-node hop: the same
// request/response to an echo grain that lives on this node and to one that
// lives on a peer process (Envelope encode, Proto.Actor remote over gRPC on
// loopback, relay, decode). Run with
//
//	go test -run '^$' -bench RequestRoundTrip -benchtime 20000x ./cluster/
//
// and read ns/op of local against peer; µs/op p50/p99 are reported too.
func BenchmarkRequestRoundTrip(b *testing.B) {
	a, ms, _ := sharedNode(b)
	p := startPeer(b, a, ms)
	for _, tc := range []struct {
		name  string
		owner Member
	}{{"local", a.Self()}, {"peer", p.self}} {
		b.Run(tc.name, func(b *testing.B) {
			id := identityOwnedBy(b, a, tc.owner, unique(b))
			ping(b, a, id, 1) // activate outside the measurement
			lat := make([]int64, 0, b.N)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := a.Request(ctx, id, &courierpb.Ping{ClientTimeMs: int64(i)}, ""); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, int64(time.Since(start)))
			}
			b.StopTimer()
			slices.Sort(lat)
			at := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e3 }
			b.ReportMetric(at(0.50), "p50-µs")
			b.ReportMetric(at(0.99), "p99-µs")
		})
	}
}
