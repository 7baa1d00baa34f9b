package persistence

import (
	"context"
	"time"
)

// DefaultMediaTTL is how long a media blob is kept after its last upload or
// re-reference.
const DefaultMediaTTL = 30 * 24 * time.Hour

// MediaUsageTTL is how long a per-user, per-day usage record is kept after
// its last AddMediaUsage: long enough for any quota window over "today"
// (in any time zone) to read it, short enough that usage costs no cleanup.
const MediaUsageTTL = 3 * 24 * time.Hour

// Blob is the metadata of one published media blob. The blob's bytes are
// end-to-end encrypted ciphertext kept in a blob store (a directory, an S3
// bucket); this record is what expiry and the download path need. A blob
// is named by the SHA-256 of its ciphertext, so the same file sent to many
// chats (a forward) is one blob. Stores keep its times to the millisecond
// at least (CQL timestamps are milliseconds) and return them in UTC.
type Blob struct {
	// Digest is the lowercase hex SHA-256 of the ciphertext.
	Digest string
	Size   int64
	// OwnerID is the user who first published it.
	OwnerID   string
	CreatedAt time.Time
	// LastReferenced is the last upload or re-reference of the blob; it
	// expires a media TTL after this.
	LastReferenced time.Time
}

// MediaStore keeps media blob metadata and per-user upload usage.
//
// It is separate from Store so a Store can exist without media; a node that
// serves media requires its store to implement it. Implementations are safe
// for concurrent use and must pass storetest.RunMedia.
type MediaStore interface {
	// PutBlob records a published blob. When a record for b.Digest exists
	// it keeps that record's Size, OwnerID and CreatedAt, moves its
	// LastReferenced forward to b.LastReferenced (never back), and reports
	// existed. It returns the record as stored.
	PutBlob(ctx context.Context, b Blob) (stored Blob, existed bool, err error)
	// GetBlob returns the record of a blob or ErrNotFound.
	GetBlob(ctx context.Context, digest string) (Blob, error)
	// TouchBlob moves a blob's LastReferenced forward to at (never back);
	// ErrNotFound when there is no such blob.
	TouchBlob(ctx context.Context, digest string, at time.Time) error
	// ExpiredBlobs returns up to limit blobs whose LastReferenced is before
	// cutoff, in no particular order, each as stored. limit must be
	// positive. A sweeper calls it with cutoff = now - DefaultMediaTTL and
	// deletes what it gets; a blob touched or deleted meanwhile is not
	// returned by a later call.
	ExpiredBlobs(ctx context.Context, cutoff time.Time, limit int) ([]Blob, error)
	// DeleteBlob removes a blob's record; removing a missing one is not an
	// error. A sweeper deletes the bytes first, then the record.
	DeleteBlob(ctx context.Context, digest string) error
	// AddMediaUsage adds bytes to what userID uploaded on day (UTC,
	// "2006-01-02") and returns the new total. Concurrent adds are never
	// lost; the total returned includes this add and every add that
	// returned before it. Usage records expire on their own, MediaUsageTTL
	// after their last add.
	AddMediaUsage(ctx context.Context, userID, day string, bytes int64) (total int64, err error)
	// MediaUsage returns what userID uploaded on day; 0 when nothing.
	MediaUsage(ctx context.Context, userID, day string) (int64, error)
}
