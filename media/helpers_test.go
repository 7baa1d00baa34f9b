package media_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
)

// clock is an injectable clock for expiry and quotas.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testAuth accepts "Bearer user:<id>" and answers anything else as the
// gateway does (401 with a JSON error).
func testAuth(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer user:")
	if !ok || id == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"code":"UNAUTHENTICATED","message":"missing or invalid access token"}`+"\n")
		return "", false
	}
	return id, true
}

func openRecords(t testing.TB) persistence.MediaStore {
	t.Helper()
	s, err := embedded.Open(t.TempDir(), embedded.Options{Logger: nodetest.Logger()})
	if err != nil {
		t.Fatalf("open embedded store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	var st persistence.Store = s
	ms, ok := st.(persistence.MediaStore)
	if !ok {
		t.Fatal("the embedded store does not implement persistence.MediaStore")
	}
	return ms
}

type harness struct {
	t       testing.TB
	svc     *media.Service
	srv     *httptest.Server
	clock   *clock
	records persistence.MediaStore
	dir     string
	// tokens maps a user to the Authorization header value; base is the
	// server's URL.
	tokens func(user string) string
	base   string
	client *http.Client
}

// newHarness serves media on an httptest server with the embedded store,
// an injected clock (2026-12-02 12:00 UTC) and no background sweeper.
func newHarness(t testing.TB, cfg media.Config) *harness {
	t.Helper()
	return newHarnessWith(t, cfg, nil)
}

// newHarnessWith is newHarness with the given records (nil: embedded).
func newHarnessWith(t testing.TB, cfg media.Config, records persistence.MediaStore) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)), dir: t.TempDir(), records: records}
	if cfg.Dir == "" && cfg.Blobs == nil {
		cfg.Dir = h.dir
	}
	if cfg.Now == nil {
		cfg.Now = h.clock.Now
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = nodetest.Logger()
	}
	if h.records == nil {
		h.records = openRecords(t)
	}
	svc, err := media.New(cfg, h.records, testAuth)
	if err != nil {
		t.Fatalf("media.New: %v", err)
	}
	h.svc = svc
	mux := http.NewServeMux()
	mux.Handle(media.Prefix, svc)
	h.srv = httptest.NewServer(mux)
	h.base = h.srv.URL
	h.client = h.srv.Client()
	h.tokens = func(user string) string { return "Bearer user:" + user }
	t.Cleanup(func() {
		h.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := svc.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return h
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func sha256Meta(digest string) string {
	return "sha256 " + base64.StdEncoding.EncodeToString([]byte(digest))
}

// do sends a request as user ("" sends no Authorization) and reads the
// whole answer.
func (h *harness) do(user, method, path string, header map[string]string, body io.Reader) (*http.Response, []byte) {
	h.t.Helper()
	url := path
	if strings.HasPrefix(path, "/") {
		url = h.base + path
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", h.tokens(user))
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if b, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(b.Len())
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, got
}

// create starts an upload of size bytes declaring digest.
func (h *harness) create(user string, size int64, digest string) (*http.Response, []byte) {
	h.t.Helper()
	return h.do(user, http.MethodPost, media.Prefix, map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   strconv.FormatInt(size, 10),
		"Upload-Metadata": sha256Meta(digest),
	}, nil)
}

// mustCreate creates an upload and returns its path.
func (h *harness) mustCreate(user string, size int64, digest string) string {
	h.t.Helper()
	resp, body := h.create(user, size, digest)
	if resp.StatusCode != http.StatusCreated {
		h.t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, media.Prefix) {
		h.t.Fatalf("create: Location %q is not %s<upload-id>", loc, media.Prefix)
	}
	return loc
}

func (h *harness) patch(user, path string, offset int64, chunk []byte) (*http.Response, []byte) {
	h.t.Helper()
	return h.do(user, http.MethodPatch, path, map[string]string{
		"Tus-Resumable": "1.0.0",
		"Upload-Offset": strconv.FormatInt(offset, 10),
		"Content-Type":  "application/offset+octet-stream",
	}, bytes.NewReader(chunk))
}

func (h *harness) head(user, path string) *http.Response {
	h.t.Helper()
	resp, _ := h.do(user, http.MethodHead, path, map[string]string{"Tus-Resumable": "1.0.0"}, nil)
	return resp
}

// upload sends data in one creation and chunked PATCHes, and returns the
// published digest.
func (h *harness) upload(user string, data []byte, chunk int) string {
	h.t.Helper()
	path := h.mustCreate(user, int64(len(data)), digestOf(data))
	var last *http.Response
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		resp, body := h.patch(user, path, int64(off), data[off:end])
		if resp.StatusCode != http.StatusNoContent {
			h.t.Fatalf("PATCH at %d: %d %s", off, resp.StatusCode, body)
		}
		last = resp
	}
	if last == nil {
		h.t.Fatal("upload: no data")
	}
	return last.Header.Get(media.HeaderBlobDigest)
}

func wantStatus(t testing.TB, what string, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s: status %d, want %d; body %q", what, resp.StatusCode, want, body)
	}
}

// wantJSONError checks the API's error body.
func wantJSONError(t testing.TB, what string, body []byte, code string) {
	t.Helper()
	var e struct{ Code, Message string }
	if err := json.Unmarshal(body, &e); err != nil || e.Code != code || e.Message == "" {
		t.Fatalf("%s: body %q is not a JSON error with code %s", what, body, code)
	}
}

// stallPatch starts a PATCH of an upload of total bytes at offset 0 that
// sends sent and then nothing (its body stays open until the test ends),
// waits until those bytes are on disk, and returns a channel that gets
// the PATCH's status (0 when it failed without one).
func (h *harness) stallPatch(base, path string, total int64, sent []byte, hc *http.Client) <-chan int {
	h.t.Helper()
	pr, pw := io.Pipe()
	h.t.Cleanup(func() { _ = pw.Close() })
	go func() { _, _ = pw.Write(sent) }() // then nothing
	req, err := http.NewRequest(http.MethodPatch, base+path, pr)
	if err != nil {
		h.t.Fatal(err)
	}
	req.ContentLength = total
	req.Header.Set("Authorization", h.tokens("alice"))
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	answered := make(chan int, 1)
	go func() {
		resp, err := hc.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	bin := filepath.Join(h.dir, "uploads", strings.TrimPrefix(path, media.Prefix))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if st, err := os.Stat(bin); err == nil && st.Size() == int64(len(sent)) {
			return answered
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the first %d bytes never reached the disk", len(sent))
		}
	}
}
