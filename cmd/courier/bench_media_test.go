package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/courier-im/courier/bench"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/node"
)

// TestBenchMediaCommand: `courier bench media --json` prints a report
// that reads back, with the sizes the flags gave; the text report says OK;
// a plot is refused.
func TestBenchMediaCommand(t *testing.T) {
	n := nodetest.Start(t, node.Config{})
	out, err := runBench(t, "media", "--url", n.URL(), "--clients", "2", "--size", "1.5MiB", "--piece-size", "512KiB", "--seed", "9", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r, err := bench.ReadMediaJSON(strings.NewReader(out[strings.Index(out, "{"):]))
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Clients != 2 || r.SizeBytes != 3<<19 || r.PieceSizeBytes != 512<<10 || r.Seed != 9 || r.FilesChecked != 2 {
		t.Fatalf("report: %+v", r)
	}
	out, err = runBench(t, "media", "--url", n.URL(), "--clients", "1", "--size", "100KiB", "--payload-source", "zero")
	if err != nil || !strings.Contains(out, "result: OK") || !strings.Contains(out, "1 client x 100KiB (zero payload)") {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := runBench(t, "media", "--url", n.URL(), "--size", "12 parsecs"); err == nil || !strings.Contains(err.Error(), "size") {
		t.Fatalf("a bad size: %v", err)
	}
	if _, err := runBench(t, "media", "--url", n.URL(), "--plot", "x.png"); err == nil {
		t.Fatal("a plot was not refused")
	}
}

// corruptBlobs serves every blob with its first byte flipped.
type corruptBlobs struct{ *media.LocalStore }

func (s corruptBlobs) Open(ctx context.Context, digest string) (io.ReadSeekCloser, error) {
	f, err := s.LocalStore.Open(ctx, digest)
	if err != nil {
		return nil, err
	}
	return &flipFirst{ReadSeekCloser: f}, nil
}

type flipFirst struct {
	io.ReadSeekCloser
	pos int64
}

func (f *flipFirst) Seek(off int64, whence int) (int64, error) {
	p, err := f.ReadSeekCloser.Seek(off, whence)
	f.pos = p
	return p, err
}

func (f *flipFirst) Read(b []byte) (int, error) {
	n, err := f.ReadSeekCloser.Read(b)
	if f.pos == 0 && n > 0 {
		b[0] ^= 1
	}
	f.pos += int64(n)
	return n, err
}

// TestBenchMediaCommandFailsOnACorruptDownload: the command fails (exit
// status 1 from main) when the server sends a corrupted file.
func TestBenchMediaCommandFailsOnACorruptDownload(t *testing.T) {
	store, err := media.NewLocalStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := nodetest.Start(t, node.Config{Media: media.Config{Blobs: corruptBlobs{store}}})
	out, err := runBench(t, "media", "--url", n.URL(), "--clients", "1", "--size", "64KiB")
	if err == nil || !strings.Contains(err.Error(), "bench media failed: 1 downloads refused as corrupt") || !strings.Contains(out, "FAILED:") {
		t.Fatalf("err = %v\n%s", err, out)
	}
}
