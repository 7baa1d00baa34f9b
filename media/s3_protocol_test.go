package media_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/media/s3test"
)

// The protocol tests' main paths with blobs in a real S3 server (MinIO,
// started by test.sh; skipped without COURIER_TEST_S3_ENDPOINT): resume
// after a drop, ranged download, an existing digest, a wrong digest, the
// owner check, and expiry of blobs and stale uploads.
func TestTheProtocolOverTheS3Store(t *testing.T) {
	cfg := s3test.Config(t)
	blobs, err := media.NewS3Store(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, media.Config{Blobs: blobs})
	data := randomBytes(t, 12<<20)
	digest := digestOf(data)
	path := h.mustCreate("alice", int64(len(data)), digest)
	resp, body := h.patch("alice", path, 0, data[:6<<20])
	wantStatus(t, "first PATCH", resp, body, http.StatusNoContent)
	dropPatch(t, h, "alice", path, 6<<20, data[6<<20:], 3<<20)
	off, _ := strconv.ParseInt(h.head("alice", path).Header.Get("Upload-Offset"), 10, 64)
	if off < 6<<20 || off > 9<<20 {
		t.Fatalf("offset %d after the drop", off)
	}
	resp, body = h.patch("alice", path, off, data[off:])
	wantStatus(t, "resumed PATCH", resp, body, http.StatusNoContent)
	if resp.Header.Get(media.HeaderBlobDigest) != digest {
		t.Fatalf("resumed PATCH: digest %q", resp.Header.Get(media.HeaderBlobDigest))
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, map[string]string{"Range": "bytes=100-199"}, nil)
	wantStatus(t, "ranged GET", resp, body, http.StatusPartialContent)
	if string(body) != string(data[100:200]) {
		t.Fatal("the ranged GET returned other bytes")
	}
	resp, body = h.create("bob", int64(len(data)), digest)
	wantStatus(t, "creation of an existing digest", resp, body, http.StatusOK)
	bad := h.mustCreate("alice", 10, digestOf([]byte("x")))
	resp, body = h.patch("alice", bad, 0, []byte("0123456789"))
	wantStatus(t, "PATCH with a wrong digest", resp, body, http.StatusBadRequest)
	if h.head("alice", bad).StatusCode != http.StatusNotFound {
		t.Fatal("the upload with a wrong digest survived")
	}
	if h.head("bob", path).StatusCode != http.StatusNotFound {
		t.Fatal("bob sees alice's upload")
	}
	stale := h.mustCreate("alice", 10, digestOf([]byte("y")))
	h.clock.Advance(31 * 24 * time.Hour)
	res, err := h.svc.Sweep(context.Background())
	if err != nil || res.Blobs != 1 || res.Uploads != 1 {
		t.Fatalf("sweep: %+v (%v), want 1 blob and 1 upload", res, err)
	}
	if h.head("alice", stale).StatusCode != http.StatusNotFound {
		t.Fatal("a stale upload survived the sweep")
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "GET after expiry", resp, body, http.StatusNotFound)
}
