package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
)

// LocalStore keeps uploads in Dir/uploads (tusd's filestore: <id> holds the
// bytes, <id>.info the upload's metadata, and <id>.sha256 a checkpoint of
// their SHA-256, hashstate.go) and published blobs in Dir/blobs/<digest>.
// Both are on one filesystem, so publishing is a rename: no byte is copied.
type LocalStore struct {
	uploads, blobs string
	files          filestore.FileStore

	// hashes are the running SHA-256 of the uploads written to since the
	// store was opened; checkpointEvery bytes apart they are saved.
	hashes          hashes
	checkpointEvery int64
	// readBack counts the bytes of uploads read back (to hash them, or
	// through GetReader).
	readBack atomic.Int64
	// noIncremental (tests and benchmarks only) makes finish read every
	// upload back, as before hashes were kept.
	noIncremental bool
}

// NewLocalStore creates dir/uploads and dir/blobs when missing.
func NewLocalStore(dir string) (*LocalStore, error) {
	s := &LocalStore{uploads: filepath.Join(dir, "uploads"), blobs: filepath.Join(dir, "blobs"),
		hashes: hashes{m: map[string]*uploadHash{}}, checkpointEvery: defaultCheckpointEvery}
	for _, d := range []string{s.uploads, s.blobs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("media: create %s: %w", d, err)
		}
	}
	s.files = filestore.New(s.uploads)
	s.files.DirModePerm, s.files.FileModePerm = 0o700, 0o600
	return s, nil
}

// UseIn installs the filestore, hashing what it writes, as tusd's core and
// terminater.
func (s *LocalStore) UseIn(c *handler.StoreComposer) {
	d := hashedStore{DataStore: s.files, s: s}
	c.UseCore(d)
	c.UseTerminater(d)
}

// ListUploads lists the uploads that have an .info file (not their
// .sha256 checkpoints).
func (s *LocalStore) ListUploads(context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.uploads)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".info"); ok && validUploadID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (s *LocalStore) blobPath(digest string) string { return filepath.Join(s.blobs, digest) }

// Publish syncs the upload's bytes, renames them to blobs/<digest>, syncs
// the blobs directory and removes the upload's hash state and .info file.
// Two uploads of
// one digest finishing at once may both rename: the second replaces the
// first with the same bytes, and a reader holding the first keeps it.
func (s *LocalStore) Publish(_ context.Context, uploadID, digest string) error {
	if !validUploadID(uploadID) || !ValidDigest(digest) {
		return fmt.Errorf("media: publish %q as %q: bad name", uploadID, digest)
	}
	bin := filepath.Join(s.uploads, uploadID)
	info := bin + ".info"
	dst := s.blobPath(digest)
	if _, err := os.Lstat(dst); err == nil {
		return errors.Join(ErrBlobExists, removeIfExists(bin), s.forgetHash(uploadID), removeIfExists(info))
	}
	if err := syncFile(bin); err != nil {
		return err
	}
	if err := os.Rename(bin, dst); err != nil {
		return fmt.Errorf("media: publish: %w", err)
	}
	if err := syncDir(s.blobs); err != nil {
		return err
	}
	return errors.Join(s.forgetHash(uploadID), removeIfExists(info))
}

// Open opens a blob; *os.File seeks and reads at any offset, and lets
// net/http send it with sendfile.
func (s *LocalStore) Open(_ context.Context, digest string) (io.ReadSeekCloser, error) {
	if !ValidDigest(digest) {
		return nil, ErrBlobNotFound
	}
	f, err := os.Open(s.blobPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrBlobNotFound
	}
	return f, err
}

// Stat returns a blob's size.
func (s *LocalStore) Stat(_ context.Context, digest string) (int64, error) {
	if !ValidDigest(digest) {
		return 0, ErrBlobNotFound
	}
	st, err := os.Stat(s.blobPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, ErrBlobNotFound
	}
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Delete removes a blob's file and syncs the directory.
func (s *LocalStore) Delete(_ context.Context, digest string) error {
	if !ValidDigest(digest) {
		return nil
	}
	if err := removeIfExists(s.blobPath(digest)); err != nil {
		return err
	}
	return syncDir(s.blobs)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
