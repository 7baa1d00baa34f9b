package media_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/courier-im/courier/media"
)

// Deferred-digest uploads: created without sha256, their digest declared
// by the PATCH that completes them (Courier-Blob-Digest).

func (h *harness) createDeferred(user string, size int64) string {
	h.t.Helper()
	resp, body := h.do(user, http.MethodPost, media.Prefix, map[string]string{
		"Tus-Resumable": "1.0.0",
		"Upload-Length": strconv.FormatInt(size, 10),
	}, nil)
	wantStatus(h.t, "deferred creation", resp, body, http.StatusCreated)
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, media.Prefix) {
		h.t.Fatalf("create: Location %q is not %s<upload-id>", loc, media.Prefix)
	}
	return loc
}

// patchDigest is a PATCH that declares digest ("" sends no header).
func (h *harness) patchDigest(user, path string, offset int64, chunk []byte, digest string) (*http.Response, []byte) {
	h.t.Helper()
	hdr := map[string]string{
		"Tus-Resumable": "1.0.0",
		"Upload-Offset": strconv.FormatInt(offset, 10),
		"Content-Type":  "application/offset+octet-stream",
	}
	if digest != "" {
		hdr[media.HeaderBlobDigest] = digest
	}
	return h.do(user, http.MethodPatch, path, hdr, bytes.NewReader(chunk))
}

func wantPublished(t *testing.T, h *harness, data []byte) {
	t.Helper()
	digest := digestOf(data)
	resp, body := h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "GET the blob", resp, body, http.StatusOK)
	if string(body) != string(data) {
		t.Fatal("the published blob holds other bytes")
	}
	b, err := h.records.GetBlob(context.Background(), digest)
	if err != nil || b.Size != int64(len(data)) || b.OwnerID != "alice" {
		t.Fatalf("record %+v (%v)", b, err)
	}
}

func TestDeferredDigestUploadIsPublishedByItsCompletingPatch(t *testing.T) {
	for _, store := range []string{"incremental", "read back"} {
		t.Run(store, func(t *testing.T) {
			dir := t.TempDir()
			h, local := newHashHarness(t, dir)
			if store == "read back" {
				media.ReadUploadsBack(local)
			}
			data := randomBytes(t, 3<<20+321)
			path := h.createDeferred("alice", int64(len(data)))
			for off := 0; off < len(data); off += 1 << 20 {
				end := min(off+1<<20, len(data))
				digest := ""
				if end == len(data) {
					digest = digestOf(data)
				}
				resp, body := h.patchDigest("alice", path, int64(off), data[off:end], digest)
				wantStatus(t, "PATCH at "+strconv.Itoa(off), resp, body, http.StatusNoContent)
				if end == len(data) && resp.Header.Get(media.HeaderBlobDigest) != digestOf(data) {
					t.Fatalf("last PATCH: digest %q, want %s", resp.Header.Get(media.HeaderBlobDigest), digestOf(data))
				}
			}
			wantBlob(t, dir, data)
			wantPublished(t, h, data)
		})
	}
}

func TestDeferredDigestWrongAtTheEndIsRefusedAndNothingIsPublished(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 5000)
	wrong := digestOf([]byte("something else"))
	path := h.createDeferred("alice", int64(len(data)))
	resp, body := h.patchDigest("alice", path, 0, data[:2000], "")
	wantStatus(t, "PATCH", resp, body, http.StatusNoContent)
	resp, body = h.patchDigest("alice", path, 2000, data[2000:], wrong)
	wantMismatchLeftNothing(t, h, path, resp, body, wrong, data)
}

func TestDeferredDigestMissingKeepsTheBytesAndAnEmptyPatchWithItFinishes(t *testing.T) {
	h := newHarness(t, media.Config{})
	data := randomBytes(t, 7000)
	path := h.createDeferred("alice", int64(len(data)))
	resp, body := h.patchDigest("alice", path, 0, data, "")
	wantStatus(t, "completing PATCH without the header", resp, body, http.StatusBadRequest)
	if !strings.Contains(string(body), media.HeaderBlobDigest) {
		t.Fatalf("the refusal %q does not name %s", body, media.HeaderBlobDigest)
	}
	wantEmptyDir(t, filepath.Join(h.dir, "blobs"))
	// The bytes are kept: HEAD gives the final offset and publishes nothing.
	resp = h.head("alice", path)
	wantStatus(t, "HEAD", resp, nil, http.StatusOK)
	if got := resp.Header.Get("Upload-Offset"); got != strconv.Itoa(len(data)) {
		t.Fatalf("HEAD: offset %q, want %d", got, len(data))
	}
	if resp.Header.Get(media.HeaderBlobDigest) != "" {
		t.Fatal("HEAD named a blob nobody declared")
	}
	// An empty PATCH without the header: still 400, still kept.
	resp, body = h.patchDigest("alice", path, int64(len(data)), nil, "")
	wantStatus(t, "empty PATCH without the header", resp, body, http.StatusBadRequest)
	resp, body = h.patchDigest("alice", path, int64(len(data)), nil, digestOf(data))
	wantStatus(t, "empty PATCH with the header", resp, body, http.StatusNoContent)
	if resp.Header.Get(media.HeaderBlobDigest) != digestOf(data) || resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("digest %q offset %q", resp.Header.Get(media.HeaderBlobDigest), resp.Header.Get("Upload-Offset"))
	}
	wantBlob(t, h.dir, data)
	wantPublished(t, h, data)
}

// TestDeferredDigestUploadStrandedByACrashIsFinishedAfterTheRestart: the
// last byte arrived but the server stopped before publishing (here: the
// publication failed, then a new service on the same directory); the
// client asks HEAD (the offset) and finishes with an empty PATCH.
func TestDeferredDigestUploadStrandedByACrashIsFinishedAfterTheRestart(t *testing.T) {
	dir := t.TempDir()
	blobs := newFaultyBlobs(t, dir)
	h := newHarness(t, media.Config{Blobs: blobs})
	data := randomBytes(t, 3<<20+5)
	path := h.createDeferred("alice", int64(len(data)))
	resp, body := h.patchDigest("alice", path, 0, data[:1<<20], "")
	wantStatus(t, "first PATCH", resp, body, http.StatusNoContent)
	blobs.set(-1, 1)
	resp, body = h.patchDigest("alice", path, 1<<20, data[1<<20:], digestOf(data))
	wantStatus(t, "PATCH whose publish fails", resp, body, http.StatusInternalServerError)
	wantEmptyDir(t, filepath.Join(dir, "blobs"))

	// The restart: a new store and service on the same directory.
	local2, err := media.NewLocalStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarnessWith(t, media.Config{Blobs: local2}, h.records)
	resp = h2.head("alice", path)
	wantStatus(t, "HEAD after the restart", resp, nil, http.StatusOK)
	if got := resp.Header.Get("Upload-Offset"); got != strconv.Itoa(len(data)) || resp.Header.Get(media.HeaderBlobDigest) != "" {
		t.Fatalf("HEAD after the restart: offset %q digest %q", got, resp.Header.Get(media.HeaderBlobDigest))
	}
	resp, body = h2.patchDigest("alice", path, int64(len(data)), nil, digestOf(data))
	wantStatus(t, "empty PATCH with the header", resp, body, http.StatusNoContent)
	if resp.Header.Get(media.HeaderBlobDigest) != digestOf(data) {
		t.Fatalf("digest %q", resp.Header.Get(media.HeaderBlobDigest))
	}
	wantBlob(t, dir, data)
	wantPublished(t, h2, data)
}
