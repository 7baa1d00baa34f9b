package client_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// fakeTus is a minimal server of the media protocol (tus 1.0 creation,
// HEAD, PATCH, DELETE; blob download with Range), with knobs to misbehave.
type fakeTus struct {
	t   testing.TB
	srv *httptest.Server

	mu      sync.Mutex
	uploads map[string]*fakeUpload
	blobs   map[string][]byte
	nextID  int
	tokens  int

	// What it saw.
	received   int64        // PATCH body bytes read, lost ones included
	wire       bytes.Buffer // every request's headers and body bytes
	creates    int
	patches    []int64     // Upload-Offset of every PATCH
	patchAt    []time.Time // when every PATCH arrived
	badOffsets int         // PATCHes whose offset was not the server's
	heads      int
	deletes    int
	lost       int64   // bytes dropped by simulated restarts
	served     int64   // blob bytes written to downloads
	ranges     []int64 // start of every GET (0 without Range)

	// Knobs.
	patchPlan    []patchStep // one per PATCH, in order; then normal
	getPlan      []int64     // per GET: abort after this many bytes (-1: whole)
	headPlan     []int       // per HEAD: answer this status instead (0: normal)
	exists       bool        // creation answers 200 (the blob exists)
	createStatus int         // creation answers this (0: normal)
	retryAfter   string      // Retry-After of createStatus
	maxLength    int64       // creation of more: 413
	corruptStore bool        // flip a stored byte: the final digest check fails
	refuseTokens int         // answer 401 to this many media requests
	down         int         // answer 503 to this many requests (restarting)
	ignoreRange  bool
	getStatus    []int // per GET: answer this status instead (0: normal)
	stallPatch   int   // this many PATCHes read 1 KiB, then hang
	stallGet     int   // this many GETs send 1 KiB, then hang
	noHeadOffset bool
	lateFinish   bool // a complete upload is published at its 2nd HEAD, silently
	lateHeads    int
	absoluteLoc  bool
}

type patchStep struct {
	status int   // answer this without reading the body (0: handle)
	read   int64 // with status or abort: read this many body bytes first (kept)
	abort  bool  // drop the connection after read bytes
	// restart: after reading read bytes, lose the upload's bytes beyond
	// keep (the offset the server had "on disk"), drop the connection and
	// answer 503 to the next down requests.
	restart bool
	keep    int64
	downFor int
}

type fakeUpload struct {
	length int64
	digest string
	// deferred: created without sha256; the PATCH that completes it
	// declares the digest (Courier-Blob-Digest), as with the real server.
	deferred bool
	data     []byte
}

func newFakeTus(t testing.TB) *fakeTus {
	f := &fakeTus{t: t, uploads: map[string]*fakeUpload{}, blobs: map[string][]byte{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTus) URL() string { return f.srv.URL }

func (f *fakeTus) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fmt.Fprintf(&f.wire, "%s %s\n", r.Method, r.URL)
	_ = r.Header.Write(&f.wire)
	if f.down > 0 {
		f.down--
		f.mu.Unlock()
		http.Error(w, "restarting", http.StatusServiceUnavailable)
		return
	}
	f.mu.Unlock()
	if r.URL.Path == "/v1/token" {
		f.mu.Lock()
		f.tokens++
		tok := fmt.Sprintf("tok-%d", f.tokens)
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in_sec": 3600})
		return
	}
	f.mu.Lock()
	refuse := f.refuseTokens > 0 || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer tok-")
	if f.refuseTokens > 0 {
		f.refuseTokens--
	}
	f.mu.Unlock()
	if refuse {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"code":"TOKEN_EXPIRED","message":"token expired"}`)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/media/")
	switch {
	case !ok:
		http.NotFound(w, r)
	case strings.HasPrefix(rest, "blobs/"):
		f.download(w, r, strings.TrimPrefix(rest, "blobs/"))
	case rest == "" && r.Method == http.MethodPost:
		f.create(w, r)
	default:
		f.upload(w, r, rest)
	}
}

func (f *fakeTus) create(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	if r.Header.Get("Tus-Resumable") != "1.0.0" {
		http.Error(w, "no Tus-Resumable", http.StatusPreconditionFailed)
		return
	}
	if f.createStatus != 0 {
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.WriteHeader(f.createStatus)
		return
	}
	length, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil || length < 0 {
		http.Error(w, "bad Upload-Length", http.StatusBadRequest)
		return
	}
	if f.maxLength > 0 && length > f.maxLength {
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		return
	}
	var dig []byte
	deferred := r.Header.Get("Upload-Metadata") == ""
	if !deferred {
		key, val, _ := strings.Cut(r.Header.Get("Upload-Metadata"), " ")
		dig, err = base64.StdEncoding.DecodeString(val)
		if key != "sha256" || err != nil || len(dig) != 64 || strings.Contains(r.Header.Get("Upload-Metadata"), ",") {
			http.Error(w, "bad metadata", http.StatusBadRequest)
			return
		}
		if _, ok := f.blobs[string(dig)]; ok || f.exists {
			w.Header().Set("Courier-Blob-Digest", string(dig))
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	f.nextID++
	id := fmt.Sprintf("up%d", f.nextID)
	f.uploads[id] = &fakeUpload{length: length, digest: string(dig), deferred: deferred}
	loc := "/v1/media/" + id
	if f.absoluteLoc {
		loc = f.srv.URL + loc
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusCreated)
}

func (f *fakeTus) upload(w http.ResponseWriter, r *http.Request, id string) {
	f.mu.Lock()
	up := f.uploads[id]
	f.mu.Unlock()
	if up == nil {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodHead:
		f.mu.Lock()
		f.heads++
		status := 0
		if len(f.headPlan) > 0 {
			status, f.headPlan = f.headPlan[0], f.headPlan[1:]
		}
		off := len(up.data)
		if status == 0 && int64(off) == up.length && !f.lateFinish && !up.deferred {
			// Like the real server: the HEAD of a complete upload whose
			// last PATCH never got its answer finishes it.
			defer f.mu.Unlock()
			w.Header().Set("Upload-Offset", strconv.Itoa(off))
			if !f.finishLocked(id, up, w) {
				http.Error(w, "digest mismatch", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		if status == 0 && int64(off) == up.length && f.lateFinish {
			// The server publishes it while answering its second HEAD
			// (as if it finished after its client hung up), but the
			// answer does not say so.
			f.lateHeads++
			if f.lateHeads == 2 {
				f.finishLocked(id, up, httptest.NewRecorder())
			}
		}
		f.mu.Unlock()
		if status != 0 {
			w.WriteHeader(status)
			return
		}
		if !f.noHeadOffset {
			w.Header().Set("Upload-Offset", strconv.Itoa(off))
		}
		w.Header().Set("Upload-Length", strconv.FormatInt(up.length, 10))
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
	case http.MethodDelete:
		f.mu.Lock()
		f.deletes++
		delete(f.uploads, id)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		f.patch(w, r, id, up)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (f *fakeTus) patch(w http.ResponseWriter, r *http.Request, id string, up *fakeUpload) {
	off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil || r.Header.Get("Content-Type") != "application/offset+octet-stream" || r.Header.Get("Tus-Resumable") != "1.0.0" {
		http.Error(w, "bad PATCH", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.patches = append(f.patches, off)
	f.patchAt = append(f.patchAt, time.Now())
	var step patchStep
	if len(f.patchPlan) > 0 {
		step, f.patchPlan = f.patchPlan[0], f.patchPlan[1:]
	}
	if off != int64(len(up.data)) {
		f.badOffsets++
		f.mu.Unlock()
		w.WriteHeader(http.StatusConflict)
		return
	}
	stall := f.stallPatch > 0
	if stall {
		f.stallPatch--
	}
	f.mu.Unlock()
	if stall {
		b := make([]byte, 1024)
		n, _ := io.ReadFull(r.Body, b)
		f.mu.Lock()
		up.data = append(up.data, b[:n]...)
		f.received += int64(n)
		f.mu.Unlock()
		// Swallow the rest (not stored, as if lost in a buffer), so the
		// server notices when the client hangs up.
		_, _ = io.Copy(io.Discard, r.Body)
		f.hang(r)
		return
	}
	limit := int64(-1)
	if step.status != 0 || step.abort || step.restart {
		limit = step.read
	}
	if step.status != 0 && limit == 0 {
		w.WriteHeader(step.status)
		return
	}
	buf := make([]byte, 32<<10)
	var got int64
	for limit < 0 || got < limit {
		want := int64(len(buf))
		if limit >= 0 {
			want = min(want, limit-got)
		}
		n, rerr := r.Body.Read(buf[:want])
		f.mu.Lock()
		if int64(len(up.data)+n) > up.length {
			f.mu.Unlock()
			http.Error(w, "past Upload-Length", http.StatusBadRequest)
			return
		}
		up.data = append(up.data, buf[:n]...)
		f.received += int64(n)
		f.wire.Write(buf[:n])
		f.mu.Unlock()
		got += int64(n)
		if rerr != nil {
			break
		}
	}
	switch {
	case step.restart:
		f.mu.Lock()
		if int64(len(up.data)) > step.keep {
			f.lost += int64(len(up.data)) - step.keep
			up.data = up.data[:step.keep]
		}
		f.down = step.downFor
		f.mu.Unlock()
		panic(http.ErrAbortHandler)
	case step.abort:
		panic(http.ErrAbortHandler)
	case step.status != 0:
		w.WriteHeader(step.status)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Upload-Offset", strconv.Itoa(len(up.data)))
	if int64(len(up.data)) == up.length && up.deferred {
		d := r.Header.Get("Courier-Blob-Digest")
		if len(d) != 64 {
			// The bytes stay; an empty PATCH with the header finishes.
			http.Error(w, "the completing PATCH carries no Courier-Blob-Digest", http.StatusBadRequest)
			return
		}
		up.digest = d
	}
	if int64(len(up.data)) == up.length && !f.finishLocked(id, up, w) {
		http.Error(w, "digest mismatch", http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// finishLocked checks a complete upload's digest and publishes it; false
// on a mismatch (the upload is gone either way).
func (f *fakeTus) finishLocked(id string, up *fakeUpload, w http.ResponseWriter) bool {
	delete(f.uploads, id)
	data := up.data
	if f.corruptStore {
		data = bytes.Clone(data)
		data[len(data)/2] ^= 1
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != up.digest {
		return false
	}
	f.blobs[up.digest] = data
	w.Header().Set("Courier-Blob-Digest", up.digest)
	return true
}

func (f *fakeTus) download(w http.ResponseWriter, r *http.Request, digest string) {
	f.mu.Lock()
	blob, ok := f.blobs[digest]
	abortAfter := int64(-1)
	if len(f.getPlan) > 0 {
		abortAfter, f.getPlan = f.getPlan[0], f.getPlan[1:]
	}
	status := 0
	if len(f.getStatus) > 0 {
		status, f.getStatus = f.getStatus[0], f.getStatus[1:]
	}
	stall := f.stallGet > 0
	if stall {
		f.stallGet--
	}
	f.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
		w.WriteHeader(http.StatusOK)
		return
	}
	start := int64(0)
	if v := r.Header.Get("Range"); v != "" && !f.ignoreRange {
		a, _ := strings.CutSuffix(strings.TrimPrefix(v, "bytes="), "-")
		n, err := strconv.ParseInt(a, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= int64(len(blob)) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
	}
	f.mu.Lock()
	f.ranges = append(f.ranges, start)
	f.mu.Unlock()
	body := blob[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if start > 0 {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(blob)-1, len(blob)))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if abortAfter >= 0 && abortAfter < int64(len(body)) {
		body = body[:abortAfter]
	}
	if stall {
		body = body[:min(len(body), 1024)]
	}
	n, _ := w.Write(body)
	f.mu.Lock()
	f.served += int64(n)
	f.mu.Unlock()
	if stall {
		w.(http.Flusher).Flush()
		f.hang(r)
		return
	}
	if abortAfter >= 0 {
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
}

// hang stalls a request until its client gives up (or 10s).
func (f *fakeTus) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
	panic(http.ErrAbortHandler)
}

func (f *fakeTus) blob(digest string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blobs[digest]
}

func (f *fakeTus) setBlob(digest string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[digest] = b
}

func (f *fakeTus) stats() (received, lost int64, creates int, patches []int64, badOffsets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.received, f.lost, f.creates, append([]int64(nil), f.patches...), f.badOffsets
}

func (f *fakeTus) do(fn func(f *fakeTus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// mediaClient is a Client that talks to f only (no session).
func mediaClient(t testing.TB, f *fakeTus) *client.Client {
	t.Helper()
	c, err := client.NewMediaClientForTest(client.Credentials{BaseURL: f.URL(), UserID: "u1", DeviceID: 1, DeviceSecret: "s"},
		client.WithBackoff(time.Millisecond, 20*time.Millisecond), client.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// canaryFile is size bytes of plaintext full of a marker string.
func canaryFile(size int) []byte {
	const marker = "CANARY-PLAINTEXT-7f3a9c "
	b := make([]byte, size)
	for i := range b {
		b[i] = marker[i%len(marker)]
	}
	if size > 64 {
		// A little variation, so no two chunks are equal.
		for i := 0; i < size; i += 4096 {
			b[i] = byte(i >> 12)
		}
	}
	return b
}

// progressLog records progress calls and checks them.
type progressLog struct {
	mu    sync.Mutex
	calls [][2]int64
}

func (p *progressLog) fn(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, [2]int64{done, total})
}

func (p *progressLog) check(t testing.TB, total int64) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.calls) == 0 {
		t.Fatal("progress never called")
	}
	prev := int64(-1)
	for _, c := range p.calls {
		if c[1] != total {
			t.Fatalf("progress total %d, want %d", c[1], total)
		}
		if c[0] <= prev || c[0] > total {
			t.Fatalf("progress not monotone within [0, total]: %v", p.calls)
		}
		prev = c[0]
	}
	if prev != total {
		t.Fatalf("progress ends at %d, want %d", prev, total)
	}
}

func roundTrip(t *testing.T, c *client.Client, f *fakeTus, plain []byte, r io.Reader, opts ...client.MediaOption) client.MediaRef {
	t.Helper()
	ctx := timeout(t, 60*time.Second)
	var up progressLog
	ref, err := c.UploadMedia(ctx, r, int64(len(plain)), append(opts, client.WithMediaProgress(up.fn))...)
	if err != nil {
		t.Fatalf("upload %d bytes: %v", len(plain), err)
	}
	if ref.Size != int64(len(plain)) || ref.CipherSize != client.MediaCipherSize(ref.Size) || len(ref.Key) != 32 {
		t.Fatalf("ref %+v", ref)
	}
	up.check(t, ref.CipherSize)
	blob := f.blob(ref.Digest)
	sum := sha256.Sum256(blob)
	if int64(len(blob)) != ref.CipherSize || hex.EncodeToString(sum[:]) != ref.Digest {
		t.Fatalf("server holds %d bytes of digest %x, ref says %d and %s", len(blob), sum, ref.CipherSize, ref.Digest)
	}
	var out bytes.Buffer
	var down progressLog
	if err := c.DownloadMedia(ctx, ref, &out, append(opts, client.WithMediaProgress(down.fn))...); err != nil {
		t.Fatalf("download %d bytes: %v", len(plain), err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("downloaded %d bytes differ from the %d uploaded", out.Len(), len(plain))
	}
	down.check(t, ref.CipherSize)
	return ref
}

func TestMediaRoundTripSizes(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	for _, n := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 5 << 20} {
		plain := canaryFile(n)
		roundTrip(t, c, f, plain, bytes.NewReader(plain), client.WithMediaPieceSize(1<<20))
	}
	f.do(func(f *fakeTus) {
		if bytes.Contains(f.wire.Bytes(), []byte("CANARY-PLAINTEXT")) {
			t.Fatal("the server received plaintext")
		}
		if f.badOffsets != 0 {
			t.Fatalf("%d PATCHes at an offset the server did not have", f.badOffsets)
		}
	})
}

// onlyReader hides every method but Read (a pipe, a socket).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func TestMediaNonSeekableReaderIsSpooled(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	dir := t.TempDir()
	for _, n := range []int{0, 64 << 10, 3<<20 + 5} {
		plain := canaryFile(n)
		f.do(func(f *fakeTus) {
			// Resumes work from the spool file too.
			f.patchPlan = []patchStep{{abort: true, read: 100 << 10}, {status: 500}, {restart: true, read: 70 << 10, keep: 10, downFor: 2}}
		})
		roundTrip(t, c, f, plain, onlyReader{bytes.NewReader(plain)}, client.WithMediaTempDir(dir), client.WithMediaPieceSize(1<<20))
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("temporary files left: %v", ents)
		}
	}
	f.do(func(f *fakeTus) {
		if bytes.Contains(f.wire.Bytes(), []byte("CANARY-PLAINTEXT")) {
			t.Fatal("the server received plaintext")
		}
	})
}

func TestMediaUploadResumesFromTheServerOffset(t *testing.T) {
	plain := canaryFile(5 << 20)
	for _, tc := range []struct {
		name  string
		piece int64
		plan  []patchStep
		heads []int
	}{
		{"dropped mid-PATCH", 1 << 20, []patchStep{{abort: true, read: 300 << 10}, {}, {abort: true, read: 1}, {abort: true, read: 0}}, nil},
		{"one PATCH, dropped thrice", 0, []patchStep{{abort: true, read: 1 << 20}, {abort: true, read: 2 << 20}, {abort: true, read: 12345}}, nil},
		{"409, 500, 507, 423", 1 << 20, []patchStep{{status: 409}, {status: 500, read: 4096}, {}, {status: 507, read: 500 << 10}, {status: 423}}, nil},
		{"restart losing in-flight bytes", 1 << 20, []patchStep{{}, {restart: true, read: 700 << 10, keep: 1<<20 + 4096, downFor: 3}}, nil},
		{"one PATCH, restarts", 0, []patchStep{{restart: true, read: 3 << 20, keep: 2 << 20, downFor: 2}, {restart: true, read: 1 << 20, keep: 2<<20 + 512<<10, downFor: 1}}, nil},
		{"HEAD fails too", 1 << 20, []patchStep{{abort: true, read: 1000}}, []int{500, 503, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTus(t)
			c := mediaClient(t, f)
			f.do(func(f *fakeTus) { f.patchPlan, f.headPlan = tc.plan, tc.heads })
			ref := roundTrip(t, c, f, plain, bytes.NewReader(plain), client.WithMediaPieceSize(tc.piece))
			received, lost, creates, patches, bad := f.stats()
			// Every byte the server kept was sent once; only what it lost
			// was sent again.
			if received != ref.CipherSize+lost {
				t.Fatalf("server read %d bytes for a %d-byte upload (%d lost in restarts): some were sent twice", received, ref.CipherSize, lost)
			}
			if creates != 1 {
				t.Fatalf("%d creations", creates)
			}
			started := false
			for i, off := range patches {
				if started && off == 0 {
					t.Fatalf("PATCH %d restarted from byte 0: %v", i, patches)
				}
				started = started || off > 0
			}
			// Only the injected 409 (none here: the fake answers 409 only
			// to a wrong offset) may be a conflict.
			if bad != 0 {
				t.Fatalf("%d PATCHes at an offset the server did not have: %v", bad, patches)
			}
		})
	}
}

func TestMediaExistingDigestUploadsNothing(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	f.do(func(f *fakeTus) { f.exists = true })
	plain := canaryFile(300 << 10)
	var p progressLog
	// A spooled upload knows its digest before it creates the upload, so
	// it declares it there. (A file's upload defers it: with a fresh key
	// no blob can share its ciphertext.)
	ref, err := c.UploadMedia(timeout(t, 10*time.Second), onlyReader{bytes.NewReader(plain)}, int64(len(plain)), client.WithMediaProgress(p.fn))
	if err != nil {
		t.Fatal(err)
	}
	p.check(t, ref.CipherSize)
	received, _, creates, patches, _ := f.stats()
	if received != 0 || len(patches) != 0 || creates != 1 {
		t.Fatalf("existing blob: %d bytes in %d PATCHes after %d creations", received, len(patches), creates)
	}
}

func TestMediaUploadRefusals(t *testing.T) {
	plain := canaryFile(200 << 10)
	for _, tc := range []struct {
		name string
		set  func(f *fakeTus)
		want error
	}{
		{"too large", func(f *fakeTus) { f.maxLength = 1000 }, client.ErrMediaTooLarge},
		{"quota", func(f *fakeTus) { f.createStatus, f.retryAfter = 429, "3600" }, client.ErrMediaQuota},
		{"digest mismatch", func(f *fakeTus) { f.corruptStore = true }, client.ErrMediaDigestRefused},
		{"bad request", func(f *fakeTus) { f.createStatus = 400 }, nil},
		{"HEAD without an offset", func(f *fakeTus) {
			f.noHeadOffset, f.patchPlan = true, []patchStep{{abort: true, read: 1000}}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTus(t)
			c := mediaClient(t, f)
			f.do(tc.set)
			start := time.Now()
			_, err := c.UploadMedia(timeout(t, 10*time.Second), bytes.NewReader(plain), int64(len(plain)))
			if time.Since(start) > 5*time.Second || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("retried a refusal until the deadline: %v", err)
			}
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want == client.ErrMediaQuota {
				if d, ok := client.MediaRetryAfter(err); !ok || d != time.Hour {
					t.Fatalf("retry after %v %v", d, ok)
				}
			}
			f.do(func(f *fakeTus) {
				if len(f.blobs) != 0 {
					t.Fatal("a blob was published")
				}
			})
		})
	}
}

func TestMediaUploadWaitsOutShortRetryAfterAndRefreshesTokens(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(100 << 10)
	f.do(func(f *fakeTus) { f.createStatus, f.retryAfter = 429, "1" })
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.do(func(f *fakeTus) { f.createStatus = 0; f.refuseTokens = 2 })
	}()
	start := time.Now()
	roundTrip(t, c, f, plain, bytes.NewReader(plain))
	if time.Since(start) < 900*time.Millisecond {
		t.Fatalf("did not wait for Retry-After")
	}
	f.do(func(f *fakeTus) {
		if f.tokens < 2 {
			t.Fatalf("token not refreshed after 401 (%d tokens)", f.tokens)
		}
	})
}

func TestMediaUploadCreatesAgainWhenTheServerLostIt(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(2 << 20)
	f.do(func(f *fakeTus) {
		f.absoluteLoc = true
		f.patchPlan = []patchStep{{}, {abort: true, read: 10}}
		f.headPlan = []int{404}
	})
	roundTrip(t, c, f, plain, bytes.NewReader(plain), client.WithMediaPieceSize(1<<20))
	_, _, creates, _, _ := f.stats()
	if creates != 2 {
		t.Fatalf("%d creations, want 2", creates)
	}
}

// changingFile reads differently the second time through: after the
// last piece (here the whole file) was hashed, before it is sent.
type changingFile struct {
	*bytes.Reader
	data   []byte
	passes int
}

func (c *changingFile) Seek(off int64, whence int) (int64, error) {
	if off == 0 && whence == io.SeekStart {
		c.passes++
		if c.passes == 2 {
			c.data[len(c.data)-10] ^= 1
		}
	}
	return c.Reader.Seek(off, whence)
}

func TestMediaUploadOfAFileThatChangesIsAbandoned(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	data := canaryFile(300 << 10)
	cf := &changingFile{Reader: bytes.NewReader(data), data: data}
	_, err := c.UploadMedia(timeout(t, 10*time.Second), cf, int64(len(data)))
	if !errors.Is(err, client.ErrMediaSourceChanged) {
		t.Fatalf("got %v, want ErrMediaSourceChanged", err)
	}
	received, _, _, _, _ := f.stats()
	if received > 4*(64<<10+16) {
		t.Fatalf("%d bytes sent, more than the unchanged chunks", received)
	}
	f.do(func(f *fakeTus) {
		if f.deletes != 1 || len(f.uploads) != 0 || len(f.blobs) != 0 {
			t.Fatalf("abandoned upload not deleted (%d deletes, %d uploads, %d blobs)", f.deletes, len(f.uploads), len(f.blobs))
		}
	})
}

func TestMediaUploadOfAShortReaderFails(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	data := canaryFile(1000)
	for _, r := range []io.Reader{bytes.NewReader(data), onlyReader{bytes.NewReader(data)}} {
		for _, size := range []int64{999, 1001} {
			if _, err := c.UploadMedia(timeout(t, 10*time.Second), r, size); !errors.Is(err, client.ErrMediaSize) {
				t.Fatalf("%T of 1000 bytes as %d: got %v", r, size, err)
			}
			if s, ok := r.(io.Seeker); ok {
				_, _ = s.Seek(0, io.SeekStart)
			} else {
				r = onlyReader{bytes.NewReader(data)}
			}
		}
	}
}

func TestMediaUploadStopsWithItsContext(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	f.do(func(f *fakeTus) { f.down = 1 << 30 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	plain := canaryFile(1000)
	_, err := c.UploadMedia(ctx, bytes.NewReader(plain), int64(len(plain)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("upload: got %v", err)
	}
	ref := client.MediaRef{Digest: strings.Repeat("ab", 32), Key: make([]byte, 32), Size: 1, CipherSize: 17}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if err := c.DownloadMedia(ctx, ref, &out); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("download: got %v", err)
	}
}

func TestMediaDownloadResumesWithRange(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(3 << 20)
	ref := roundTrip(t, c, f, plain, bytes.NewReader(plain))
	f.do(func(f *fakeTus) {
		f.served, f.ranges = 0, nil
		f.getPlan = []int64{100 << 10, 0, 1 << 20, 1}
		f.down = 0
	})
	var out bytes.Buffer
	var p progressLog
	if err := c.DownloadMedia(timeout(t, 30*time.Second), ref, &out, client.WithMediaProgress(p.fn)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatal("plaintext differs")
	}
	p.check(t, ref.CipherSize)
	f.do(func(f *fakeTus) {
		if f.served != ref.CipherSize {
			t.Fatalf("served %d bytes for a %d-byte blob: resumed downloads re-fetched bytes", f.served, ref.CipherSize)
		}
		if len(f.ranges) != 5 || f.ranges[0] != 0 || f.ranges[1] != 100<<10 {
			t.Fatalf("GETs from %v", f.ranges)
		}
	})
	// A server that ignores Range still ends with the right file.
	f.do(func(f *fakeTus) { f.ignoreRange, f.getPlan = true, []int64{5000} })
	out.Reset()
	if err := c.DownloadMedia(timeout(t, 30*time.Second), ref, &out); err != nil || !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("range ignored: %v", err)
	}
}

func TestMediaTamperedDownloadWritesNothing(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(4*(64<<10) + 77) // five chunks
	ref := roundTrip(t, c, f, plain, bytes.NewReader(plain))
	good := f.blob(ref.Digest)
	const sealed = 64<<10 + 16
	chunk := func(i int) []byte { return good[i*sealed : min(len(good), (i+1)*sealed)] }
	flipped := bytes.Clone(good)
	flipped[sealed+100] ^= 0x80
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"one flipped byte", flipped},
		{"truncated", good[:len(good)-1]},
		{"truncated at a chunk boundary", good[:4*sealed]},
		{"reordered chunks", bytes.Join([][]byte{chunk(0), chunk(2), chunk(1), chunk(3), chunk(4)}, nil)},
		{"longer", append(bytes.Clone(good), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The server serves it under the reference's digest.
			f.setBlob(ref.Digest, tc.blob)
			var out bytes.Buffer
			if err := c.DownloadMedia(timeout(t, 10*time.Second), ref, &out); !errors.Is(err, client.ErrMediaCorrupt) {
				t.Fatalf("got %v, want ErrMediaCorrupt", err)
			}
			if out.Len() != 0 {
				t.Fatalf("%d plaintext bytes written from a tampered blob", out.Len())
			}
			// A sender that made the reference for the tampered blob
			// (digest and sizes agree): the chunks' tags catch it.
			sum := sha256.Sum256(tc.blob)
			forged := ref
			forged.Digest = hex.EncodeToString(sum[:])
			forged.CipherSize = int64(len(tc.blob))
			forged.Size = forged.CipherSize - 16*((forged.CipherSize+sealed-1)/sealed)
			if client.MediaCipherSize(forged.Size) != forged.CipherSize {
				return // no plaintext has that size: the reference is refused
			}
			f.setBlob(forged.Digest, tc.blob)
			if err := c.DownloadMedia(timeout(t, 10*time.Second), forged, &out); !errors.Is(err, client.ErrMediaCorrupt) {
				t.Fatalf("forged reference: got %v, want ErrMediaCorrupt", err)
			}
			if out.Len() != 0 {
				t.Fatalf("%d plaintext bytes written from a forged blob", out.Len())
			}
		})
	}
	f.setBlob(ref.Digest, good)

	// Another blob under a wrong digest.
	other := canaryFile(1000)
	oref := roundTrip(t, c, f, other, bytes.NewReader(other))
	wrong := ref
	wrong.Digest = oref.Digest
	var out bytes.Buffer
	if err := c.DownloadMedia(timeout(t, 10*time.Second), wrong, &out); !errors.Is(err, client.ErrMediaCorrupt) || out.Len() != 0 {
		t.Fatalf("wrong digest: %v, %d bytes written", err, out.Len())
	}
	// Wrong key.
	wrong = ref
	wrong.Key = bytes.Clone(ref.Key)
	wrong.Key[3] ^= 1
	if err := c.DownloadMedia(timeout(t, 10*time.Second), wrong, &out); !errors.Is(err, client.ErrMediaCorrupt) || out.Len() != 0 {
		t.Fatalf("wrong key: %v, %d bytes written", err, out.Len())
	}
	// Unknown digest.
	unknown := ref
	unknown.Digest = strings.Repeat("ab", 32)
	if err := c.DownloadMedia(timeout(t, 10*time.Second), unknown, &out); !errors.Is(err, client.ErrMediaNotFound) {
		t.Fatalf("unknown blob: %v", err)
	}
	// A malformed reference.
	bad := ref
	bad.CipherSize++
	if err := c.DownloadMedia(timeout(t, 10*time.Second), bad, &out); !errors.Is(err, client.ErrMediaRef) {
		t.Fatalf("malformed reference: %v", err)
	}
}

func TestMediaMessageFormatIsStable(t *testing.T) {
	ref := client.MediaRef{
		Digest:      strings.Repeat("0f", 32),
		Key:         bytes.Repeat([]byte{1}, 32),
		Size:        5,
		CipherSize:  21,
		ContentType: "image/jpeg",
		FileName:    "a.jpg",
		Thumbnail:   []byte{0xff, 0xd8},
	}
	b, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"digest":"` + strings.Repeat("0f", 32) + `","key":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","size":5,"cipher_size":21,"content_type":"image/jpeg","file_name":"a.jpg","thumbnail":"/9g="}`
	if string(b) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", b, want)
	}
	ref.Thumbnail = nil
	if b, _ := json.Marshal(ref); strings.Contains(string(b), "thumbnail") {
		t.Fatalf("empty thumbnail in %s", b)
	}

	e := client.Entry{ContentType: client.MediaContentType, Plaintext: []byte(want)}
	got, ok := client.MediaOf(e)
	if !ok || got.Digest != ref.Digest || got.FileName != "a.jpg" || !bytes.Equal(got.Thumbnail, []byte{0xff, 0xd8}) {
		t.Fatalf("MediaOf = %+v, %v", got, ok)
	}
	for _, bad := range []client.Entry{
		{ContentType: "text", Plaintext: []byte(want)},
		{ContentType: client.MediaContentType, Plaintext: []byte("{")},
		{ContentType: client.MediaContentType, Plaintext: []byte(strings.Replace(want, `"size":5`, `"size":6`, 1))},
		{ContentType: client.MediaContentType, Plaintext: []byte(strings.Replace(want, `"digest":"0f`, `"digest":"0F`, 1))},
		{ContentType: client.MediaContentType, Plaintext: []byte(strings.Replace(want, `AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=`, `AQE=`, 1))},
		{ContentType: client.MediaContentType, Plaintext: []byte(want), DecryptErr: errors.New("no")},
	} {
		if _, ok := client.MediaOf(bad); ok {
			t.Fatalf("MediaOf accepted %+v", bad)
		}
	}
}

func TestMediaStalledTransfersAreResumed(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(1 << 20)
	f.do(func(f *fakeTus) { f.stallPatch, f.stallGet = 2, 2 })
	start := time.Now()
	// (Pieces smaller than the file: after the last byte of the last piece
	// the SDK waits minutes for the server to check and publish it.)
	ref := roundTrip(t, c, f, plain, bytes.NewReader(plain), client.WithMediaStallTimeout(200*time.Millisecond), client.WithMediaPieceSize(256<<10))
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("stalls took %v to notice", d)
	}
	received, lost, _, _, bad := f.stats()
	if received != ref.CipherSize+lost || bad != 0 {
		t.Fatalf("received %d of %d (%d bad offsets)", received, ref.CipherSize, bad)
	}
	f.do(func(f *fakeTus) {
		if f.stallPatch != 0 || f.stallGet != 0 {
			t.Fatal("stalls not exercised")
		}
	})
}

func TestMediaDownloadRetriesServerErrorsAndRefreshesTokens(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(200 << 10)
	ref := roundTrip(t, c, f, plain, bytes.NewReader(plain))
	f.do(func(f *fakeTus) {
		f.getStatus = []int{500, 503}
		f.getPlan = []int64{-1, -1, 1000}
		f.refuseTokens = 0
	})
	var out bytes.Buffer
	if err := c.DownloadMedia(timeout(t, 10*time.Second), ref, &out); err != nil || !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("after server errors: %v", err)
	}
	f.do(func(f *fakeTus) { f.refuseTokens = 1 })
	out.Reset()
	if err := c.DownloadMedia(timeout(t, 10*time.Second), ref, &out); err != nil || !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("after a refused token: %v", err)
	}
	// A token refused every time is an error, not a loop.
	f.do(func(f *fakeTus) { f.refuseTokens = 1 << 30 })
	out.Reset()
	if err := c.DownloadMedia(timeout(t, 10*time.Second), ref, &out); err == nil || out.Len() != 0 {
		t.Fatalf("refused tokens: %v", err)
	}
}

// TestMediaMessageEndToEnd runs media against a real node: Alice uploads
// to the node's /v1/media/, sends the reference end-to-end encrypted to
// Bob and to a group, Bob downloads and decrypts; the node's data
// directory never holds the plaintext.
func TestMediaMessageEndToEnd(t *testing.T) {
	dataDir := t.TempDir()
	n := startNode(t, node.Config{DataDir: dataDir})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	alice := e2eeDial(t, register(t, n, "alice"), dir)
	bob := e2eeDial(t, register(t, n, "bob"), dir)

	plain := canaryFile(3<<20 + 12345)
	thumb := []byte("\xff\xd8 tiny jpeg")
	var p progressLog
	ref, err := alice.UploadMedia(ctx, bytes.NewReader(plain), int64(len(plain)),
		client.WithMediaContentType("video/mp4"), client.WithMediaFileName("clip.mp4"),
		client.WithMediaThumbnail(thumb), client.WithMediaPieceSize(1<<20), client.WithMediaProgress(p.fn))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	p.check(t, ref.CipherSize)
	if _, err := alice.SendMedia(ctx, bob.UserID(), ref); err != nil {
		t.Fatalf("send media: %v", err)
	}
	e := nextPlain(t, bob, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE)
	got, ok := client.MediaOf(e)
	if !ok || got.FileName != "clip.mp4" || got.ContentType != "video/mp4" || !bytes.Equal(got.Thumbnail, thumb) || got.Digest != ref.Digest {
		t.Fatalf("bob got %q (%s): %+v %v", e.Plaintext, e.ContentType, got, ok)
	}
	var out bytes.Buffer
	if err := bob.DownloadMedia(ctx, got, &out); err != nil {
		t.Fatalf("download: %v", err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatal("bob's file differs")
	}

	// Forwarding the same file uploads nothing: the blob is there.
	info, err := alice.CreateGroup(ctx, "media", []string{bob.UserID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroupMedia(ctx, info.ID, ref); err != nil {
		t.Fatalf("send group media: %v", err)
	}
	for {
		e := nextPlain(t, bob, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE, courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT)
		if e.IsGroupEvent() {
			continue
		}
		if got, ok := client.MediaOf(e); !ok || got.Digest != ref.Digest {
			t.Fatalf("group media: %+v %v", got, ok)
		}
		break
	}

	// Nothing under the data directory holds the plaintext, the key or
	// the file name.
	err = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, secret := range [][]byte{[]byte("CANARY-PLAINTEXT"), ref.Key, []byte("clip.mp4")} {
			if bytes.Contains(b, secret) {
				t.Errorf("%s holds %q", path, secret)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Without end-to-end encryption, media is not sent.
	plainClient := dial(t, register(t, n, "carol"))
	if _, err := plainClient.SendMedia(ctx, bob.UserID(), ref); !errors.Is(err, client.ErrMediaNeedsE2EE) {
		t.Fatalf("media without E2EE: %v", err)
	}
}

// cutReader fails after n bytes, like a connection that drops.
type cutReader struct {
	r io.ReadCloser
	n int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errors.New("connection dropped")
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.r.Close() }

// TestMediaResumesAgainstTheRealServer drops uploads and downloads
// between the SDK and a real node (a proxy cuts request and response
// bodies) and checks that the transfer resumes from the node's offset.
func TestMediaResumesAgainstTheRealServer(t *testing.T) {
	n := startNode(t, node.Config{})
	target, err := url.Parse(n.URL())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	var mu sync.Mutex
	cutPatches := []int64{300 << 10, 1 << 20, 10}
	cutGets := []int64{500 << 10, 1}
	var offsets []int64
	var gets []string
	droppedAnswer := false
	// reported is the offset the node last reported (HEAD or PATCH
	// answers); a PATCH at another offset is a mismatch unless the node
	// moved on meanwhile and answered it 409.
	reported, mismatches := int64(0), 0
	proxy.ModifyResponse = func(resp *http.Response) error {
		mu.Lock()
		defer mu.Unlock()
		if v := resp.Header.Get("Upload-Offset"); v != "" {
			reported, _ = strconv.ParseInt(v, 10, 64)
		}
		if resp.Request.Method == http.MethodPatch && resp.StatusCode == http.StatusConflict {
			mismatches--
		}
		return nil
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		switch {
		case r.Method == http.MethodPatch:
			off, _ := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
			offsets = append(offsets, off)
			if off != reported {
				mismatches++
			}
			cut := int64(-1)
			if len(cutPatches) > 0 {
				cut, cutPatches = cutPatches[0], cutPatches[1:]
			}
			if cut >= 0 {
				r.Body = &cutReader{r: r.Body, n: cut}
			} else {
				if !droppedAnswer {
					// The last PATCH: the node gets it all, its answer
					// (naming the published blob) is lost.
					droppedAnswer = true
					mu.Unlock()
					proxy.ServeHTTP(httptest.NewRecorder(), r)
					panic(http.ErrAbortHandler)
				}
			}
		case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/"):
			gets = append(gets, r.Header.Get("Range"))
			if len(cutGets) > 0 {
				cut := cutGets[0]
				cutGets = cutGets[1:]
				mu.Unlock()
				rec := &cutWriter{ResponseWriter: w, n: cut}
				proxy.ServeHTTP(rec, r)
				if rec.cut {
					panic(http.ErrAbortHandler)
				}
				return
			}
		}
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	creds := register(t, n, "alice")
	creds.BaseURL = front.URL
	c, err := client.NewMediaClientForTest(creds, client.WithBackoff(time.Millisecond, 50*time.Millisecond), client.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := timeout(t, 60*time.Second)
	plain := canaryFile(3 << 20)
	ref, err := c.UploadMedia(ctx, bytes.NewReader(plain), int64(len(plain)), client.WithMediaPieceSize(0))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	mu.Lock()
	offs, bad, dropped := offsets, mismatches, droppedAnswer
	mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d PATCHes not at the offset the node reported (PATCHes at %v)", bad, offs)
	}
	// Each PATCH starts where the node got to (it may keep nothing of a
	// cut PATCH whose bytes were still in flight, but never loses what it
	// reported), and the lost last answer costs no PATCH.
	if !dropped || len(offs) != 4 || offs[0] != 0 || offs[1] > offs[2] || offs[2] > offs[3] || offs[3] == 0 {
		t.Fatalf("PATCH offsets %v", offs)
	}
	var out bytes.Buffer
	if err := c.DownloadMedia(ctx, ref, &out); err != nil {
		t.Fatalf("download: %v", err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatal("downloaded file differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gets) < 3 || gets[0] != "" || gets[1] == "" || gets[1] == "bytes=0-" {
		t.Fatalf("downloads did not resume with Range: %q", gets)
	}
}

// cutWriter passes n body bytes on, then drops the rest.
type cutWriter struct {
	http.ResponseWriter
	n   int64
	cut bool
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.n {
		p = p[:c.n]
		c.cut = true
	}
	n, err := c.ResponseWriter.Write(p)
	c.n -= int64(n)
	if c.cut {
		return n, errors.New("cut")
	}
	return n, err
}

// TestMediaUploadSurvivesANodeRestart stops the node in the middle of an
// upload and starts it again on the same address and data directory: the
// upload continues from the offset the node kept.
func TestMediaUploadSurvivesANodeRestart(t *testing.T) {
	dataDir := t.TempDir()
	startAt := func(listen string) *node.Node {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := node.Start(ctx, node.Config{Listen: listen, DataDir: dataDir, Logger: nodetest.Logger()})
		if err != nil {
			t.Fatalf("start node: %v", err)
		}
		return n
	}
	var mu sync.Mutex
	cur := startAt("127.0.0.1:0")
	addr := cur.Addr()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = cur.Close(ctx)
	})
	creds := register(t, cur, "alice")

	// A proxy in front of the node cuts the first PATCH after 4 MiB and
	// restarts the node before letting anything else through.
	target, _ := url.Parse(cur.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	var offsets []int64
	restarted := make(chan struct{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			off, _ := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
			mu.Lock()
			offsets = append(offsets, off)
			first := len(offsets) == 1
			mu.Unlock()
			if first {
				r.Body = &cutReader{r: r.Body, n: 4 << 20}
				proxy.ServeHTTP(w, r)
				mu.Lock()
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				if err := cur.Close(ctx); err != nil {
					t.Errorf("stop node: %v", err)
				}
				cancel()
				cur = startAt(addr)
				mu.Unlock()
				close(restarted)
				return
			}
		}
		select {
		case <-restarted:
		default:
			mu.Lock()
			cutDone := len(offsets) > 0
			mu.Unlock()
			if cutDone {
				// Between the cut and the restart: the node is down.
				http.Error(w, "restarting", http.StatusBadGateway)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	creds.BaseURL = front.URL
	c, err := client.NewMediaClientForTest(creds, client.WithBackoff(5*time.Millisecond, 100*time.Millisecond), client.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := timeout(t, 60*time.Second)
	plain := canaryFile(6 << 20)
	ref, err := c.UploadMedia(ctx, bytes.NewReader(plain), int64(len(plain)), client.WithMediaPieceSize(0))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	mu.Lock()
	offs := offsets
	mu.Unlock()
	// The node kept what it had read and stored before the cut (up to
	// 4 MiB, less what was in flight when it stopped): the second PATCH
	// starts there, not at 0, and the node takes it (a wrong offset would
	// be answered 409 and need a third).
	if len(offs) != 2 || offs[0] != 0 || offs[1] <= 0 || offs[1] > 4<<20 {
		t.Fatalf("PATCH offsets %v: the upload did not resume from the node's offset", offs)
	}
	var out bytes.Buffer
	if err := c.DownloadMedia(ctx, ref, &out); err != nil {
		t.Fatalf("download: %v", err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatal("downloaded file differs")
	}
}

func TestMediaUploadWhoseLastAnswerIsLost(t *testing.T) {
	plain := canaryFile(1 << 20)
	cipherSize := client.MediaCipherSize(int64(len(plain)))
	t.Run("a HEAD finishes it", func(t *testing.T) {
		// A spooled upload declared its digest at creation.
		f := newFakeTus(t)
		c := mediaClient(t, f)
		f.do(func(f *fakeTus) { f.patchPlan = []patchStep{{abort: true, read: cipherSize}} })
		roundTrip(t, c, f, plain, onlyReader{bytes.NewReader(plain)})
		received, _, creates, patches, _ := f.stats()
		if received != cipherSize || creates != 1 || len(patches) != 1 {
			t.Fatalf("%d bytes, %d creations, PATCHes %v", received, creates, patches)
		}
	})
	t.Run("an empty PATCH with the digest finishes it", func(t *testing.T) {
		// A file's upload declares its digest at the end: the server
		// that lost the completing PATCH's answer (and its header) is
		// told again, without a byte sent again.
		f := newFakeTus(t)
		c := mediaClient(t, f)
		f.do(func(f *fakeTus) { f.patchPlan = []patchStep{{abort: true, read: cipherSize}} })
		roundTrip(t, c, f, plain, bytes.NewReader(plain))
		received, _, creates, patches, _ := f.stats()
		if received != cipherSize || creates != 1 || len(patches) != 2 || patches[1] != cipherSize {
			t.Fatalf("%d bytes, %d creations, PATCHes %v", received, creates, patches)
		}
	})
	t.Run("published later", func(t *testing.T) {
		f := newFakeTus(t)
		c := mediaClient(t, f)
		f.do(func(f *fakeTus) { f.lateFinish, f.patchPlan = true, []patchStep{{abort: true, read: cipherSize}} })
		roundTrip(t, c, f, plain, bytes.NewReader(plain))
		received, _, creates, _, _ := f.stats()
		if received != cipherSize || creates != 1 {
			t.Fatalf("%d bytes in %d creations: uploaded again", received, creates)
		}
	})
	t.Run("refused when finished", func(t *testing.T) {
		f := newFakeTus(t)
		c := mediaClient(t, f)
		f.do(func(f *fakeTus) { f.corruptStore, f.patchPlan = true, []patchStep{{abort: true, read: cipherSize}} })
		_, err := c.UploadMedia(timeout(t, 10*time.Second), bytes.NewReader(plain), int64(len(plain)))
		if !errors.Is(err, client.ErrMediaDigestRefused) {
			t.Fatalf("got %v, want ErrMediaDigestRefused", err)
		}
	})
}

func TestMediaUploadBackoffStartsOverWhenCutPatchesMoveBytes(t *testing.T) {
	f := newFakeTus(t)
	c, err := client.NewMediaClientForTest(client.Credentials{BaseURL: f.URL(), UserID: "u1", DeviceID: 1, DeviceSecret: "s"},
		client.WithBackoff(20*time.Millisecond, 2*time.Second), client.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	plain := canaryFile(2 << 20)
	var plan []patchStep
	for range 8 {
		plan = append(plan, patchStep{abort: true, read: 100 << 10})
	}
	f.do(func(f *fakeTus) { f.patchPlan = plan })
	roundTrip(t, c, f, plain, bytes.NewReader(plain), client.WithMediaPieceSize(0))
	// Growing pauses (20 ms, 40 ms, ... 1.28 s, 2 s; at least half that
	// with jitter) would put ≥ 640 ms between the last PATCHes; starting
	// over keeps every pause near 20 ms. The gap between PATCHes, not the
	// wall time of the whole upload, so a loaded machine's slower transfers
	// do not count.
	var at []time.Time
	f.do(func(f *fakeTus) { at = append([]time.Time(nil), f.patchAt...) })
	var longest time.Duration
	for i := 1; i < len(at); i++ {
		longest = max(longest, at[i].Sub(at[i-1]))
	}
	if longest > 500*time.Millisecond {
		t.Fatalf("eight cuts that each moved bytes: the longest pause between PATCHes was %v: the backoff kept growing", longest)
	}
	received, lost, _, patches, _ := f.stats()
	if len(patches) != 9 || received != client.MediaCipherSize(int64(len(plain)))+lost {
		t.Fatalf("PATCHes %v, %d bytes", patches, received)
	}
}
