package e2e_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/media/s3test"
)

// soloNode is one `courier serve` with the embedded store (no Consul, no
// CQL node) on a fixed data directory and port, so that it can be killed
// with SIGKILL and started again where it was.
type soloNode struct {
	t       *testing.T
	dataDir string
	listen  string
	url     string
	logPath string // every start appends to it
	flags   []string

	mu     sync.Mutex
	proc   *nodeProc
	starts int
}

// startSoloNode starts a node on a fresh data directory and a free port
// of 127.0.0.1; it is stopped (SIGTERM, then SIGKILL) when t ends.
func startSoloNode(t *testing.T, flags ...string) *soloNode {
	t.Helper()
	listen := freePort(t, "127.0.0.1")
	n := &soloNode{
		t:       t,
		dataDir: t.TempDir(),
		listen:  listen,
		url:     "http://" + listen,
		logPath: filepath.Join(t.TempDir(), "node.log"),
		flags:   flags,
	}
	t.Cleanup(n.stop)
	if err := n.start(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	return n
}

// start launches the binary on n's data directory and port and waits
// until it answers /healthz. It reports instead of failing t, so that a
// goroutine other than the test's may call it.
func (n *soloNode) start(timeout time.Duration) error {
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.starts++
	fmt.Fprintf(logf, "===== start %d at %s\n", n.starts, time.Now().Format(time.RFC3339Nano))
	n.mu.Unlock()
	args := append([]string{"serve",
		"--listen", n.listen,
		"--data", n.dataDir,
		"--log-level", "info",
		// Every client of the test comes from one loopback address.
		"--max-conns-per-ip", "-1", "--register-limit-ip", "off", "--token-limit-ip", "off",
	}, n.flags...)
	p := &nodeProc{ip: "127.0.0.1", url: n.url, logPath: n.logPath, exited: make(chan struct{})}
	p.cmd = exec.Command(courierBin, args...)
	// serve reads every flag it is not given from COURIER_<FLAG>: keep the
	// developer's environment out of the test's node.
	p.cmd.Env = []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COURIER_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start courier: %w", err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()

	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(n.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("courier exited while starting:\n%s", p.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("courier not healthy after %v (%v):\n%s", timeout, err, p.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *soloNode) current() *nodeProc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// kill is kill -9: the process ends mid-write, nothing is flushed.
func (n *soloNode) kill() {
	p := n.current()
	p.signal(syscall.SIGKILL)
	<-p.exited
}

// stop ends the node gracefully (SIGTERM, SIGKILL after 20 s) and shows
// its log when the test failed. Calling it twice is harmless.
func (n *soloNode) stop() {
	p := n.current()
	if p == nil {
		return
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.signal(syscall.SIGKILL)
		<-p.exited
	}
	if n.t.Failed() {
		n.t.Logf("--- courier log tail (%s):\n%s", n.logPath, p.logTail(80))
	}
}

// genFile is a large file that exists nowhere: an io.ReadSeeker whose
// bytes are the AES-256-CTR keystream of a seed (so any offset is
// produced directly, at the speed of AES-NI), with a canary string
// written over it at a few offsets. It is never held in memory or on disk.
//
// Every byte is hashed the first time a read reaches it in order from
// offset 0 (UploadMedia's one pass, whatever its resumes re-read), so the
// plaintext's SHA-256 costs no extra read.
type genFile struct {
	size     int64
	block    cipher.Block
	canary   []byte
	canaries []int64 // offsets of the canary

	off    int64
	h      hash.Hash
	hashed int64 // bytes [0, hashed) went through h
}

func newGenFile(seed string, size int64, canary []byte, canaryAt ...int64) *genFile {
	key := sha256.Sum256([]byte("courier e2e media " + seed))
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err)
	}
	for _, at := range canaryAt {
		if at < 0 || at+int64(len(canary)) > size {
			panic(fmt.Sprintf("canary at %d does not fit a file of %d bytes", at, size))
		}
	}
	return &genFile{size: size, block: b, canary: canary, canaries: canaryAt, h: sha256.New()}
}

// fill writes the file's bytes at [off, off+len(p)) into p.
func (g *genFile) fill(p []byte, off int64) {
	var iv [aes.BlockSize]byte
	binary.BigEndian.PutUint64(iv[8:], uint64(off/aes.BlockSize))
	s := cipher.NewCTR(g.block, iv[:])
	if k := off % aes.BlockSize; k > 0 {
		var skip [aes.BlockSize]byte
		s.XORKeyStream(skip[:k], skip[:k])
	}
	clear(p)
	s.XORKeyStream(p, p)
	end := off + int64(len(p))
	for _, at := range g.canaries {
		cEnd := at + int64(len(g.canary))
		if cEnd <= off || at >= end {
			continue
		}
		lo, hi := max(at, off), min(cEnd, end)
		copy(p[lo-off:hi-off], g.canary[lo-at:hi-at])
	}
}

func (g *genFile) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.size-g.off)]
	g.fill(p, g.off)
	if end := g.off + int64(len(p)); g.off <= g.hashed && g.hashed < end {
		g.h.Write(p[g.hashed-g.off:])
		g.hashed = end
	}
	g.off += int64(len(p))
	return len(p), nil
}

func (g *genFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += g.off
	case io.SeekEnd:
		offset += g.size
	default:
		return 0, errors.New("genFile: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("genFile: negative offset")
	}
	g.off = offset
	return offset, nil
}

// sum is the plaintext's SHA-256, once a pass read all of it in order.
func (g *genFile) sum(t *testing.T) []byte {
	t.Helper()
	if g.hashed != g.size {
		t.Fatalf("the file was hashed up to byte %d of %d: no sequential first pass", g.hashed, g.size)
	}
	return g.h.Sum(nil)
}

// hashWriter is a download destination that keeps only a digest.
type hashWriter struct {
	h hash.Hash
	n int64
}

func newHashWriter() *hashWriter { return &hashWriter{h: sha256.New()} }

func (w *hashWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}

// needleScanner finds any of a few secrets in streams of any size (4 MiB
// at a time, overlapping by the longest secret).
type needleScanner struct {
	needles [][]byte
	buf     []byte
	scanned int64
	hits    []string
}

func newNeedleScanner(needles ...[]byte) *needleScanner {
	longest := 0
	for _, nd := range needles {
		longest = max(longest, len(nd))
	}
	return &needleScanner{needles: needles, buf: make([]byte, 4<<20+longest)}
}

// scan reads r to its end and records name once per secret found in it.
func (s *needleScanner) scan(name string, r io.Reader) error {
	keep := 0
	found := make([]bool, len(s.needles))
	for {
		n, err := io.ReadFull(r, s.buf[keep:])
		s.scanned += int64(n)
		window := s.buf[:keep+n]
		for i, nd := range s.needles {
			if !found[i] && bytes.Contains(window, nd) {
				found[i] = true
				s.hits = append(s.hits, fmt.Sprintf("%s holds secret #%d (%q…)", name, i, nd[:min(len(nd), 12)]))
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
		keep = 0
		for _, nd := range s.needles {
			keep = max(keep, len(nd)-1)
		}
		keep = min(keep, len(window))
		copy(s.buf, window[len(window)-keep:])
	}
}

// scanDir scans every regular file under dir.
func (s *needleScanner) scanDir(dir string) (files int, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a file the store removed meanwhile
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		files++
		rel, _ := filepath.Rel(dir, path)
		return s.scan(rel, f)
	})
	return files, err
}

// scanBucket scans every object of cfg's bucket.
func (s *needleScanner) scanBucket(ctx context.Context, t *testing.T, cfg media.S3Config) (objects int, err error) {
	c := s3test.Client(cfg)
	for _, key := range s3test.Keys(t, cfg, "") {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String(key)})
		if err != nil {
			return objects, fmt.Errorf("get %s: %w", key, err)
		}
		err = s.scan("s3://"+cfg.Bucket+"/"+key, out.Body)
		out.Body.Close()
		if err != nil {
			return objects, err
		}
		objects++
	}
	return objects, nil
}

// wireLog is an http.RoundTripper that records the media requests a
// client makes: method, Upload-Offset and how many body bytes went out,
// so that a test sees what crossed the wire rather than what the SDK
// reports.
type wireLog struct {
	base http.RoundTripper

	mu   sync.Mutex
	reqs []*wireReq
}

type wireReq struct {
	method string
	path   string
	offset int64 // Upload-Offset, -1 when absent
	sent   atomic.Int64
	status int // 0: no answer (the connection failed)
	err    error
	at     time.Time
}

func newWireLog() *wireLog {
	return &wireLog{base: http.DefaultTransport.(*http.Transport).Clone()}
}

func (w *wireLog) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/v1/media/") {
		return w.base.RoundTrip(req)
	}
	rec := &wireReq{method: req.Method, path: req.URL.Path, offset: -1, at: time.Now()}
	if v := req.Header.Get("Upload-Offset"); v != "" {
		fmt.Sscan(v, &rec.offset)
	}
	if req.Body != nil && req.Body != http.NoBody {
		r2 := req.Clone(req.Context())
		r2.Body = &countingBody{rc: req.Body, n: &rec.sent}
		req = r2
	}
	resp, err := w.base.RoundTrip(req)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		rec.err = err
	} else {
		rec.status = resp.StatusCode
	}
	w.reqs = append(w.reqs, rec)
	return resp, err
}

func (w *wireLog) requests() []*wireReq {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*wireReq(nil), w.reqs...)
}

type countingBody struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// emptyDir fails t when dir holds anything (the SDK's temporary files
// must be gone once a transfer returns).
func emptyDir(t *testing.T, dir, what string) {
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
		t.Errorf("%s left files in its temporary directory: %v", what, names)
	}
}

// mib formats a byte count for logs.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// rate formats n bytes over d.
func rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%s in %v (%.0f MiB/s)", mib(n), d.Round(time.Millisecond), float64(n)/(1<<20)/d.Seconds())
}

// The helpers check themselves: a scan that can never hit, or a file that
// reads differently after a seek, would make the media tests vacuous.
func TestMediaHelpersFindTheCanaryAndReadAlike(t *testing.T) {
	canary := secretCanary()
	const size = 9<<20 + 77
	at := []int64{0, 4<<20 - 5, size - int64(len(canary))}
	g := newGenFile("self-test", size, canary, at...)
	whole, err := io.ReadAll(g)
	if err != nil || len(whole) != size {
		t.Fatalf("read %d bytes: %v", len(whole), err)
	}
	if !bytes.Equal(g.sum(t), sha256Of(whole)) {
		t.Fatal("the first pass's digest is not the file's")
	}
	for _, off := range at {
		if !bytes.Equal(whole[off:off+int64(len(canary))], canary) {
			t.Fatalf("no canary at %d", off)
		}
	}
	if bytes.Count(whole, canary) != len(at) {
		t.Fatalf("%d canaries, want %d", bytes.Count(whole, canary), len(at))
	}
	// Any offset, any read size, reads the same bytes.
	for _, off := range []int64{1, 15, 16, 17, 65535, 4<<20 - 3, size - 1} {
		if _, err := g.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1000)
		n, _ := io.ReadFull(g, buf)
		if !bytes.Equal(buf[:n], whole[off:off+int64(n)]) {
			t.Fatalf("reading from %d differs", off)
		}
	}
	sc := newNeedleScanner([]byte("not in there"), canary)
	if err := sc.scan("file", bytes.NewReader(whole)); err != nil {
		t.Fatal(err)
	}
	if len(sc.hits) != 1 || sc.scanned != size {
		t.Fatalf("scan found %v in %d bytes", sc.hits, sc.scanned)
	}
	// A canary cut in two by the scanner's read windows is found.
	sc = newNeedleScanner(canary)
	first := len(sc.buf) // the first read fills the buffer; later ones keep len(canary)-1 bytes
	second := first + len(sc.buf) - (len(canary) - 1)
	for _, cut := range []int{first, second} {
		big := bytes.Repeat([]byte{'x'}, 13<<20)
		copy(big[cut-5:], canary)
		sc = newNeedleScanner(canary)
		if err := sc.scan("big", bytes.NewReader(big)); err != nil || len(sc.hits) != 1 {
			t.Fatalf("scan of a canary across the window boundary at %d: %v %v", cut, sc.hits, err)
		}
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
