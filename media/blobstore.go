package media

import (
	"context"
	"errors"
	"io"
	"regexp"

	"github.com/tus/tusd/v2/pkg/handler"
)

var (
	// ErrBlobNotFound: no blob has that digest.
	ErrBlobNotFound = errors.New("media: blob not found")
	// ErrBlobExists: Publish found the digest published already; the
	// upload was removed and the existing blob left as it was.
	ErrBlobExists = errors.New("media: blob already published")
)

// BlobStore keeps uploads in progress and published blobs. It is shaped so
// an object store can implement it: publishing may be a server-side copy
// followed by a delete, and reads are ranged GETs behind Seek and Read.
// Implementations are safe for concurrent use.
type BlobStore interface {
	// UseIn makes the store of uploads in progress tusd's data store: at
	// least Core and Terminater. Media adds the locker; it refuses
	// deferred lengths and concatenation, so those are not needed.
	UseIn(c *handler.StoreComposer)
	// ListUploads returns the ids of all uploads in progress, for the
	// sweeper.
	ListUploads(ctx context.Context) ([]string, error)
	// Publish turns the finished upload uploadID, whose bytes hashed to
	// digest, into the blob digest, durably, and removes the upload. When
	// the blob exists already it is left as it is, the upload is removed
	// all the same, and Publish returns ErrBlobExists.
	Publish(ctx context.Context, uploadID, digest string) error
	// Open returns a reader of a blob's bytes; Seek chooses where the next
	// Read starts (a ranged GET). ErrBlobNotFound when there is none.
	Open(ctx context.Context, digest string) (io.ReadSeekCloser, error)
	// Stat returns a blob's size, or ErrBlobNotFound.
	Stat(ctx context.Context, digest string) (int64, error)
	// Delete removes a blob's bytes; removing a missing blob is not an
	// error.
	Delete(ctx context.Context, digest string) error
}

var (
	digestPattern   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	uploadIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// ValidDigest reports whether s is a lowercase hex SHA-256, the only names
// blobs have. A BlobStore may rely on being given only such names.
func ValidDigest(s string) bool { return digestPattern.MatchString(s) }

// validUploadID reports whether s has the shape of tusd's upload ids (hex of
// 16 random bytes); nothing else ever reaches a data store.
func validUploadID(s string) bool { return uploadIDPattern.MatchString(s) }
