package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/node"
)

// payloadDigest is the SHA-256 of client i's file, read in one sequential
// pass: what the bench must find on the way up and on the way down.
func payloadDigest(t *testing.T, source string, seed uint64, i int, size int64) string {
	t.Helper()
	p, err := newMediaPayload(source, seed, i, size)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if n, err := io.Copy(h, p); err != nil || n != size {
		t.Fatalf("read %d of %d: %v", n, size, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestMediaScenarioResumesAndChecksEveryFile: 3 clients upload and
// download 3 MiB each while every connection is cut 20 ms after it opened;
// every file must come back with exactly its digest, and transfers must
// have resumed.
func TestMediaScenarioResumesAndChecksEveryFile(t *testing.T) {
	n := nodetest.Start(t, node.Config{})
	const clients, size = 3, 3 << 20
	var progress bytes.Buffer
	r, err := Media(context.Background(), MediaConfig{
		Target:  Target{URL: n.URL(), DurationLimit: 2 * time.Minute, Progress: &progress},
		Clients: clients, Size: size, PieceSize: 64 << 10, KillEvery: 20 * time.Millisecond, Seed: 7,
		// The node runs in this process: its memory and CPU are ours.
		ServerPIDs: []int{os.Getpid()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("media run failed: %s\n%v", r.Problem, r.Errors)
	}
	if r.FilesChecked != clients || r.Upload.Files != clients || r.Download.Files != clients || len(r.PerClient) != clients {
		t.Fatalf("files: checked %d, up %d, down %d, per client %d", r.FilesChecked, r.Upload.Files, r.Download.Files, len(r.PerClient))
	}
	for i, c := range r.PerClient {
		want := payloadDigest(t, PayloadRandom, 7, i, size)
		if c.SHA256 != want || c.DownloadSHA256 != want {
			t.Errorf("client %d: up %s, down %s, want %s", i, c.SHA256, c.DownloadSHA256, want)
		}
	}
	if r.Resumes == 0 || r.Resumes != r.Upload.Resumes+r.Download.Resumes || r.Upload.Kills == 0 {
		t.Fatalf("no transfer resumed: resumes %d (up %d, down %d), kills up %d down %d", r.Resumes, r.Upload.Resumes, r.Download.Resumes, r.Upload.Kills, r.Download.Kills)
	}
	t.Logf("resumes: upload %d, download %d; kills: upload %d, download %d", r.Upload.Resumes, r.Download.Resumes, r.Upload.Kills, r.Download.Kills)
	for _, p := range []MediaPhase{r.Upload, r.Download} {
		if p.MBPerSec <= 0 || p.ClientP50MBPerSec <= 0 || p.ClientMinMBPerSec <= 0 || p.ClientMinMBPerSec > p.ClientP50MBPerSec || p.WireMiB < 3*3 {
			t.Errorf("phase figures: %+v", p)
		}
	}
	if r.Download.TTFBP50Ms <= 0 && r.Download.Resumes == 0 {
		t.Errorf("no time to first byte: %+v", r.Download)
	}
	if s := r.ServerRSS; s == nil || s.Samples < 2 || s.BeforeBytes == 0 || s.PeakBytes < s.BeforeBytes || s.PeakBytes < s.AfterBytes || s.Error != "" {
		t.Errorf("server rss: %+v", s)
	}
	if r.ServerCPUError != "" {
		t.Errorf("server cpu: %s", r.ServerCPUError)
	}
	if !strings.Contains(progress.String(), "uploading") || !strings.Contains(progress.String(), "downloading") {
		t.Errorf("progress:\n%s", progress.String())
	}
}

// tamperStore serves every blob with one byte flipped: a server (or a
// disk) that corrupts what it sends.
type tamperStore struct{ *media.LocalStore }

func (s tamperStore) Open(ctx context.Context, digest string) (io.ReadSeekCloser, error) {
	f, err := s.LocalStore.Open(ctx, digest)
	if err != nil {
		return nil, err
	}
	return &flipAt{ReadSeekCloser: f, at: 1000}, nil
}

// flipAt flips the byte at offset at of what it reads.
type flipAt struct {
	io.ReadSeekCloser
	pos, at int64
}

func (f *flipAt) Seek(off int64, whence int) (int64, error) {
	p, err := f.ReadSeekCloser.Seek(off, whence)
	f.pos = p
	return p, err
}

func (f *flipAt) Read(b []byte) (int, error) {
	n, err := f.ReadSeekCloser.Read(b)
	if f.at >= f.pos && f.at < f.pos+int64(n) {
		b[f.at-f.pos] ^= 1
	}
	f.pos += int64(n)
	return n, err
}

// flipWriter flips one bit of the first write: a download that came back
// different without the SDK noticing.
type flipWriter struct {
	w    io.Writer
	done bool
}

func (f *flipWriter) Write(b []byte) (int, error) {
	if !f.done && len(b) > 0 {
		f.done = true
		c := bytes.Clone(b)
		c[0] ^= 1
		return f.w.Write(c)
	}
	return f.w.Write(b)
}

// TestMediaCorruptionFailsTheRun: a server that corrupts every blob it
// sends makes every download fail (the SDK refuses it), and a file that
// comes back different is a digest mismatch; either fails the run.
func TestMediaCorruptionFailsTheRun(t *testing.T) {
	t.Run("corrupt blobs", func(t *testing.T) {
		store, err := media.NewLocalStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		n := nodetest.Start(t, node.Config{Media: media.Config{Blobs: tamperStore{store}}})
		r, err := Media(context.Background(), MediaConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Clients: 2, Size: 256 << 10})
		if err != nil {
			t.Fatal(err)
		}
		if r.OK() || r.Corrupt != 2 || r.FilesChecked != 0 || r.Upload.Files != 2 || r.Download.Failed != 2 {
			t.Fatalf("corrupt downloads went unnoticed: ok %v, corrupt %d, checked %d, %+v", r.OK(), r.Corrupt, r.FilesChecked, r.Download)
		}
		if !strings.Contains(r.Problem, "2 downloads refused as corrupt") || len(r.Errors) != 2 || !strings.Contains(r.Errors[0], "corrupt") {
			t.Fatalf("problem %q, errors %q", r.Problem, r.Errors)
		}
	})
	t.Run("a file that comes back different", func(t *testing.T) {
		n := nodetest.Start(t, node.Config{})
		cfg := MediaConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Clients: 2, Size: 256 << 10}
		cfg.tamper = func(i int, w io.Writer) io.Writer {
			if i == 1 {
				return &flipWriter{w: w}
			}
			return w
		}
		r, err := Media(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK() || r.DigestMismatches != 1 || r.FilesChecked != 1 || !strings.Contains(r.Problem, "1 files came back different") {
			t.Fatalf("a changed file went unnoticed: ok %v, mismatches %d, checked %d, problem %q", r.OK(), r.DigestMismatches, r.FilesChecked, r.Problem)
		}
		if c := r.PerClient[1]; c.SHA256 == c.DownloadSHA256 || c.Error == "" {
			t.Fatalf("client 1: %+v", c)
		}
	})
}

// TestMediaReportJSONRoundTrip: the JSON report reads back as it was, the
// dd reference included, and the text report says OK.
func TestMediaReportJSONRoundTrip(t *testing.T) {
	n := nodetest.Start(t, node.Config{})
	r, err := Media(context.Background(), MediaConfig{Target: Target{URL: n.URL(), DurationLimit: time.Minute}, Clients: 1, Size: 1 << 20,
		PayloadSource: PayloadZero, DD: true, DDDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.DD == nil || r.DD.Error != "" || r.DD.WriteMBPerSec <= 0 || r.DD.ReadMBPerSec <= 0 || r.DD.UploadVsWrite <= 0 || r.DD.DownloadVsRead <= 0 {
		t.Fatalf("report: %+v, dd %+v", r, r.DD)
	}
	if want := payloadDigest(t, PayloadZero, 0, 0, 1<<20); r.PerClient[0].SHA256 != want {
		t.Fatalf("zero payload digest %s, want %s", r.PerClient[0].SHA256, want)
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadMediaJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip changed the report:\n%+v\n%+v", r, back)
	}
	buf.Reset()
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"upload", "download", "ttfb", "vs dd", "result: OK"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, buf.String())
		}
	}
}

// TestMediaPayload: a client's file is the same whatever the reads and
// seeks (the SDK reads it twice and seeks back to resume), its digest is
// taken once over every byte, and clients and seeds get different files.
func TestMediaPayload(t *testing.T) {
	const size = 300_007
	want := payloadDigest(t, PayloadRandom, 3, 1, size)
	p, err := newMediaPayload(PayloadRandom, 3, 1, size)
	if err != nil {
		t.Fatal(err)
	}
	seq := make([]byte, size)
	if _, err := io.ReadFull(p, seq); err != nil {
		t.Fatal(err)
	}
	// Read again from odd offsets in odd sizes.
	for _, off := range []int64{0, 1, 15, 17, 65_536, 299_999} {
		if _, err := p.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1000)
		k, _ := io.ReadFull(p, b)
		if !bytes.Equal(b[:k], seq[off:off+int64(k)]) {
			t.Fatalf("bytes at %d differ on a second read", off)
		}
	}
	if got, err := p.sum(); err != nil || got != want {
		t.Fatalf("sum %s (%v), want %s", got, err, want)
	}
	// A file read out of order is summed in order, once every byte was read.
	q, _ := newMediaPayload(PayloadRandom, 3, 1, size)
	q.Seek(1000, io.SeekStart)
	io.CopyN(io.Discard, q, 5000)
	if _, err := q.sum(); err == nil {
		t.Fatal("a partly read file has a sum")
	}
	q.Seek(0, io.SeekStart)
	io.Copy(io.Discard, q)
	if got, _ := q.sum(); got != want {
		t.Fatalf("sum after seeks %s, want %s", got, want)
	}
	if payloadDigest(t, PayloadRandom, 3, 2, size) == want || payloadDigest(t, PayloadRandom, 4, 1, size) == want {
		t.Fatal("another client or seed generated the same file")
	}
	z, _ := newMediaPayload(PayloadZero, 3, 1, 100)
	b, _ := io.ReadAll(z)
	if !bytes.Equal(b, make([]byte, 100)) {
		t.Fatal("zero payload is not zeros")
	}
	if _, err := newMediaPayload("nope", 0, 0, 1); err == nil {
		t.Fatal("unknown source accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"256MiB": 256 << 20, "2GiB": 2 << 30, "3 MiB": 3 << 20, "64KiB": 64 << 10, "64k": 64 << 10, "1.5GiB": 3 << 29,
		"1000": 1000, "10B": 10, "1MB": 1_000_000, "2G": 2 << 30, "1TiB": 1 << 40,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, err := ParseSize(FormatSize(got)); err != nil || back != got {
			t.Errorf("FormatSize(%d) = %q does not parse back: %d, %v", got, FormatSize(got), back, err)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "12 parsecs", "1.2.3MiB", "99999999999TiB"} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, n)
		}
	}
}
