package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// preCreate runs when tusd has validated a creation (Tus-Resumable,
// Upload-Length, MaxSize) and before anything is stored. It checks the
// declared digest, answers an existing blob at once, charges the quota and
// replaces the client's metadata with the server's.
func (s *Service) preCreate(ev handler.HookEvent) (handler.HTTPResponse, handler.FileInfoChanges, error) {
	var none handler.FileInfoChanges
	user, _ := ev.Context.Value(userKey{}).(string)
	if user == "" {
		return handler.HTTPResponse{}, none, tusError(http.StatusUnauthorized, courierpb.ErrorCode_UNAUTHENTICATED, "no user", nil)
	}
	// No sha256: a deferred digest, declared by the PATCH that completes
	// the upload (Courier-Blob-Digest).
	digest, declared := ev.Upload.MetaData[metaDigest]
	// (tusd drops an element whose value is not base64: such a sha256 is
	// refused, not taken for a deferred digest.)
	deferred := !declared && !namesKey(ev.HTTPRequest.Header.Get("Upload-Metadata"), metaDigest)
	if !deferred && !ValidDigest(digest) {
		return handler.HTTPResponse{}, none, tusError(http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT,
			"Upload-Metadata sha256, when given, must be the base64 of the lowercase hex SHA-256 of the ciphertext", nil)
	}
	if ev.Upload.SizeIsDeferred || ev.Upload.IsPartial || ev.Upload.IsFinal {
		return handler.HTTPResponse{}, none, tusError(http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "Upload-Length is required", nil)
	}
	ctx, cancel := context.WithTimeout(ev.Context, storeTimeout)
	defer cancel()
	exists := false
	if !deferred {
		var err error
		exists, err = s.reference(ctx, digest, user)
		if err != nil {
			s.log.Warn("media store call failed", "op", "reference", "err", err)
			return handler.HTTPResponse{}, none, errUnavailable
		}
	}
	if exists {
		// An error is tusd's only way to answer without creating; this one
		// is a success.
		return handler.HTTPResponse{}, none, handler.Error{
			ErrorCode:    "EXISTS",
			Message:      "blob exists",
			HTTPResponse: handler.HTTPResponse{StatusCode: http.StatusOK, Header: handler.HTTPHeader{HeaderBlobDigest: digest}},
		}
	}
	if err := s.charge(ctx, user, ev.Upload.Size); err != nil {
		return handler.HTTPResponse{}, none, err
	}
	now := s.now()
	meta := handler.MetaData{
		metaOwner:   user,
		metaCreated: strconv.FormatInt(now.Unix(), 10),
	}
	if deferred {
		meta[metaDeferred] = "1"
	} else {
		meta[metaDigest] = digest
	}
	changes := handler.FileInfoChanges{MetaData: meta}
	resp := handler.HTTPResponse{Header: handler.HTTPHeader{}}
	if s.cfg.TTL > 0 {
		resp.Header["Upload-Expires"] = now.Add(s.cfg.TTL).UTC().Format(http.TimeFormat)
	}
	return resp, changes, nil
}

// namesKey says whether a raw Upload-Metadata header has an element for
// key, valid or not.
func namesKey(header, key string) bool {
	for element := range strings.SplitSeq(header, ",") {
		if k, _, _ := strings.Cut(strings.TrimSpace(element), " "); k == key {
			return true
		}
	}
	return false
}

// reference re-references a published blob: when its bytes exist, its
// record's life is extended (or the record written again, if a crash lost
// it after publishing: M2) and it reports true.
func (s *Service) reference(ctx context.Context, digest, user string) (bool, error) {
	defer s.lockDigest(digest)()
	size, err := s.blobs.Stat(ctx, digest)
	if errors.Is(err, ErrBlobNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	now := s.now()
	err = s.store.TouchBlob(ctx, digest, now)
	if errors.Is(err, persistence.ErrNotFound) {
		_, _, err = s.store.PutBlob(ctx, persistence.Blob{Digest: digest, Size: size, OwnerID: user, CreatedAt: now, LastReferenced: now})
	}
	return err == nil, err
}

// charge counts size against user's usage today, or answers 429 when it
// would exceed the daily quota (M4).
func (s *Service) charge(ctx context.Context, user string, size int64) error {
	if s.cfg.DailyQuota < 0 || size == 0 {
		return nil
	}
	defer s.lockQuota(user)()
	now := s.now().UTC()
	day := now.Format(time.DateOnly)
	used, err := s.store.MediaUsage(ctx, user, day)
	if err != nil {
		s.log.Warn("media store call failed", "op", "usage", "err", err)
		return errUnavailable
	}
	if used+size > s.cfg.DailyQuota {
		next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
		secs := int64((next.Sub(now) + time.Second - 1) / time.Second)
		return tusError(http.StatusTooManyRequests, courierpb.ErrorCode_RATE_LIMITED,
			fmt.Sprintf("daily media quota of %d bytes reached (%d used today): retry after midnight UTC", s.cfg.DailyQuota, used),
			handler.HTTPHeader{"Retry-After": strconv.FormatInt(max(secs, 1), 10)})
	}
	if _, err := s.store.AddMediaUsage(ctx, user, day, size); err != nil {
		s.log.Warn("media store call failed", "op", "add usage", "err", err)
		return errUnavailable
	}
	return nil
}

// preFinish runs when the last byte of an upload arrived, inside the
// request that brought it and under the upload's lock.
func (s *Service) preFinish(ev handler.HookEvent) (handler.HTTPResponse, error) {
	return s.finish(ev.Context, ev.Upload.ID, ev.HTTPRequest.Header.Get(HeaderBlobDigest))
}

// finishTimeout bounds hashing an upload (reading it back when no hash
// state covers it), publishing it and writing its record (an object store
// reads 2 GiB back and copies it server-side).
const finishTimeout = 10 * time.Minute

// allowFinish lets the answer to the request that finishes an upload be
// written after the check and publication, however long they take; tusd
// set the write deadline to twice the idle timeout after the last read.
func allowFinish(ctx context.Context) {
	if q := requestOf(ctx); q != nil {
		_ = q.rc.SetWriteDeadline(time.Now().Add(finishTimeout + time.Minute))
	}
}

// finish checks a complete upload's digest and publishes it (M1, M2). A
// wrong digest deletes the upload. The digest is the one declared at
// creation or, for a deferred-digest upload, header: the
// Courier-Blob-Digest of the request that finishes it (without one, the
// upload is kept and the answer is 400). The caller holds the upload's
// lock.
func (s *Service) finish(reqCtx context.Context, id, header string) (handler.HTTPResponse, error) {
	// The client may hang up once it sent the last byte: the check and
	// the publication still complete.
	allowFinish(reqCtx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), finishTimeout)
	defer cancel()
	up, err := s.composer.Core.GetUpload(ctx, id)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	info, err := up.GetInfo(ctx)
	if err != nil {
		return handler.HTTPResponse{}, err
	}
	declared, owner := info.MetaData[metaDigest], info.MetaData[metaOwner]
	if info.MetaData[metaDeferred] != "" {
		if !ValidDigest(header) {
			// The bytes stay: a PATCH at the final offset with an empty
			// body and the header finishes the upload.
			return handler.HTTPResponse{}, tusError(http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT,
				"this upload declared no sha256 at creation: the PATCH that completes it must carry "+HeaderBlobDigest+
					": <lowercase hex SHA-256 of the ciphertext>; the bytes are kept, send a PATCH at the final Upload-Offset with an empty body and the header", nil)
		}
		declared = header
	}
	got, err := s.digest(ctx, id, up, info.Size, declared)
	if err != nil {
		s.log.Error("hash an upload", "upload", id, "err", err)
		return handler.HTTPResponse{}, tusError(http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "cannot read the upload back", nil)
	}
	if got != declared {
		if err := s.composer.Terminater.AsTerminatableUpload(up).Terminate(ctx); err != nil {
			s.log.Error("delete an upload with a wrong digest", "upload", id, "err", err)
		}
		return handler.HTTPResponse{}, tusError(http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT,
			fmt.Sprintf("digest mismatch: declared %s, got %s", declared, got), nil)
	}
	defer s.lockDigest(declared)()
	switch err := s.blobs.Publish(ctx, id, declared); {
	case err == nil, errors.Is(err, ErrBlobExists):
	case errors.Is(err, syscall.ENOSPC):
		return handler.HTTPResponse{}, errDiskFull
	default:
		s.log.Error("publish a blob", "upload", id, "err", err)
		return handler.HTTPResponse{}, tusError(http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "cannot publish the blob", nil)
	}
	now := s.now()
	if _, _, err := s.store.PutBlob(ctx, persistence.Blob{Digest: declared, Size: info.Size, OwnerID: owner, CreatedAt: now, LastReferenced: now}); err != nil {
		// The bytes are published; creating the digest again re-records
		// them without a byte sent (reference).
		s.log.Warn("media store call failed", "op", "put blob", "err", err)
		return handler.HTTPResponse{}, errUnavailable
	}
	return handler.HTTPResponse{Header: handler.HTTPHeader{HeaderBlobDigest: declared}}, nil
}

// uploadDigester is a BlobStore that hashes uploads as they are written
// (LocalStore, hashstate.go).
type uploadDigester interface {
	// uploadDigest returns the SHA-256 of the finished upload id of size
	// bytes, reading back only what its hash state lacks. fromState says
	// whether a state supplied any of it; ok false: read the upload back.
	uploadDigest(ctx context.Context, id string, size int64) (digest string, fromState, ok bool)
}

// digest returns the SHA-256 of a finished upload: from the hash computed
// while it was written when the store keeps one, else by reading it back.
// A hashed state that disagrees with the declared digest is not believed:
// the upload is read back and its bytes decide (M1 either way).
func (s *Service) digest(ctx context.Context, id string, up handler.Upload, size int64, declared string) (string, error) {
	if d, ok := s.blobs.(uploadDigester); ok {
		got, fromState, ok := d.uploadDigest(ctx, id, size)
		switch {
		case ok && (got == declared || !fromState):
			return got, nil
		case ok:
			s.log.Warn("an upload's hash state disagrees with its declared digest: reading it back", "upload", id)
		}
	}
	return s.hashUpload(ctx, up)
}

// hashUpload streams an upload through SHA-256; it never holds more than a
// buffer of it.
func (s *Service) hashUpload(ctx context.Context, up handler.Upload) (string, error) {
	rc, err := up.GetReader(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, rc, make([]byte, 256<<10)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// finishStranded finishes an upload whose bytes all arrived but which was
// not published: the server stopped, or the store failed, between the last
// byte and the answer, or (a deferred digest) the completing PATCH carried
// no Courier-Blob-Digest. A HEAD or a PATCH at its final offset publishes
// it now instead of leaving the client with a complete upload and no blob;
// for a deferred-digest upload only a PATCH with the header can (route
// answers its HEAD with the offset).
func (s *Service) finishStranded(w http.ResponseWriter, r *http.Request, id string) {
	lock, err := s.composer.Locker.NewLock(id)
	if err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		err = lock.Lock(ctx, func() {})
		cancel()
	}
	if err != nil {
		writeError(w, http.StatusLocked, courierpb.ErrorCode_UNAVAILABLE, "the upload is busy, retry")
		return
	}
	defer func() { _ = lock.Unlock() }()
	up, err := s.composer.Core.GetUpload(r.Context(), id)
	var info handler.FileInfo
	if err == nil {
		info, err = up.GetInfo(r.Context())
	}
	if err != nil {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such upload")
		return
	}
	resp, err := s.finish(r.Context(), id, r.Header.Get(HeaderBlobDigest))
	var tusErr handler.Error
	if err != nil && !errors.As(err, &tusErr) {
		tusErr = tusError(http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "cannot finish the upload", nil)
	}
	if err != nil {
		resp = tusErr.HTTPResponse
	} else {
		resp.StatusCode = http.StatusNoContent
		if r.Method == http.MethodHead {
			resp.StatusCode = http.StatusOK
			resp.Header["Upload-Length"] = strconv.FormatInt(info.Size, 10)
		}
		resp.Header["Upload-Offset"] = strconv.FormatInt(info.Size, 10)
		resp.Header["Cache-Control"] = "no-store"
	}
	for k, v := range resp.Header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, resp.Body)
	}
}
