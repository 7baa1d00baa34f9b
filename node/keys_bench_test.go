package node_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// BenchmarkBundleFetch is GET /v1/keys/{user} against the embedded store:
// read the device keys, take one one-time prekey, count the rest. Every
// fetch consumes a fresh prekey (owners are refilled outside the timer).
//
//	go test -run '^$' -bench BundleFetch -benchtime 5000x ./node/
func BenchmarkBundleFetch(b *testing.B) {
	n := startNode(b, nil)
	fetcher := register(b, n.URL(), fmt.Sprintf("fetcher-%d", time.Now().UnixNano()))
	var owner account
	left := 0
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if left == 0 {
			b.StopTimer()
			owner = register(b, n.URL(), fmt.Sprintf("owner-%d-%d", time.Now().UnixNano(), i))
			putKeys(b, n, owner.Token, keyUpload(b, 1, 200))
			left = 200
			b.StartTimer()
		}
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, n.URL()+"/v1/keys/"+owner.UserID, nil)
		req.Header.Set("Authorization", "Bearer "+fetcher.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("fetch: %v %v", err, resp)
		}
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		left--
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
