package media_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/persistence"
)

// faultyBlobs is a LocalStore with a disk that fills up and a Publish that
// fails on demand.
type faultyBlobs struct {
	*media.LocalStore
	mu           sync.Mutex
	diskLeft     int64 // bytes writable before ENOSPC; negative: no limit
	publishFails int
}

func newFaultyBlobs(t *testing.T, dir string) *faultyBlobs {
	t.Helper()
	local, err := media.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &faultyBlobs{LocalStore: local, diskLeft: -1}
}

func (f *faultyBlobs) set(diskLeft int64, publishFails int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.diskLeft, f.publishFails = diskLeft, publishFails
}

func (f *faultyBlobs) UseIn(c *handler.StoreComposer) {
	f.LocalStore.UseIn(c)
	c.UseCore(faultyCore{DataStore: c.Core, f: f})
	c.UseTerminater(faultyTerminater{c.Terminater})
}

func (f *faultyBlobs) Publish(ctx context.Context, id, digest string) error {
	f.mu.Lock()
	fail := f.publishFails > 0
	if fail {
		f.publishFails--
	}
	f.mu.Unlock()
	if fail {
		return errors.New("injected publish failure")
	}
	return f.LocalStore.Publish(ctx, id, digest)
}

type faultyCore struct {
	handler.DataStore
	f *faultyBlobs
}

func (c faultyCore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	up, err := c.DataStore.NewUpload(ctx, info)
	return faultyUpload{up, c.f}, err
}

func (c faultyCore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	up, err := c.DataStore.GetUpload(ctx, id)
	return faultyUpload{up, c.f}, err
}

type faultyUpload struct {
	handler.Upload
	f *faultyBlobs
}

// WriteChunk writes what fits on the "disk", then fails as a full disk does.
func (u faultyUpload) WriteChunk(ctx context.Context, off int64, src io.Reader) (int64, error) {
	u.f.mu.Lock()
	left := u.f.diskLeft
	u.f.mu.Unlock()
	if left < 0 {
		return u.Upload.WriteChunk(ctx, off, src)
	}
	n, err := u.Upload.WriteChunk(ctx, off, io.LimitReader(src, left))
	u.f.mu.Lock()
	u.f.diskLeft -= n
	u.f.mu.Unlock()
	if err != nil {
		return n, err
	}
	if m, _ := src.Read(make([]byte, 1)); m > 0 {
		return n, &os.PathError{Op: "write", Path: "/somewhere/secret", Err: syscall.ENOSPC}
	}
	return n, nil
}

type faultyTerminater struct{ handler.TerminaterDataStore }

func (t faultyTerminater) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	if f, ok := up.(faultyUpload); ok {
		up = f.Upload
	}
	return t.TerminaterDataStore.AsTerminatableUpload(up)
}

func TestDiskFullAnswers507KeepsThePartialUploadAndPublishesNothing(t *testing.T) {
	dir := t.TempDir()
	blobs := newFaultyBlobs(t, dir)
	h := newHarness(t, media.Config{Blobs: blobs})
	data := randomBytes(t, 3000)
	path := h.mustCreate("alice", 3000, digestOf(data))
	blobs.set(1000, 0)
	resp, body := h.patch("alice", path, 0, data)
	wantStatus(t, "PATCH on a full disk", resp, body, http.StatusInsufficientStorage)
	wantJSONError(t, "PATCH on a full disk", body, "UNAVAILABLE")
	if got := h.head("alice", path).Header.Get("Upload-Offset"); got != "1000" {
		t.Fatalf("offset %s after the disk filled, want the 1000 bytes written", got)
	}
	wantEmptyDir(t, filepath.Join(dir, "blobs"))

	blobs.set(-1, 0) // space freed
	resp, body = h.patch("alice", path, 1000, data[1000:])
	wantStatus(t, "resumed PATCH", resp, body, http.StatusNoContent)
	if resp.Header.Get(media.HeaderBlobDigest) != digestOf(data) {
		t.Fatalf("resumed PATCH: digest %q", resp.Header.Get(media.HeaderBlobDigest))
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digestOf(data), nil, nil)
	wantStatus(t, "GET", resp, body, http.StatusOK)
	if string(body) != string(data) {
		t.Fatal("downloaded bytes differ")
	}
}

func TestAnUploadCompleteButNotPublishedIsPublishedByTheNextHeadOrPatch(t *testing.T) {
	for _, method := range []string{http.MethodHead, http.MethodPatch} {
		t.Run(method, func(t *testing.T) {
			dir := t.TempDir()
			blobs := newFaultyBlobs(t, dir)
			h := newHarness(t, media.Config{Blobs: blobs})
			data := randomBytes(t, 2000)
			digest := digestOf(data)
			path := h.mustCreate("alice", 2000, digest)
			blobs.set(-1, 1)
			resp, body := h.patch("alice", path, 0, data)
			wantStatus(t, "PATCH whose publish fails", resp, body, http.StatusInternalServerError)
			wantEmptyDir(t, filepath.Join(dir, "blobs"))

			if method == http.MethodHead {
				resp = h.head("alice", path)
				wantStatus(t, "HEAD", resp, nil, http.StatusOK)
			} else {
				resp, body = h.patch("alice", path, 2000, nil)
				wantStatus(t, "empty PATCH at the end", resp, body, http.StatusNoContent)
			}
			if resp.Header.Get(media.HeaderBlobDigest) != digest || resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
				t.Fatalf("%s: digest %q offset %q", method, resp.Header.Get(media.HeaderBlobDigest), resp.Header.Get("Upload-Offset"))
			}
			resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
			wantStatus(t, "GET", resp, body, http.StatusOK)
		})
	}
}

// flakyRecords fails PutBlob while failPuts > 0.
type flakyRecords struct {
	persistence.MediaStore
	mu       sync.Mutex
	failPuts int
}

func (f *flakyRecords) PutBlob(ctx context.Context, b persistence.Blob) (persistence.Blob, bool, error) {
	f.mu.Lock()
	fail := f.failPuts > 0
	if fail {
		f.failPuts--
	}
	f.mu.Unlock()
	if fail {
		return persistence.Blob{}, false, persistence.ErrUnavailable
	}
	return f.MediaStore.PutBlob(ctx, b)
}

func TestBytesPublishedWithoutARecordAreRecordedByTheNextCreation(t *testing.T) {
	records := &flakyRecords{MediaStore: openRecords(t), failPuts: 1}
	h := newHarnessWith(t, media.Config{}, records)
	data := randomBytes(t, 500)
	digest := digestOf(data)
	path := h.mustCreate("alice", 500, digest)
	resp, body := h.patch("alice", path, 0, data)
	wantStatus(t, "PATCH whose record fails", resp, body, http.StatusServiceUnavailable)
	wantJSONError(t, "PATCH whose record fails", body, "UNAVAILABLE")
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "GET without a record", resp, body, http.StatusNotFound)

	resp, body = h.create("alice", 500, digest)
	wantStatus(t, "creation again", resp, body, http.StatusOK)
	if resp.Header.Get(media.HeaderBlobDigest) != digest {
		t.Fatalf("creation again: digest %q", resp.Header.Get(media.HeaderBlobDigest))
	}
	b, err := h.records.GetBlob(context.Background(), digest)
	if err != nil || b.Size != 500 || b.OwnerID != "alice" {
		t.Fatalf("record %+v (%v)", b, err)
	}
	resp, body = h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "GET", resp, body, http.StatusOK)
}
