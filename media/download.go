package media

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// serveBlob answers GET and HEAD /v1/media/blobs/<digest> for any
// authenticated user: the bytes are ciphertext and the digest, which only
// the recipients of the message carrying it know, is the capability.
// Unknown, expired and not yet published blobs are all 404.
func (s *Service) serveBlob(w http.ResponseWriter, r *http.Request, digest string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, courierpb.ErrorCode_INVALID_ARGUMENT, "a blob takes GET or HEAD")
		return
	}
	if !ValidDigest(digest) {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such blob")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	b, err := s.store.GetBlob(ctx, digest)
	cancel()
	switch {
	case errors.Is(err, persistence.ErrNotFound) || (err == nil && s.expired(b)):
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such blob")
		return
	case err != nil:
		s.log.Warn("media store call failed", "op", "get blob", "err", err)
		writeError(w, http.StatusServiceUnavailable, courierpb.ErrorCode_UNAVAILABLE, "storage unavailable, retry later")
		return
	}
	f, err := s.blobs.Open(r.Context(), digest)
	switch {
	case errors.Is(err, ErrBlobNotFound):
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such blob")
		return
	case err != nil:
		s.log.Error("open a blob", "digest", digest, "err", err)
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "cannot read the blob")
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("ETag", `"`+digest+`"`)
	h.Set("Cache-Control", "private, immutable")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	// Range, If-Range, If-None-Match and Content-Length; a zero time sends
	// no Last-Modified.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// expired reports whether a blob's TTL since its last reference has passed
// (the sweeper may not have deleted it yet).
func (s *Service) expired(b persistence.Blob) bool {
	return s.cfg.TTL > 0 && b.LastReferenced.Before(s.now().Add(-s.cfg.TTL))
}
