package media_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/media/s3test"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
)

// Two nodes share a database and a bucket, as a cluster does: a tus upload
// through one gateway is downloaded, by range, from the other (any gateway
// serves any blob), an upload begun on one is resumed on the other, and a
// digest one node published is forwarded through the other without a byte
// sent again. Nothing of it lands on a node's disk.
func TestS3TwoNodesShareUploadsAndBlobs(t *testing.T) {
	s3cfg := s3test.Config(t)
	s3cfg.TempDir = "" // the node's default: <data>/media-s3-parts
	db := scyllatest.Options(t)
	tokenKeys := nodetest.TokenKeysFile(t) // one key file, as a cluster shares
	clk := newClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	start := func() (*node.Node, string) {
		data := t.TempDir()
		n := nodetest.Start(t, node.Config{
			DataDir: data, Store: "scylla", ScyllaHosts: db.Hosts, ScyllaKeyspace: db.Keyspace,
			TokenKeysFile: tokenKeys,
			Media:         media.Config{Now: clk.Now, SweepInterval: -1},
			MediaS3:       s3cfg,
		})
		return n, data
	}
	a, dataA := start()
	b, dataB := start()
	tokens := map[string]string{"alice": register(t, a.URL(), "alice"), "bob": register(t, b.URL(), "bob")}
	gateway := func(n *node.Node) *harness {
		return &harness{t: t, clock: clk, base: n.URL(), client: &http.Client{Timeout: time.Minute},
			tokens: func(u string) string { return "Bearer " + tokens[u] }}
	}
	ha, hb := gateway(a), gateway(b)

	// Alice uploads through node A; Bob reads ranges of it from node B.
	payload := randomBytes(t, 3<<20+5)
	digest := ha.upload("alice", payload, 512<<10)
	if digest != digestOf(payload) {
		t.Fatalf("published digest %q", digest)
	}
	for _, r := range []struct {
		header   string
		from, to int
	}{
		{"bytes=1000-1999", 1000, 2000},
		{"bytes=-100", len(payload) - 100, len(payload)},
		{"bytes=2097150-", 2097150, len(payload)},
	} {
		resp, body := hb.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, map[string]string{"Range": r.header}, nil)
		wantStatus(t, "node B, Range "+r.header, resp, body, http.StatusPartialContent)
		if !bytes.Equal(body, payload[r.from:r.to]) {
			t.Fatalf("node B, Range %s: %d bytes that differ from the upload's", r.header, len(body))
		}
	}
	resp, body := hb.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "node B, whole blob", resp, body, http.StatusOK)
	if !bytes.Equal(body, payload) || resp.Header.Get("ETag") != `"`+digest+`"` {
		t.Fatalf("node B, whole blob: %d bytes, ETag %q", len(body), resp.Header.Get("ETag"))
	}

	// An upload begun on node A resumes on node B from the offset B reports.
	second := randomBytes(t, 1<<20+11)
	path := ha.mustCreate("alice", int64(len(second)), digestOf(second))
	resp, body = ha.patch("alice", path, 0, second[:400_000])
	wantStatus(t, "PATCH on node A", resp, body, http.StatusNoContent)
	headB := hb.head("alice", path)
	if headB.StatusCode != http.StatusOK || headB.Header.Get("Upload-Offset") != "400000" {
		t.Fatalf("HEAD on node B: %d, Upload-Offset %q; want 200, 400000", headB.StatusCode, headB.Header.Get("Upload-Offset"))
	}
	resp, body = hb.patch("alice", path, 400_000, second[400_000:])
	wantStatus(t, "PATCH on node B", resp, body, http.StatusNoContent)
	if got := resp.Header.Get(media.HeaderBlobDigest); got != digestOf(second) {
		t.Fatalf("the PATCH that completed the upload on node B answered digest %q", got)
	}
	resp, body = ha.do("alice", http.MethodGet, media.Prefix+"blobs/"+digestOf(second), map[string]string{"Range": "bytes=399990-400009"}, nil)
	wantStatus(t, "node A reads what node B published", resp, body, http.StatusPartialContent)
	if !bytes.Equal(body, second[399990:400010]) {
		t.Fatal("node A: the bytes around the resume point differ")
	}

	// Bob forwards Alice's first file through node B: nothing is sent again.
	resp, body = hb.create("bob", int64(len(payload)), digest)
	wantStatus(t, "forward on node B", resp, body, http.StatusOK)

	// The bucket holds the two blobs and nothing else; no node keeps media
	// on its disk.
	keys := s3test.Keys(t, s3cfg, "")
	want := []string{"blobs/" + digest, "blobs/" + digestOf(second)}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("bucket holds %v, want %v", keys, want)
	}
	for _, d := range []string{dataA, dataB} {
		if _, err := os.Stat(filepath.Join(d, "media")); !os.IsNotExist(err) {
			t.Errorf("%s/media exists (%v): media went to the node's disk", d, err)
		}
		parts, _ := os.ReadDir(filepath.Join(d, "media-s3-parts"))
		if len(parts) != 0 {
			t.Errorf("%d part files left in %s/media-s3-parts", len(parts), d)
		}
	}
}
