package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sealMedia encrypts plain with a fresh key: the blob and its reference.
func sealMedia(t testing.TB, plain []byte) ([]byte, MediaRef) {
	t.Helper()
	key := make([]byte, mediaKeySize)
	rand.Read(key)
	aead, err := newMediaAEAD(key)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(newMediaEncrypter(aead, bytes.NewReader(plain), int64(len(plain)), 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(blob)
	return blob, MediaRef{Digest: hex.EncodeToString(sum[:]), Key: key, Size: int64(len(plain)), CipherSize: int64(len(blob))}
}

func pipePlain(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>16)
	}
	return b
}

func TestChunkVerifierAnySplitAndReset(t *testing.T) {
	for _, n := range []int{0, 1, MediaChunkSize - 1, MediaChunkSize, 3*MediaChunkSize + 5, 40 * MediaChunkSize} {
		blob, ref := sealMedia(t, pipePlain(n))
		aead, _ := newMediaAEAD(ref.Key)
		v := newChunkVerifier(aead, ref.CipherSize)
		// Some garbage first, then a reset (a 200 after a partial
		// download): the verdict covers only what came after.
		v.write(bytes.Repeat([]byte{1}, min(len(blob), 70_000)))
		v.reset()
		for rest := blob; len(rest) > 0; {
			k := min(len(rest), 1+mrand.IntN(200_000))
			v.write(rest[:k])
			rest = rest[k:]
		}
		if err := v.check(ref.Digest); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if n < 2*MediaChunkSize {
			continue
		}
		// A forged reference: right digest, a chunk that fails its tag.
		bad := bytes.Clone(blob)
		bad[mediaSealedChunk+5] ^= 1
		sum := sha256.Sum256(bad)
		v.reset()
		v.write(bad)
		err := v.check(hex.EncodeToString(sum[:]))
		if !errors.Is(err, ErrMediaCorrupt) || !strings.Contains(err.Error(), "chunk 1 ") {
			t.Fatalf("forged chunk 1: %v", err)
		}
		v.reset()
		v.write(blob[:len(blob)-1])
		if err := v.check(ref.Digest); !errors.Is(err, ErrMediaCorrupt) {
			t.Fatalf("short: %v", err)
		}
	}
}

func TestAheadReaderLimitsErrorsAndStops(t *testing.T) {
	src := pipePlain(5*mediaBlockSize + 123)
	for _, limit := range []int64{-1, 0, 1, mediaBlockSize, 3*mediaBlockSize + 7} {
		a := newAheadReader(bytes.NewReader(src), limit)
		got, err := io.ReadAll(a)
		a.Close()
		want := src
		if limit >= 0 {
			want = src[:limit]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("limit %d: %d bytes, %v", limit, len(got), err)
		}
	}
	boom := errors.New("boom")
	a := newAheadReader(io.MultiReader(bytes.NewReader(src[:1000]), &errReader{boom}), -1)
	var buf bytes.Buffer
	if n, err := io.Copy(&buf, a); !errors.Is(err, boom) || n != 1000 {
		t.Fatalf("copy: %d, %v", n, err)
	}
	a.Close()
	// Closed while the producer waits for room: Close returns and the
	// source is no longer read.
	r := &countReader{r: bytes.NewReader(make([]byte, 64*mediaBlockSize))}
	a = newAheadReader(r, -1)
	io.ReadFull(a, make([]byte, 10))
	a.Close()
	n := r.n.Load()
	time.Sleep(20 * time.Millisecond)
	if r.n.Load() != n || n > int64(mediaAheadBlocks+2)*mediaBlockSize {
		t.Fatalf("source read %d then %d bytes", n, r.n.Load())
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

type countReader struct {
	r io.Reader
	n atomicInt64
}

func (c *countReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

type atomicInt64 struct {
	mu sync.Mutex
	v  int64
}

func (a *atomicInt64) Add(d int64) { a.mu.Lock(); a.v += d; a.mu.Unlock() }
func (a *atomicInt64) Load() int64 { a.mu.Lock(); defer a.mu.Unlock(); return a.v }

func TestDecryptSpoolFailures(t *testing.T) {
	plain := pipePlain(3*mediaBlockSize + 999)
	blob, ref := sealMedia(t, plain)
	aead, _ := newMediaAEAD(ref.Key)
	f, err := os.CreateTemp(t.TempDir(), "spool")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(blob)
	var out bytes.Buffer
	if n, err := decryptSpool(context.Background(), aead, f, ref.CipherSize, &out); err != nil || n != ref.Size || !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("decrypt: %d, %v", n, err)
	}
	// The destination fails.
	if _, err := decryptSpool(context.Background(), aead, f, ref.CipherSize, failWriter{}); err == nil || !strings.Contains(err.Error(), "media: write") {
		t.Fatalf("failing writer: %v", err)
	}
	// The file changed after it was verified (the tags catch it).
	f.WriteAt([]byte{blob[2*mediaBlockSize] ^ 1}, 2*mediaBlockSize)
	if _, err := decryptSpool(context.Background(), aead, f, ref.CipherSize, io.Discard); !errors.Is(err, ErrMediaCorrupt) {
		t.Fatalf("changed file: %v", err)
	}
	f.Truncate(ref.CipherSize - 10)
	if _, err := decryptSpool(context.Background(), aead, f, ref.CipherSize, io.Discard); !errors.Is(err, ErrMediaCorrupt) {
		t.Fatalf("short file: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := decryptSpool(ctx, aead, f, ref.CipherSize, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// blobStep is what the blob server does with one GET.
type blobStep struct {
	ignoreRange bool  // answer 200 with the whole blob
	abortAfter  int64 // drop the connection after this many body bytes (0: send all)
	flip        int64 // flip the blob's byte at this offset, if served (0: none)
}

// blobServer serves one blob and tokens, following a plan per GET.
type blobServer struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	blob []byte
	plan []blobStep
	// What it saw: every GET's Range start (0 without one), the status
	// it answered, and the body bytes it sent.
	ranges   []int64
	statuses []int
	served   int64
}

func newBlobServer(t *testing.T, blob []byte) *blobServer {
	b := &blobServer{t: t, blob: blob}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/token" {
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-1", "expires_in_sec": 3600})
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1/media/blobs/") || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	b.mu.Lock()
	var step blobStep
	if len(b.plan) > 0 {
		step, b.plan = b.plan[0], b.plan[1:]
	}
	start := int64(0)
	if v := r.Header.Get("Range"); v != "" && !step.ignoreRange {
		start, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(v, "bytes="), "-"), 10, 64)
	}
	b.ranges = append(b.ranges, start)
	status := http.StatusOK
	if start > 0 {
		status = http.StatusPartialContent
	}
	b.statuses = append(b.statuses, status)
	blob := b.blob
	if step.flip > 0 {
		blob = bytes.Clone(blob)
		blob[step.flip] ^= 0x40
	}
	b.mu.Unlock()
	body := blob[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if status == http.StatusPartialContent {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(blob)-1, len(blob)))
	}
	w.WriteHeader(status)
	if step.abortAfter > 0 && step.abortAfter < int64(len(body)) {
		body = body[:step.abortAfter]
	}
	n, _ := w.Write(body)
	b.mu.Lock()
	b.served += int64(n)
	b.mu.Unlock()
	if step.abortAfter > 0 {
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
}

func (b *blobServer) client(t *testing.T) *Client {
	c, err := NewMediaClientForTest(Credentials{BaseURL: b.srv.URL, UserID: "u1", DeviceID: 1, DeviceSecret: "s"},
		WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *blobServer) seen() ([]int64, []int, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int64(nil), b.ranges...), append([]int(nil), b.statuses...), b.served
}

func downloadCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The digest and tags computed while the ciphertext is spooled carry
// over a Range resume that starts anywhere (mid-chunk, mid-block): the
// resume continues at exactly the offset hashed so far.
func TestMediaDownloadHashesAcrossRangeResumes(t *testing.T) {
	plain := pipePlain(5*mediaBlockSize + 4321)
	blob, ref := sealMedia(t, plain)
	b := newBlobServer(t, blob)
	cuts := []int64{100<<10 + 7, mediaBlockSize + 3, 1, 2*mediaBlockSize - 1}
	for _, k := range cuts {
		b.plan = append(b.plan, blobStep{abortAfter: k})
	}
	var out bytes.Buffer
	if err := b.client(t).DownloadMedia(downloadCtx(t), ref, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatal("plaintext differs")
	}
	ranges, statuses, served := b.seen()
	want := []int64{0}
	for _, k := range cuts {
		want = append(want, want[len(want)-1]+k)
	}
	if fmt.Sprint(ranges) != fmt.Sprint(want) || served != ref.CipherSize {
		t.Fatalf("GETs from %v (want %v), %d bytes served for %d", ranges, want, served, ref.CipherSize)
	}
	for _, s := range statuses[1:] {
		if s != http.StatusPartialContent {
			t.Fatalf("statuses %v", statuses)
		}
	}
}

// A server that answers a resume with 200 (the whole blob) makes the
// download start over, the hash and the tags included: the result is
// right whether that answer is then cut shorter or longer than what was
// there before.
func TestMediaDownloadRestartsTheHashOn200(t *testing.T) {
	plain := pipePlain(3*mediaBlockSize + 77)
	blob, ref := sealMedia(t, plain)
	b := newBlobServer(t, blob)
	b.plan = []blobStep{
		{abortAfter: 300<<10 + 5},
		{ignoreRange: true, abortAfter: 50 << 10}, // 200, shorter than what we had
		{abortAfter: 1 << 20},                     // 206 from 50 KiB
		{ignoreRange: true},                       // 200, the whole blob
	}
	var out bytes.Buffer
	if err := b.client(t).DownloadMedia(downloadCtx(t), ref, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), plain) {
		t.Fatal("plaintext differs")
	}
	ranges, statuses, _ := b.seen()
	if fmt.Sprint(statuses) != "[200 200 206 200]" || fmt.Sprint(ranges) != fmt.Sprint([]int64{0, 0, 50 << 10, 0}) {
		t.Fatalf("statuses %v from %v", statuses, ranges)
	}
}

// Tampered bytes in a resumed part still fail the digest, and bytes that
// match a forged reference's digest still fail their chunk's tag: either
// way not a byte is written.
func TestMediaDownloadTamperedAfterResumeWritesNothing(t *testing.T) {
	plain := pipePlain(4*mediaBlockSize + 10)
	blob, ref := sealMedia(t, plain)
	flipAt := int64(3*mediaBlockSize + 17)
	b := newBlobServer(t, blob)
	c := b.client(t)
	b.plan = []blobStep{{abortAfter: 2*mediaBlockSize + 1}, {flip: flipAt}}
	var out bytes.Buffer
	if err := c.DownloadMedia(downloadCtx(t), ref, &out); !errors.Is(err, ErrMediaCorrupt) || out.Len() != 0 {
		t.Fatalf("tampered: %v, %d bytes written", err, out.Len())
	}
	forged := bytes.Clone(blob)
	forged[flipAt] ^= 0x40
	sum := sha256.Sum256(forged)
	fref := ref
	fref.Digest = hex.EncodeToString(sum[:])
	b.mu.Lock()
	b.blob, b.plan = forged, []blobStep{{abortAfter: 2*mediaBlockSize + 1}, {abortAfter: 5}}
	b.mu.Unlock()
	err := c.DownloadMedia(downloadCtx(t), fref, &out)
	if !errors.Is(err, ErrMediaCorrupt) || !strings.Contains(err.Error(), "authentication") || out.Len() != 0 {
		t.Fatalf("forged: %v, %d bytes written", err, out.Len())
	}
}
