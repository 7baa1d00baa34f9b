package client_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
)

// Uploads of files declare their digest on the PATCH that completes them
// (a deferred digest): the file is encrypted and hashed once, as it is
// sent.

// watchedFile counts the bytes read from it and calls onSeek before each
// seek (n counts them from 1).
type watchedFile struct {
	r      *bytes.Reader
	data   []byte
	read   atomic.Int64
	seeks  int
	onSeek func(n int, off int64, data []byte)
}

func newWatchedFile(data []byte) *watchedFile {
	return &watchedFile{r: bytes.NewReader(data), data: data}
}

func (w *watchedFile) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.read.Add(int64(n))
	return n, err
}

func (w *watchedFile) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekStart {
		w.seeks++
		if w.onSeek != nil {
			w.onSeek(w.seeks, off, w.data)
		}
	}
	return w.r.Seek(off, whence)
}

const sealedChunk = 64<<10 + 16

func TestMediaUploadReadsTheFileOnceWhenNothingFails(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(5<<20 + 1234)
	wf := newWatchedFile(bytes.Clone(plain))
	// Pieces of whole chunks: no chunk straddles two PATCHes.
	piece := int64(16 * sealedChunk)
	ref := roundTrip(t, c, f, plain, wf, client.WithMediaPieceSize(piece))
	// Every byte is read once; the last piece's a second time, to hash
	// it before the PATCH that declares the digest.
	lastOff := (ref.CipherSize - 1) / piece * piece
	lastPlain := int64(len(plain)) - lastOff/sealedChunk*(64<<10)
	if got, want := wf.read.Load(), int64(len(plain))+lastPlain; got != want {
		t.Fatalf("read %d bytes of a %d-byte file, want %d (once, and the last piece of %d twice)", got, len(plain), want, lastPlain)
	}
	received, _, creates, patches, _ := f.stats()
	if received != ref.CipherSize || creates != 1 || int64(len(patches)) != (ref.CipherSize+piece-1)/piece {
		t.Fatalf("%d bytes, %d creations, PATCHes %v", received, creates, patches)
	}
	f.do(func(f *fakeTus) {
		if bytes.Contains(f.wire.Bytes(), []byte("Upload-Metadata")) {
			t.Fatal("the creation declared a digest")
		}
	})
}

func TestMediaUploadInOnePieceKeepsTheLastPatchSmall(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(11 << 20)
	wf := newWatchedFile(bytes.Clone(plain))
	ref := roundTrip(t, c, f, plain, wf, client.WithMediaPieceSize(0))
	_, _, _, patches, _ := f.stats()
	if len(patches) != 2 || patches[1] != ref.CipherSize-client.DefaultMediaPieceSize {
		t.Fatalf("PATCHes %v of %d bytes: want all but the last %d, then those", patches, ref.CipherSize, client.DefaultMediaPieceSize)
	}
	if got := wf.read.Load(); got > int64(len(plain))+client.DefaultMediaPieceSize+2*(64<<10) {
		t.Fatalf("read %d bytes of a %d-byte file", got, len(plain))
	}
}

func TestMediaUploadResumingBehindTheHashedOffsetDeclaresTheRightDigest(t *testing.T) {
	plain := canaryFile(4<<20 + 99)
	for _, tc := range []struct {
		name string
		plan []patchStep
	}{
		// The server keeps 100 KiB of a PATCH that sent 900 KiB (and
		// was hashed further ahead).
		{"restart", []patchStep{{}, {restart: true, read: 900 << 10, keep: 1<<20 + 100<<10, downFor: 1}}},
		{"restart back to a piece start", []patchStep{{}, {}, {restart: true, read: 500 << 10, keep: 1 << 20, downFor: 1}}},
		{"restarts in the last piece", []patchStep{{}, {}, {}, {}, {restart: true, read: 20 << 10, keep: 4<<20 + 5}, {abort: true, read: 3}}},
		{"cut", []patchStep{{abort: true, read: 700 << 10}, {status: 500, read: 5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTus(t)
			c := mediaClient(t, f)
			f.do(func(f *fakeTus) { f.patchPlan = tc.plan })
			wf := newWatchedFile(bytes.Clone(plain))
			var seeks []int64
			wf.onSeek = func(_ int, off int64, _ []byte) { seeks = append(seeks, off) }
			// roundTrip checks the published blob hashes to the digest.
			ref := roundTrip(t, c, f, plain, wf, client.WithMediaPieceSize(1<<20))
			received, lost, creates, _, _ := f.stats()
			if received != ref.CipherSize+lost || creates != 1 {
				t.Fatalf("%d bytes received (%d lost), %d creations", received, lost, creates)
			}
			// Re-sent bytes are re-read, never the file from its start.
			for i, off := range seeks {
				if i > 0 && off == 0 {
					t.Fatalf("went back to byte 0: seeks %v", seeks)
				}
			}
			if got := wf.read.Load(); got >= 2*int64(len(plain)) {
				t.Fatalf("read %d bytes of a %d-byte file", got, len(plain))
			}
		})
	}
}

func TestMediaUploadOfAFileThatChangesDuringAResumeIsAbandoned(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	plain := canaryFile(3 << 20)
	wf := newWatchedFile(bytes.Clone(plain))
	// The second PATCH sends 900 KiB past 1 MiB; the server keeps only
	// 100 KiB of them. Before the resume re-reads from there, a byte
	// the dropped part held changes.
	f.do(func(f *fakeTus) {
		f.patchPlan = []patchStep{{}, {restart: true, read: 900 << 10, keep: 1<<20 + 100<<10, downFor: 1}}
	})
	resumed := false
	wf.onSeek = func(n int, off int64, data []byte) {
		if n == 3 {
			resumed = off <= 1<<20+100<<10
			data[1<<20+400<<10] ^= 1
		}
	}
	_, err := c.UploadMedia(timeout(t, 20*time.Second), wf, int64(len(plain)), client.WithMediaPieceSize(1<<20))
	if !errors.Is(err, client.ErrMediaSourceChanged) {
		t.Fatalf("got %v, want ErrMediaSourceChanged", err)
	}
	if !resumed {
		t.Fatal("the third seek was not the resume")
	}
	f.do(func(f *fakeTus) {
		if f.deletes != 1 || len(f.uploads) != 0 || len(f.blobs) != 0 {
			t.Fatalf("abandoned upload not deleted (%d deletes, %d uploads, %d blobs)", f.deletes, len(f.uploads), len(f.blobs))
		}
	})
}

func TestMediaUploadRefusedAtTheEndPublishesNothing(t *testing.T) {
	f := newFakeTus(t)
	c := mediaClient(t, f)
	f.do(func(f *fakeTus) { f.corruptStore = true })
	plain := canaryFile(2<<20 + 7)
	_, err := c.UploadMedia(timeout(t, 10*time.Second), bytes.NewReader(plain), int64(len(plain)), client.WithMediaPieceSize(1<<20))
	if !errors.Is(err, client.ErrMediaDigestRefused) {
		t.Fatalf("got %v, want ErrMediaDigestRefused", err)
	}
	f.do(func(f *fakeTus) {
		if len(f.blobs) != 0 {
			t.Fatal("a blob was published")
		}
		if !strings.Contains(f.wire.String(), "Courier-Blob-Digest: ") {
			t.Fatal("no PATCH declared a digest")
		}
	})
}
