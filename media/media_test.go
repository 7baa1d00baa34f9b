package media_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/lockedbuf"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/persistence"
)

func TestUploadInChunksResumesAfterADropAndDownloadsByRange(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 300_000)
	digest := digestOf(data)
	path := h.mustCreate("alice", int64(len(data)), digest)

	resp, body := h.patch("alice", path, 0, data[:100_000])
	wantStatus(t, "first PATCH", resp, body, http.StatusNoContent)
	if got := resp.Header.Get("Upload-Offset"); got != "100000" {
		t.Fatalf("Upload-Offset %q after the first chunk", got)
	}
	if resp.Header.Get("Upload-Expires") == "" {
		t.Error("no Upload-Expires on an unfinished upload")
	}

	// The connection drops in the middle of the second chunk.
	dropPatch(t, h, "alice", path, 100_000, data[100_000:250_000], 70_000)

	head := h.head("alice", path)
	if head.StatusCode != http.StatusOK {
		t.Fatalf("HEAD after the drop: %d", head.StatusCode)
	}
	off, err := strconv.ParseInt(head.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || off < 100_000 || off > 170_000 {
		t.Fatalf("HEAD after the drop: Upload-Offset %q, want 100000..170000", head.Header.Get("Upload-Offset"))
	}
	if head.Header.Get("Upload-Length") != strconv.Itoa(len(data)) {
		t.Fatalf("HEAD: Upload-Length %q", head.Header.Get("Upload-Length"))
	}

	resp, body = h.patch("alice", path, off, data[off:])
	wantStatus(t, "resumed PATCH", resp, body, http.StatusNoContent)
	if got := resp.Header.Get(media.HeaderBlobDigest); got != digest {
		t.Fatalf("final PATCH: %s %q, want %s", media.HeaderBlobDigest, got, digest)
	}
	if h.head("alice", path).StatusCode != http.StatusNotFound {
		t.Error("the upload is still there after it was published")
	}

	// Bob downloads: any authenticated user may, by digest.
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "GET", resp, body, http.StatusOK)
	if !bytes.Equal(body, data) {
		t.Fatal("downloaded bytes differ from the uploaded ones")
	}
	for k, want := range map[string]string{
		"ETag":           `"` + digest + `"`,
		"Content-Length": strconv.Itoa(len(data)),
		"Accept-Ranges":  "bytes",
		"Cache-Control":  "private, immutable",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("GET: %s %q, want %q", k, got, want)
		}
	}

	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, map[string]string{"Range": "bytes=1000-1999"}, nil)
	wantStatus(t, "ranged GET", resp, body, http.StatusPartialContent)
	if !bytes.Equal(body, data[1000:2000]) || resp.Header.Get("Content-Range") != "bytes 1000-1999/300000" {
		t.Fatalf("ranged GET: %d bytes, Content-Range %q", len(body), resp.Header.Get("Content-Range"))
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, map[string]string{"If-None-Match": `"` + digest + `"`}, nil)
	wantStatus(t, "conditional GET", resp, body, http.StatusNotModified)
}

// dropPatch sends a PATCH announcing all of chunk, sends only n of its bytes
// and hangs up, then waits for the server's answer, so the bytes received
// are stored before the test goes on.
func dropPatch(t *testing.T, h *harness, user, path string, offset int64, chunk []byte, n int) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := "PATCH " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + h.tokens(user) +
		"\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: " +
		strconv.FormatInt(offset, 10) + "\r\nContent-Length: " + strconv.Itoa(len(chunk)) + "\r\n\r\n"
	if _, err := conn.Write([]byte(hdr)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(chunk[:n]); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the dropped PATCH got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("the dropped PATCH was answered %d", resp.StatusCode)
	}
}

// A client whose connection died resumes on a new one while the server
// still waits for the old PATCH's body: the HEAD interrupts the old PATCH
// (tusd's lock), keeps what it received, and the upload completes.
func TestResumeInterruptsAPatchStillWaitingOnTheOldConnection(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 50_000)
	path := h.mustCreate("alice", int64(len(data)), digestOf(data))
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := "PATCH " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + h.tokens("alice") +
		"\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 50000\r\n\r\n"
	if _, err := conn.Write(append([]byte(hdr), data[:20_000]...)); err != nil {
		t.Fatal(err)
	}
	// The old connection stays open and silent; the client resumes on a
	// new one (the idle timeout, 30s, is far off).
	time.Sleep(50 * time.Millisecond)
	head := h.head("alice", path)
	if head.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: %d", head.StatusCode)
	}
	off, err := strconv.ParseInt(head.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || off > 20_000 {
		t.Fatalf("HEAD: Upload-Offset %q", head.Header.Get("Upload-Offset"))
	}
	// The old PATCH was answered: it no longer holds the upload.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	old, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the interrupted PATCH got no answer: %v", err)
	}
	old.Body.Close()
	resp, body := h.patch("alice", path, off, data[off:])
	wantStatus(t, "resumed PATCH", resp, body, http.StatusNoContent)
	if resp.Header.Get(media.HeaderBlobDigest) != digestOf(data) {
		t.Fatalf("resumed PATCH: digest %q", resp.Header.Get(media.HeaderBlobDigest))
	}
}

func TestWrongDigestIsRefusedNothingIsPublishedAndTheUploadIsGone(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 5000)
	declared := digestOf([]byte("something else"))
	path := h.mustCreate("alice", int64(len(data)), declared)
	resp, body := h.patch("alice", path, 0, data[:2000])
	wantStatus(t, "PATCH", resp, body, http.StatusNoContent)
	resp, body = h.patch("alice", path, 2000, data[2000:])
	wantMismatchLeftNothing(t, h, path, resp, body, declared, data)
}

// wantMismatchLeftNothing checks the answer to the PATCH that completed an
// upload whose declared digest was wrong: a 400 naming both digests, no
// blob published under either, the upload and every byte of it gone.
func wantMismatchLeftNothing(t *testing.T, h *harness, path string, resp *http.Response, body []byte, declared string, data []byte) {
	t.Helper()
	wantStatus(t, "last PATCH", resp, body, http.StatusBadRequest)
	want := "digest mismatch: declared " + declared + ", got " + digestOf(data)
	if !strings.Contains(string(body), want) {
		t.Fatalf("last PATCH: body %q does not say %q", body, want)
	}
	if resp.Header.Get(media.HeaderBlobDigest) != "" {
		t.Error("a mismatch named a blob")
	}
	if h.head("alice", path).StatusCode != http.StatusNotFound {
		t.Error("the upload with a wrong digest is still there")
	}
	for _, d := range []string{declared, digestOf(data)} {
		resp, body := h.do("alice", http.MethodGet, media.Prefix+"blobs/"+d, nil, nil)
		wantStatus(t, "GET "+d, resp, body, http.StatusNotFound)
		if _, err := h.records.GetBlob(context.Background(), d); !errors.Is(err, persistence.ErrNotFound) {
			t.Errorf("record of %s: %v, want ErrNotFound", d, err)
		}
	}
	wantEmptyDir(t, filepath.Join(h.dir, "blobs"))
	wantEmptyDir(t, filepath.Join(h.dir, "uploads"))
}

func wantEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		names := make([]string, len(entries))
		for i, e := range entries {
			names[i] = e.Name()
		}
		t.Fatalf("%s holds %v, want nothing", dir, names)
	}
}

func TestExistingDigestAnswers200AtOnceStoresNothingAndExtendsItsLife(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 4096)
	digest := h.upload("alice", data, 4096)
	before, err := h.records.GetBlob(context.Background(), digest)
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(time.Hour)

	resp, body := h.create("bob", int64(len(data)), digest)
	wantStatus(t, "create of an existing digest", resp, body, http.StatusOK)
	if resp.Header.Get(media.HeaderBlobDigest) != digest || resp.Header.Get("Location") != "" {
		t.Fatalf("create of an existing digest: %s %q, Location %q", media.HeaderBlobDigest,
			resp.Header.Get(media.HeaderBlobDigest), resp.Header.Get("Location"))
	}
	wantEmptyDir(t, filepath.Join(h.dir, "uploads"))
	after, err := h.records.GetBlob(context.Background(), digest)
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastReferenced.Equal(before.LastReferenced.Add(time.Hour)) || after.OwnerID != "alice" {
		t.Fatalf("record after the re-reference: %+v (before %+v)", after, before)
	}
	used, err := h.records.MediaUsage(context.Background(), "bob", "2026-12-02")
	if err != nil || used != 0 {
		t.Fatalf("bob's usage %d (%v): a re-reference must cost nothing", used, err)
	}
}

func TestRequestsWithoutAValidTokenAre401(t *testing.T) {
	h := newHarness(t, media.Config{})
	digest := h.upload("alice", []byte("hello"), 5)
	upload := h.mustCreate("alice", 10, digestOf([]byte("0123456789")))
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, media.Prefix},
		{http.MethodHead, upload},
		{http.MethodPatch, upload},
		{http.MethodDelete, upload},
		{http.MethodGet, media.Prefix + "blobs/" + digest},
	} {
		resp, body := h.do("", tc.method, tc.path, map[string]string{"Tus-Resumable": "1.0.0"}, nil)
		wantStatus(t, tc.method+" "+tc.path, resp, body, http.StatusUnauthorized)
		if tc.method != http.MethodHead {
			wantJSONError(t, tc.method+" "+tc.path, body, "UNAUTHENTICATED")
		}
	}
}

func TestAnotherUsersUploadAndUnknownUploadsAre404(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := []byte("0123456789")
	// Alice's client also claims bob as the owner: the server ignores it.
	resp, body := h.do("alice", http.MethodPost, media.Prefix, map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   "10",
		"Upload-Metadata": sha256Meta(digestOf(data)) + ",owner Ym9i,filename c2VjcmV0LmpwZw==",
	}, nil)
	wantStatus(t, "create", resp, body, http.StatusCreated)
	path := resp.Header.Get("Location")
	for _, tc := range []struct {
		name, user, method, path string
	}{
		{"bob HEAD", "bob", http.MethodHead, path},
		{"bob PATCH", "bob", http.MethodPatch, path},
		{"bob DELETE", "bob", http.MethodDelete, path},
		{"unknown id", "alice", http.MethodHead, media.Prefix + "0123456789abcdef0123456789abcdef"},
		{"malformed id", "alice", http.MethodPatch, media.Prefix + "..%2F..%2Fetc"},
		{"blobs is no upload", "alice", http.MethodPatch, media.Prefix + "blobs/" + digestOf(data)},
	} {
		resp, body := h.do(tc.user, tc.method, tc.path, map[string]string{
			"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
		}, bytes.NewReader(data))
		if tc.name == "blobs is no upload" {
			wantStatus(t, tc.name, resp, body, http.StatusMethodNotAllowed)
			continue
		}
		wantStatus(t, tc.name, resp, body, http.StatusNotFound)
	}
	head := h.head("alice", path)
	if head.StatusCode != http.StatusOK || head.Header.Get("Upload-Offset") != "0" {
		t.Fatalf("alice's HEAD: %d, offset %q: bob's PATCH must not have written", head.StatusCode, head.Header.Get("Upload-Offset"))
	}
	meta := head.Header.Get("Upload-Metadata")
	if !strings.Contains(meta, "owner YWxpY2U=") || strings.Contains(meta, "filename") {
		t.Fatalf("Upload-Metadata %q: want owner alice set by the server and the client's other keys dropped", meta)
	}
	resp, body = h.do("alice", http.MethodDelete, path, map[string]string{"Tus-Resumable": "1.0.0"}, nil)
	wantStatus(t, "alice's DELETE", resp, body, http.StatusNoContent)
	wantEmptyDir(t, filepath.Join(h.dir, "uploads"))
}

func TestCreationRefusals(t *testing.T) {
	h := newHarness(t, media.Config{MaxSize: 1000, DailyQuota: 5000})
	for _, tc := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		// (No sha256 at all is a deferred digest: deferred_test.go.)
		{"sha256 not base64", map[string]string{"Upload-Length": "10", "Upload-Metadata": "sha256 !!!"}, http.StatusBadRequest},
		{"sha256 in upper case", map[string]string{"Upload-Length": "10", "Upload-Metadata": sha256Meta(strings.ToUpper(digestOf(nil)))}, http.StatusBadRequest},
		{"sha256 too short", map[string]string{"Upload-Length": "10", "Upload-Metadata": sha256Meta("abcd")}, http.StatusBadRequest},
		{"over the maximum", map[string]string{"Upload-Length": "1001", "Upload-Metadata": sha256Meta(digestOf(nil))}, http.StatusRequestEntityTooLarge},
		{"deferred length", map[string]string{"Upload-Defer-Length": "1", "Upload-Metadata": sha256Meta(digestOf(nil))}, http.StatusNotImplemented},
		{"no Tus-Resumable", map[string]string{"Tus-Resumable": "", "Upload-Length": "10", "Upload-Metadata": sha256Meta(digestOf(nil))}, http.StatusPreconditionFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{"Tus-Resumable": "1.0.0"}
			for k, v := range tc.header {
				hdr[k] = v
			}
			resp, body := h.do("alice", http.MethodPost, media.Prefix, hdr, nil)
			wantStatus(t, tc.name, resp, body, tc.want)
			if resp.Header.Get("Location") != "" {
				t.Errorf("refused creation has Location %q", resp.Header.Get("Location"))
			}
			if tc.want == http.StatusRequestEntityTooLarge && !strings.Contains(string(body), `"code":"TOO_LARGE"`) {
				t.Errorf("413 body %q: want the API's JSON error with code TOO_LARGE", body)
			}
		})
	}
	wantEmptyDir(t, filepath.Join(h.dir, "uploads"))
	if used, err := h.records.MediaUsage(context.Background(), "alice", "2026-12-02"); err != nil || used != 0 {
		t.Fatalf("usage %d (%v) after refused creations", used, err)
	}
}

func TestOffsetMismatchIs409(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 100)
	path := h.mustCreate("alice", 100, digestOf(data))
	resp, body := h.patch("alice", path, 0, data[:40])
	wantStatus(t, "PATCH", resp, body, http.StatusNoContent)
	for _, off := range []int64{0, 39, 41} {
		resp, body := h.patch("alice", path, off, data[off:])
		wantStatus(t, "PATCH at "+strconv.FormatInt(off, 10), resp, body, http.StatusConflict)
	}
	if got := h.head("alice", path).Header.Get("Upload-Offset"); got != "40" {
		t.Fatalf("offset %s after refused PATCHes, want 40", got)
	}
}

func TestDailyQuotaAnswers429WithRetryAfterUntilMidnightUTC(t *testing.T) {
	h := newHarness(t, media.Config{DailyQuota: 1000})
	h.clock.Advance(11*time.Hour + 30*time.Minute) // 23:30 UTC
	a := randomBytes(t, 600)
	h.mustCreate("alice", 600, digestOf(a))
	resp, body := h.create("alice", 600, digestOf(randomBytes(t, 600)))
	wantStatus(t, "second creation", resp, body, http.StatusTooManyRequests)
	wantJSONError(t, "second creation", body, "RATE_LIMITED")
	if got := resp.Header.Get("Retry-After"); got != "1800" {
		t.Fatalf("Retry-After %q, want 1800 (seconds to midnight UTC)", got)
	}
	// Only alice is over her quota; an existing blob costs nothing.
	h.mustCreate("bob", 600, digestOf(randomBytes(t, 600)))
	b := randomBytes(t, 10)
	digest := h.upload("bob", b, 10)
	resp, body = h.create("alice", 10, digest)
	wantStatus(t, "alice re-references bob's blob", resp, body, http.StatusOK)
	// A new day, a new quota.
	h.clock.Advance(30 * time.Minute)
	h.mustCreate("alice", 600, digestOf(randomBytes(t, 600)))
}

func TestExpiryDeletesBytesAndRecordThen404(t *testing.T) {
	ttl := 30 * 24 * time.Hour
	h := newHarness(t, media.Config{TTL: ttl})
	old := h.upload("alice", []byte("old photo"), 100)
	kept := h.upload("alice", []byte("forwarded photo"), 100)
	stale := h.mustCreate("alice", 100, digestOf(randomBytes(t, 100)))

	h.clock.Advance(ttl / 2)
	resp, body := h.create("bob", 15, kept) // forwarded: re-referenced
	wantStatus(t, "re-reference", resp, body, http.StatusOK)
	h.clock.Advance(ttl/2 + time.Second)

	// Expired but not yet swept: already gone for downloads.
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+old, nil, nil)
	wantStatus(t, "GET before the sweep", resp, body, http.StatusNotFound)

	res, err := h.svc.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Blobs != 1 || res.Uploads != 1 {
		t.Fatalf("sweep: %+v, want 1 blob and 1 upload", res)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "blobs", old)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired blob's bytes: %v, want gone", err)
	}
	if _, err := h.records.GetBlob(context.Background(), old); !errors.Is(err, persistence.ErrNotFound) {
		t.Errorf("expired blob's record: %v, want ErrNotFound", err)
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+old, nil, nil)
	wantStatus(t, "GET after the sweep", resp, body, http.StatusNotFound)
	wantJSONError(t, "GET after the sweep", body, "NOT_FOUND")
	if h.head("alice", stale).StatusCode != http.StatusNotFound {
		t.Error("a stale unfinished upload survived the sweep")
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+kept, nil, nil)
	wantStatus(t, "GET of the re-referenced blob", resp, body, http.StatusOK)
	// Uploading an expired digest again publishes it anew.
	if got := h.upload("alice", []byte("old photo"), 100); got != old {
		t.Fatalf("re-upload: digest %q", got)
	}
}

func TestStalledPatchIsCutOffAfterTheIdleTimeout(t *testing.T) {
	h := newHarness(t, media.Config{IdleTimeout: 300 * time.Millisecond})
	data := randomBytes(t, 1000)
	path := h.mustCreate("alice", 1000, digestOf(data))
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write(data[:10]) }() // then nothing
	req, err := http.NewRequest(http.MethodPatch, h.base+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1000
	req.Header.Set("Authorization", h.tokens("alice"))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	start := time.Now()
	resp, err := h.client.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("stalled PATCH answered %d", resp.StatusCode)
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("the stalled PATCH took %v to be cut off with a 300ms idle timeout", el)
	}
	if got := h.head("alice", path).Header.Get("Upload-Offset"); got != "10" {
		t.Fatalf("offset %s after the cut-off, want the 10 bytes received", got)
	}
}

func TestBlobFileHoldsTheBytesExactlyAsUploaded(t *testing.T) {
	for _, size := range []int{0, 1, 65536, 1<<20 + 7} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			h := newHarness(t, media.Config{})
			data := randomBytes(t, size)
			var digest string
			if size == 0 {
				resp, body := h.create("alice", 0, digestOf(nil))
				wantStatus(t, "create empty", resp, body, http.StatusCreated)
				digest = resp.Header.Get(media.HeaderBlobDigest)
			} else {
				digest = h.upload("alice", data, 200_000)
			}
			if digest != digestOf(data) {
				t.Fatalf("digest %q, want %s", digest, digestOf(data))
			}
			onDisk, err := os.ReadFile(filepath.Join(h.dir, "blobs", digest))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, data) {
				t.Fatal("the blob file differs from the uploaded bytes")
			}
			b, err := h.records.GetBlob(context.Background(), digest)
			if err != nil || b.Size != int64(size) || b.OwnerID != "alice" {
				t.Fatalf("record %+v (%v)", b, err)
			}
		})
	}
}

// A flaky network: PATCHes cut short again and again, each resumed at once
// from the server's offset on a new connection while the server may still
// be reading the old one. Every byte received is kept, the upload
// completes, and (under -race) tusd's lock hand-over is race-free
// (locker.go).
func TestRepeatedDropsAndImmediateResumesLoseNothing(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 200_000)
	digest := digestOf(data)
	path := h.mustCreate("alice", int64(len(data)), digest)
	var off int64
	for range 20 {
		head := h.head("alice", path)
		if head.StatusCode != http.StatusOK {
			t.Fatalf("HEAD: %d", head.StatusCode)
		}
		off, _ = strconv.ParseInt(head.Header.Get("Upload-Offset"), 10, 64)
		conn, err := net.Dial("tcp", strings.TrimPrefix(h.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		hdr := "PATCH " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: " + h.tokens("alice") +
			"\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: " +
			strconv.FormatInt(off, 10) + "\r\nContent-Length: " + strconv.FormatInt(int64(len(data))-off, 10) + "\r\n\r\n"
		_, _ = conn.Write([]byte(hdr))
		_, _ = conn.Write(data[off:min(off+5000, int64(len(data))-1)])
		_ = conn.Close()
	}
	// The last dropped PATCH may reach the server after the HEAD: then the
	// offset moved (409), or it interrupts the final PATCH (tusd's newest
	// request wins: 400 ERR_UPLOAD_INTERRUPTED) perhaps after that PATCH
	// published the blob (HEAD 404; creating it again answers 200). A
	// client asks again.
	published := ""
	for i := 0; i < 5 && published == ""; i++ {
		head := h.head("alice", path)
		if head.StatusCode == http.StatusNotFound {
			resp, body := h.create("alice", int64(len(data)), digest)
			wantStatus(t, "creation after the upload was published", resp, body, http.StatusOK)
			published = resp.Header.Get(media.HeaderBlobDigest)
			break
		}
		off, _ = strconv.ParseInt(head.Header.Get("Upload-Offset"), 10, 64)
		if resp, _ := h.patch("alice", path, off, data[off:]); resp.StatusCode == http.StatusNoContent {
			published = resp.Header.Get(media.HeaderBlobDigest)
		}
	}
	if published != digest {
		t.Fatalf("published digest %q, want %s", published, digest)
	}
}

func TestCloseInterruptsUploadsInFlightKeepsTheirBytesAndRefusesNewRequests(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 1000)
	path := h.mustCreate("alice", 1000, digestOf(data))
	answered := h.stallPatch(h.base, path, 1000, data[:10], h.client)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.svc.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-answered:
		if code != http.StatusServiceUnavailable {
			t.Fatalf("the PATCH in flight was answered %d, want 503", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not interrupt the PATCH in flight")
	}
	bin := filepath.Join(h.dir, "uploads", strings.TrimPrefix(path, media.Prefix))
	if st, err := os.Stat(bin); err != nil || st.Size() != 10 {
		t.Fatalf("after Close the upload holds %v bytes (%v), want the 10 received", st, err)
	}
	resp, body := h.create("alice", 5, digestOf([]byte("hello")))
	wantStatus(t, "creation after Close", resp, body, http.StatusServiceUnavailable)
}

func TestOptionsAdvertisesTheProtocolToAuthenticatedClientsOnly(t *testing.T) {
	h := newHarness(t, media.Config{MaxSize: 1 << 20})
	resp, body := h.do("alice", http.MethodOptions, media.Prefix, nil, nil)
	wantStatus(t, "OPTIONS", resp, body, http.StatusOK)
	if got := resp.Header.Get("Tus-Version"); got != "1.0.0" {
		t.Errorf("Tus-Version %q", got)
	}
	if got := resp.Header.Get("Tus-Max-Size"); got != "1048576" {
		t.Errorf("Tus-Max-Size %q", got)
	}
	ext := resp.Header.Get("Tus-Extension")
	for _, want := range []string{"creation", "termination", "expiration"} {
		if !strings.Contains(ext, want) {
			t.Errorf("Tus-Extension %q lacks %s", ext, want)
		}
	}
	for _, unwanted := range []string{"concatenation", "creation-defer-length"} {
		if strings.Contains(ext, unwanted) {
			t.Errorf("Tus-Extension %q offers %s", ext, unwanted)
		}
	}
	resp, body = h.do("", http.MethodOptions, media.Prefix, nil, nil)
	wantStatus(t, "OPTIONS without a token", resp, body, http.StatusUnauthorized)
}

// Two PATCHes of one upload at once (the client's old connection is still
// alive): the newer takes the upload, the older is answered 423, which a
// client retries with HEAD; a 400 stays reserved for a digest mismatch.
func TestAPatchInterruptedByANewerOneIsAnswered423(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 1000)
	path := h.mustCreate("alice", 1000, digestOf(data))
	older := h.stallPatch(h.base, path, 1000, data[:10], h.client)
	resp, body := h.patch("alice", path, 10, data[10:])
	wantStatus(t, "newer PATCH", resp, body, http.StatusNoContent)
	if resp.Header.Get(media.HeaderBlobDigest) != digestOf(data) {
		t.Fatalf("newer PATCH: digest %q", resp.Header.Get(media.HeaderBlobDigest))
	}
	select {
	case code := <-older:
		if code != http.StatusLocked {
			t.Fatalf("the older PATCH was answered %d, want 423", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the older PATCH was never answered")
	}
}

func TestNoClientSuppliedBytesReachTheLog(t *testing.T) {
	var logs lockedbuf.Buffer
	blobs := newFaultyBlobs(t, t.TempDir())
	h := newHarness(t, media.Config{Blobs: blobs, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	const canary = "CANARY7f3a"
	data := []byte(canary + " ciphertext " + canary)
	hdr := map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   strconv.Itoa(len(data)),
		"X-Request-ID":    canary,
		"Upload-Metadata": sha256Meta(digestOf([]byte("other"))) + ",filename " + base64.StdEncoding.EncodeToString([]byte(canary)),
	}
	resp, body := h.do("alice", http.MethodPost, media.Prefix, hdr, nil)
	wantStatus(t, "create", resp, body, http.StatusCreated)
	path := resp.Header.Get("Location")
	blobs.set(5, 0) // a full disk: logged
	resp, body = h.do("alice", http.MethodPatch, path, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Offset": "0",
		"Content-Type": "application/offset+octet-stream", "X-Request-ID": canary}, bytes.NewReader(data))
	wantStatus(t, "PATCH on a full disk", resp, body, http.StatusInsufficientStorage)
	blobs.set(-1, 0)
	resp, body = h.do("alice", http.MethodPatch, path, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Offset": "5",
		"Content-Type": "application/offset+octet-stream", "X-Request-ID": canary}, bytes.NewReader(data[5:]))
	wantStatus(t, "PATCH with a wrong digest", resp, body, http.StatusBadRequest)
	resp, body = h.do("alice", http.MethodPatch, media.Prefix+canary, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Offset": "0",
		"Content-Type": "application/offset+octet-stream"}, bytes.NewReader(data))
	wantStatus(t, "PATCH of a made-up upload", resp, body, http.StatusNotFound)
	if logs.String() == "" {
		t.Fatal("nothing was logged: the test proves nothing")
	}
	if strings.Contains(logs.String(), canary) {
		t.Fatalf("client-supplied bytes in the log:\n%s", logs.String())
	}
}
