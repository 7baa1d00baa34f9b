// Package blobstoretest is the conformance suite every media.BlobStore
// passes: the local directory store and the S3 store run the same tests,
// so the service above them cannot tell them apart.
package blobstoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/courier-im/courier/media"
)

// NewStore returns a new, empty store for one test.
type NewStore func(t *testing.T) media.BlobStore

// Run runs the suite, each case on a store of its own.
func Run(t *testing.T, newStore NewStore) {
	cases := []struct {
		name string
		run  func(t *testing.T, s *subject)
	}{
		{"PublishThenStatAndReadBack", testPublishRead},
		{"RangedReads", testRangedReads},
		{"Delete", testDelete},
		{"PublishTwiceIsIdempotent", testPublishTwice},
		{"MissingIsNotFound", testMissing},
		{"UploadsAreListedUntilPublishedOrTerminated", testListUploads},
		{"UploadSurvivesReopening", testReopen},
		{"ConcurrentPublishes", testConcurrentPublishes},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newStore(t)
			comp := handler.NewStoreComposer()
			st.UseIn(comp)
			if comp.Core == nil || !comp.UsesTerminater {
				t.Fatal("UseIn must install a core and a terminater")
			}
			c.run(t, &subject{t: t, store: st, comp: comp})
		})
	}
}

// subject is a store under test with tusd's view of its uploads.
type subject struct {
	t     *testing.T
	store media.BlobStore
	comp  *handler.StoreComposer
}

var uploadIDShape = regexp.MustCompile(`^[0-9a-f]{32}$`)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Bytes returns n reproducible pseudo-random bytes.
func Bytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Digest is the lowercase hex SHA-256 of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// begin creates an upload of size bytes as tusd does and returns its id.
func (s *subject) begin(size int64) string {
	s.t.Helper()
	up, err := s.comp.Core.NewUpload(ctx(s.t), handler.FileInfo{Size: size, MetaData: handler.MetaData{"sha256": "x"}})
	if err != nil {
		s.t.Fatalf("NewUpload: %v", err)
	}
	info, err := up.GetInfo(ctx(s.t))
	if err != nil {
		s.t.Fatalf("GetInfo of a new upload: %v", err)
	}
	if !uploadIDShape.MatchString(info.ID) {
		s.t.Fatalf("upload id %q is not 32 lowercase hex digits (what media accepts in a URL)", info.ID)
	}
	return info.ID
}

// write sends data[from:to] to upload id, in chunks of chunk bytes, each
// through a fresh GetUpload as tusd does per PATCH.
func (s *subject) write(id string, data []byte, from, to, chunk int) {
	s.t.Helper()
	for off := from; off < to; off += chunk {
		end := min(off+chunk, to)
		up, err := s.comp.Core.GetUpload(ctx(s.t), id)
		if err != nil {
			s.t.Fatalf("GetUpload %s at %d: %v", id, off, err)
		}
		info, err := up.GetInfo(ctx(s.t))
		if err != nil {
			s.t.Fatalf("GetInfo at %d: %v", off, err)
		}
		if info.Offset != int64(off) {
			s.t.Fatalf("upload offset %d, want %d", info.Offset, off)
		}
		n, err := up.WriteChunk(ctx(s.t), int64(off), bytes.NewReader(data[off:end]))
		if err != nil || n != int64(end-off) {
			s.t.Fatalf("WriteChunk at %d: %d, %v", off, n, err)
		}
	}
}

// finish completes upload id as tusd does after its last byte.
func (s *subject) finish(id string) {
	s.t.Helper()
	up, err := s.comp.Core.GetUpload(ctx(s.t), id)
	if err != nil {
		s.t.Fatalf("GetUpload %s: %v", id, err)
	}
	if err := up.FinishUpload(ctx(s.t)); err != nil {
		s.t.Fatalf("FinishUpload: %v", err)
	}
}

// upload creates, writes and finishes an upload of data and returns its id.
func (s *subject) upload(data []byte, chunk int) string {
	s.t.Helper()
	id := s.begin(int64(len(data)))
	s.write(id, data, 0, len(data), max(chunk, 1))
	s.finish(id)
	return id
}

// readBack hashes the finished upload id through its reader, as media
// does before it publishes.
func (s *subject) readBack(id string) []byte {
	s.t.Helper()
	up, err := s.comp.Core.GetUpload(ctx(s.t), id)
	if err != nil {
		s.t.Fatalf("GetUpload %s: %v", id, err)
	}
	rc, err := up.GetReader(ctx(s.t))
	if err != nil {
		s.t.Fatalf("GetReader: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		s.t.Fatalf("read the upload: %v", err)
	}
	return b
}

// publish uploads data and publishes it under its digest.
func (s *subject) publish(data []byte, chunk int) string {
	s.t.Helper()
	id := s.upload(data, chunk)
	if got := s.readBack(id); !bytes.Equal(got, data) {
		s.t.Fatalf("the upload reads back %d bytes, not the %d written", len(got), len(data))
	}
	d := Digest(data)
	if err := s.store.Publish(ctx(s.t), id, d); err != nil {
		s.t.Fatalf("Publish: %v", err)
	}
	s.wantUploadGone(id)
	return d
}

func (s *subject) wantUploadGone(id string) {
	s.t.Helper()
	if _, err := s.getInfo(id); !errors.Is(err, handler.ErrNotFound) {
		s.t.Fatalf("upload %s after publish or terminate: %v, want handler.ErrNotFound", id, err)
	}
	ids, err := s.store.ListUploads(ctx(s.t))
	if err != nil {
		s.t.Fatalf("ListUploads: %v", err)
	}
	if slices.Contains(ids, id) {
		s.t.Fatalf("ListUploads still lists %s", id)
	}
}

func (s *subject) getInfo(id string) (handler.FileInfo, error) {
	up, err := s.comp.Core.GetUpload(ctx(s.t), id)
	if err != nil {
		return handler.FileInfo{}, err
	}
	return up.GetInfo(ctx(s.t))
}

func (s *subject) readAll(digest string) []byte {
	s.t.Helper()
	r, err := s.store.Open(ctx(s.t), digest)
	if err != nil {
		s.t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		s.t.Fatalf("read blob: %v", err)
	}
	return b
}

func testPublishRead(t *testing.T, s *subject) {
	for _, c := range []struct {
		name        string
		size, chunk int
	}{
		{"empty", 0, 1},
		{"one byte", 1, 1},
		{"small chunks", 1<<20 + 7, 256 << 10},
		{"over S3's 5 MiB least part", 6<<20 + 3, 3 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &subject{t: t, store: s.store, comp: s.comp}
			data := Bytes(uint64(c.size), c.size)
			d := s.publish(data, c.chunk)
			size, err := s.store.Stat(ctx(t), d)
			if err != nil || size != int64(c.size) {
				t.Fatalf("Stat: %d, %v; want %d", size, err, c.size)
			}
			if got := s.readAll(d); !bytes.Equal(got, data) {
				t.Fatalf("blob reads back %d bytes that differ from the %d published", len(got), len(data))
			}
		})
	}
}

func testRangedReads(t *testing.T, s *subject) {
	const n = 300_001
	data := Bytes(7, n)
	d := s.publish(data, 64<<10)
	r, err := s.store.Open(ctx(t), d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	// What http.ServeContent does: find the size, rewind, then seek to
	// each range and read its length.
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != n {
		t.Fatalf("Seek(0, End) = %d, %v; want %d", end, err, n)
	}
	if pos, err := r.Seek(0, io.SeekStart); err != nil || pos != 0 {
		t.Fatalf("Seek(0, Start) = %d, %v", pos, err)
	}
	for _, c := range []struct {
		name           string
		offset         int64
		whence         int
		wantPos, count int64
	}{
		{"head", 0, io.SeekStart, 0, 100},
		{"middle", 150_000, io.SeekStart, 150_000, 4096},
		{"forward from current", 10, io.SeekCurrent, 154_106, 1000},
		{"back from current", -5000, io.SeekCurrent, 150_106, 10},
		{"last byte", -1, io.SeekEnd, n - 1, 1},
		{"tail", -100, io.SeekEnd, n - 100, 100},
		{"back to the start", 0, io.SeekStart, 0, n},
	} {
		pos, err := r.Seek(c.offset, c.whence)
		if err != nil || pos != c.wantPos {
			t.Fatalf("%s: Seek(%d, %d) = %d, %v; want %d", c.name, c.offset, c.whence, pos, err, c.wantPos)
		}
		got := make([]byte, c.count)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("%s: read %d bytes at %d: %v", c.name, c.count, pos, err)
		}
		if !bytes.Equal(got, data[pos:pos+c.count]) {
			t.Fatalf("%s: bytes at %d differ", c.name, pos)
		}
	}
	if k, err := r.Read(make([]byte, 10)); k != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read at the end: %d, %v; want 0, io.EOF", k, err)
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Fatal("Seek before the start succeeded")
	}
}

func testDelete(t *testing.T, s *subject) {
	data := Bytes(3, 1000)
	d := s.publish(data, len(data))
	if err := s.store.Delete(ctx(t), d); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.store.Stat(ctx(t), d); !errors.Is(err, media.ErrBlobNotFound) {
		t.Fatalf("Stat after Delete: %v, want ErrBlobNotFound", err)
	}
	if _, err := s.store.Open(ctx(t), d); !errors.Is(err, media.ErrBlobNotFound) {
		t.Fatalf("Open after Delete: %v, want ErrBlobNotFound", err)
	}
	if err := s.store.Delete(ctx(t), d); err != nil {
		t.Fatalf("Delete of a deleted blob: %v, want nil", err)
	}
	// Published again after its expiry: the same digest is a blob again.
	s.publish(data, len(data))
	if got := s.readAll(d); !bytes.Equal(got, data) {
		t.Fatal("the blob published again reads back different bytes")
	}
}

func testPublishTwice(t *testing.T, s *subject) {
	data := Bytes(4, 70_000)
	d := s.publish(data, 30_000)
	id := s.upload(data, len(data))
	if err := s.store.Publish(ctx(t), id, d); !errors.Is(err, media.ErrBlobExists) {
		t.Fatalf("second Publish of %s: %v, want ErrBlobExists", d, err)
	}
	s.wantUploadGone(id)
	if got := s.readAll(d); !bytes.Equal(got, data) {
		t.Fatal("the blob changed after a second publish")
	}
	if size, err := s.store.Stat(ctx(t), d); err != nil || size != int64(len(data)) {
		t.Fatalf("Stat: %d, %v", size, err)
	}
}

func testMissing(t *testing.T, s *subject) {
	absent := Digest([]byte("never published"))
	for _, d := range []string{absent, "not-a-digest", "../" + absent[3:], ""} {
		if _, err := s.store.Stat(ctx(t), d); !errors.Is(err, media.ErrBlobNotFound) {
			t.Errorf("Stat(%q): %v, want ErrBlobNotFound", d, err)
		}
		if r, err := s.store.Open(ctx(t), d); !errors.Is(err, media.ErrBlobNotFound) {
			if r != nil {
				r.Close()
			}
			t.Errorf("Open(%q): %v, want ErrBlobNotFound", d, err)
		}
		if err := s.store.Delete(ctx(t), d); err != nil {
			t.Errorf("Delete(%q): %v, want nil", d, err)
		}
	}
	for _, id := range []string{"0123456789abcdef0123456789abcdef", "nope", ""} {
		if _, err := s.getInfo(id); !errors.Is(err, handler.ErrNotFound) {
			t.Errorf("upload %q: %v, want handler.ErrNotFound", id, err)
		}
	}
	if err := s.store.Publish(ctx(t), "0123456789abcdef0123456789abcdef", absent); err == nil {
		t.Error("Publish of an upload that does not exist succeeded")
	}
	if _, err := s.store.Stat(ctx(t), absent); !errors.Is(err, media.ErrBlobNotFound) {
		t.Errorf("a failed Publish left a blob: %v", err)
	}
}

func testListUploads(t *testing.T, s *subject) {
	ids, err := s.store.ListUploads(ctx(t))
	if err != nil || len(ids) != 0 {
		t.Fatalf("ListUploads of a new store: %v, %v", ids, err)
	}
	data := Bytes(5, 50_000)
	a, b := s.begin(int64(len(data))), s.begin(int64(len(data)))
	s.write(a, data, 0, 20_000, 20_000)
	ids, err = s.store.ListUploads(ctx(t))
	slices.Sort(ids)
	want := []string{a, b}
	slices.Sort(want)
	if err != nil || !slices.Equal(ids, want) {
		t.Fatalf("ListUploads: %v, %v; want %v", ids, err, want)
	}
	// Terminate one mid-way (what DELETE and the sweeper do).
	up, err := s.comp.Core.GetUpload(ctx(t), a)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.comp.Terminater.AsTerminatableUpload(up).Terminate(ctx(t)); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	s.wantUploadGone(a)
	// Terminate one that is complete but not published (a wrong digest).
	s.write(b, data, 0, len(data), len(data))
	s.finish(b)
	up, err = s.comp.Core.GetUpload(ctx(t), b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.comp.Terminater.AsTerminatableUpload(up).Terminate(ctx(t)); err != nil {
		t.Fatalf("Terminate a finished upload: %v", err)
	}
	s.wantUploadGone(b)
}

func testReopen(t *testing.T, s *subject) {
	data := Bytes(6, 120_000)
	id := s.begin(int64(len(data)))
	s.write(id, data, 0, 50_000, 50_000)
	info, err := s.getInfo(id)
	if err != nil || info.Offset != 50_000 || info.Size != int64(len(data)) || info.ID != id {
		t.Fatalf("HEAD of a half-sent upload: %+v, %v", info, err)
	}
	if info.MetaData["sha256"] != "x" {
		t.Fatalf("metadata lost: %v", info.MetaData)
	}
	s.write(id, data, 50_000, len(data), 35_000)
	s.finish(id)
	if info, err := s.getInfo(id); err != nil || info.Offset != info.Size {
		t.Fatalf("a finished upload: %+v, %v", info, err)
	}
	if got := s.readBack(id); !bytes.Equal(got, data) {
		t.Fatal("a resumed upload reads back different bytes")
	}
}

func testConcurrentPublishes(t *testing.T, s *subject) {
	const k = 4
	datas := make([][]byte, k)
	ids := make([]string, k)
	for i := range k {
		datas[i] = Bytes(uint64(100+i), 10_000*(i+1))
		ids[i] = s.upload(datas[i], len(datas[i]))
	}
	var wg sync.WaitGroup
	errs := make([]error, k)
	for i := range k {
		wg.Go(func() { errs[i] = s.store.Publish(ctx(t), ids[i], Digest(datas[i])) })
	}
	wg.Wait()
	for i := range k {
		if errs[i] != nil {
			t.Fatalf("Publish %d: %v", i, errs[i])
		}
		if got := s.readAll(Digest(datas[i])); !bytes.Equal(got, datas[i]) {
			t.Fatalf("blob %d differs", i)
		}
	}
}
