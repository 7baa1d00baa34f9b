package client

// Uploads: UploadMedia encrypts a file as it reads it (mediacrypt.go) and
// sends it with tus, resuming from the server's offset (media_http.go has
// the HTTP plumbing both directions share).

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// UploadMedia encrypts the size bytes r holds with a fresh key, uploads
// the ciphertext and returns the reference to send (SendMedia). The server
// only ever receives ciphertext, and is told nothing of the file but its
// ciphertext size and digest.
//
// The upload is announced with the ciphertext's SHA-256, so the ciphertext
// is produced twice or kept: when r is an io.ReadSeeker (a file), a first
// pass encrypts and hashes it (keeping 16 bytes per 64 KiB, the chunks'
// tags) and the upload encrypts it again, seeking back to resume; any
// other reader is encrypted once into a temporary file (ciphertext only,
// WithMediaTempDir, removed before UploadMedia returns). While a piece
// goes up, encryption runs on a goroutine of its own a few MiB ahead of
// the network. The file is never held in memory. r must
// hold exactly size bytes from its current position. A file of 32 MiB or
// more first asks the server's size limit (tus OPTIONS), so one it would
// refuse fails with ErrMediaTooLarge before it is read.
//
// The ciphertext goes up in pieces (WithMediaPieceSize). After a dropped
// connection, a server error or restart, or a conflicting offset, the SDK
// asks the server how far it got (HEAD) and continues from there, with
// backoff, until ctx ends (the backoff starts over whenever the server's
// offset moved on); only an upload the server lost altogether starts
// again from byte 0. Once every byte is sent the SDK waits for the server
// to check the digest and publish the blob (minutes for a large file on
// an object store), asking again (HEAD) if the answer is lost, and never
// uploads a complete file again unless the server still has not
// published it after 11 minutes. If the server already has a blob of
// that digest nothing is uploaded. An upload that fails for good is
// deleted from the server.
func (c *Client) UploadMedia(ctx context.Context, r io.Reader, size int64, opts ...MediaOption) (MediaRef, error) {
	mc := mediaOptions(opts)
	total := MediaCipherSize(size)
	if total < 0 {
		return MediaRef{}, fmt.Errorf("media: invalid size %d", size)
	}
	ctx, cancel := c.mediaContext(ctx)
	defer cancel()
	if total >= mediaPrecheckSize {
		// Ask the server's limit first: a file it refuses fails now, not
		// after a pass over the whole file.
		if limit, ok := c.mediaMaxSize(ctx); ok && total > limit {
			return MediaRef{}, fmt.Errorf("media: create upload: %w: %d bytes of ciphertext, the server takes at most %d", ErrMediaTooLarge, total, limit)
		}
	}
	key := make([]byte, mediaKeySize)
	if _, err := rand.Read(key); err != nil {
		return MediaRef{}, err
	}
	aead, err := newMediaAEAD(key)
	if err != nil {
		return MediaRef{}, err
	}
	var src cipherSource
	if rs, ok := r.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			src, err = newSeekSource(ctx, aead, rs, start, size)
			if err != nil {
				return MediaRef{}, err
			}
		}
	}
	if src == nil {
		sp, err := newSpoolSource(ctx, aead, r, size, mc.tempDir)
		if err != nil {
			return MediaRef{}, err
		}
		defer sp.close()
		src = sp
	}
	ref := MediaRef{
		Digest:      src.digest(),
		Key:         key,
		Size:        size,
		CipherSize:  total,
		ContentType: mc.contentType,
		FileName:    mc.fileName,
		Thumbnail:   mc.thumbnail,
	}
	up := &mediaUpload{c: c, mc: mc, src: src, digest: ref.Digest, total: total, prog: newMediaProgress(mc.progress, total)}
	if err := up.run(ctx); err != nil {
		return MediaRef{}, err
	}
	return ref, nil
}

// mediaPrecheckSize: uploads of this much ciphertext or more ask the
// server's size limit before the first pass over the file.
const mediaPrecheckSize = 32 << 20

// mediaMaxSize asks the server the largest upload it takes (tus OPTIONS,
// Tus-Max-Size); false when it does not say (then the creation answers).
func (c *Client) mediaMaxSize(ctx context.Context) (int64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.mediaDo(ctx, c.mediaHTTP(), http.MethodOptions, c.server().httpBase+"/v1/media/", tusHeader(), nil, 0)
	if err != nil {
		return 0, false
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return 0, false
	}
	n, err := strconv.ParseInt(resp.Header.Get("Tus-Max-Size"), 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// cipherSource produces the ciphertext of the file being uploaded from
// any offset.
type cipherSource interface {
	digest() string
	from(off int64) (io.Reader, error)
}

// seekSource re-encrypts from the plaintext, seeking to the chunk that
// holds the offset.
type seekSource struct {
	aead  cipher.AEAD
	rs    io.ReadSeeker
	start int64
	size  int64
	dig   string
	tags  []byte
}

func newSeekSource(ctx context.Context, aead cipher.AEAD, rs io.ReadSeeker, start, size int64) (*seekSource, error) {
	s := &seekSource{aead: aead, rs: rs, start: start, size: size}
	tags := make([]byte, 0, mediaChunks(size)*mediaTagSize)
	enc := newMediaEncrypter(aead, newCtxReader(ctx, rs), size, 0, 0)
	enc.record = &tags
	// (Encrypting on a goroutine of its own, ahead of the hashing, was
	// measured and dropped: SHA-256 is the floor of this pass, and the
	// handoff cost more than the overlap gained on a loaded 2-core box.)
	h := sha256.New()
	if _, err := io.Copy(h, enc); err != nil {
		return nil, err
	}
	s.tags = tags
	s.dig = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

func (s *seekSource) digest() string { return s.dig }

func (s *seekSource) from(off int64) (io.Reader, error) {
	chunk := off / mediaSealedChunk
	if _, err := s.rs.Seek(s.start+chunk*MediaChunkSize, io.SeekStart); err != nil {
		return nil, fmt.Errorf("media: seek back to resume: %w", err)
	}
	enc := newMediaEncrypter(s.aead, s.rs, s.size, chunk, off%mediaSealedChunk)
	enc.expect = s.tags
	return enc, nil
}

// spoolSource keeps the ciphertext in a temporary file.
type spoolSource struct {
	f   *os.File
	dig string
	n   int64
}

func newSpoolSource(ctx context.Context, aead cipher.AEAD, r io.Reader, size int64, dir string) (*spoolSource, error) {
	f, err := os.CreateTemp(dir, "courier-media-up-*.enc")
	if err != nil {
		return nil, fmt.Errorf("media: spool file: %w", err)
	}
	s := &spoolSource{f: f}
	if err := preallocSpool(f, MediaCipherSize(size)); err != nil {
		s.close()
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), newMediaEncrypter(aead, newCtxReader(ctx, r), size, 0, 0))
	if err != nil {
		s.close()
		return nil, err
	}
	s.n, s.dig = n, hex.EncodeToString(h.Sum(nil))
	return s, nil
}

func (s *spoolSource) digest() string { return s.dig }

func (s *spoolSource) from(off int64) (io.Reader, error) {
	return io.NewSectionReader(s.f, off, s.n-off), nil
}

func (s *spoolSource) close() {
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// mediaUpload is one UploadMedia's transfer.
type mediaUpload struct {
	c      *Client
	mc     mediaConfig
	src    cipherSource
	digest string
	total  int64
	prog   *mediaProgress
	hc     *http.Client

	loc string // the upload's URL; "" before creation
}

// errNotPublished: a complete upload whose blob is not there yet.
var errNotPublished = errors.New("media: the upload is complete but not published yet")

// errNoProgress: a PATCH the server accepted without taking any byte.
var errNoProgress = errors.New("media: the server took no bytes")

// errUploadLost: the server no longer knows the upload (create it again).
var errUploadLost = errors.New("media: the server lost the upload")

func (u *mediaUpload) run(ctx context.Context) (err error) {
	u.hc = u.c.mediaHTTP()
	b := backoff{min: u.c.cfg.minBackoff, max: u.c.cfg.maxBackoff}
	u.prog.report(0)
	defer func() {
		if err != nil && u.loc != "" && !errors.Is(err, ErrMediaDigestRefused) {
			u.terminate(ctx)
		}
	}()
	offset := int64(-1) // -1: ask the server
	// best is the highest offset the server confirmed for this upload:
	// whenever it grows (a completed PATCH, or a HEAD after a cut one that
	// moved bytes) the backoff starts over, so an upload over a link that
	// drops every few seconds keeps pausing briefly.
	best := int64(-1)
	attempt, authFails, recreated := 0, 0, 0
	var last error
	// completeAt is when the server first had every byte of the current
	// upload without naming the published blob yet (zero: not yet).
	var completeAt time.Time
	for {
		if ctx.Err() != nil {
			return mediaCtxErr(ctx, last)
		}
		var done bool
		var err error
		progressed := false
		switch {
		case u.loc == "":
			done, err = u.create(ctx)
			offset, completeAt, best = 0, time.Time{}, 0
		case offset < 0:
			offset, done, err = u.head(ctx)
		case offset == u.total:
			// Complete, but the answer naming the published blob was lost
			// or is still to come (the server checks and publishes it, and
			// a HEAD finishes it if nothing else does). Ask whether the
			// blob is there; wait for it a while; then upload again.
			if completeAt.IsZero() {
				completeAt = time.Now()
			}
			done, err = u.blobExists(ctx)
			if err == nil && !done {
				if time.Since(completeAt) > mediaFinishWait {
					recreated++
					if recreated > mediaMaxRecreate {
						return fmt.Errorf("%w: the upload is complete but no blob was published", errMediaProtocol)
					}
					u.loc, offset = "", -1
					continue
				}
				err = errNotPublished
			}
			offset = -1
		default:
			var next int64
			next, done, err = u.patch(ctx, offset)
			if err == nil && !done && next <= offset {
				err = errNoProgress // pause before asking again
			}
			offset = next
		}
		if offset > best {
			best, progressed = offset, true
		}
		if offset == u.total && completeAt.IsZero() {
			completeAt = time.Now()
		}
		if done {
			u.loc = "" // published: nothing to clean up
			u.prog.report(u.total)
			return nil
		}
		if progressed {
			attempt = 0
		}
		if err == nil {
			authFails = 0
			continue
		}
		last = err
		if ctx.Err() != nil {
			return mediaCtxErr(ctx, last)
		}
		var status *statusErr
		switch {
		case errors.Is(err, errUploadLost) && !completeAt.IsZero():
			// Gone once complete: published, or refused and deleted.
			if ok, berr := u.blobExists(ctx); berr == nil && ok {
				u.loc = ""
				u.prog.report(u.total)
				return nil
			}
			recreated++
			if recreated > mediaMaxRecreate {
				return err
			}
			u.loc, offset = "", -1
			continue
		case errors.Is(err, errUploadLost):
			recreated++
			if recreated > mediaMaxRecreate {
				return err
			}
			u.loc, offset = "", -1
			continue
		case errors.As(err, &status) && status.code == http.StatusUnauthorized:
			authFails++
			if authFails >= mediaMaxAuthFailures {
				return status.err
			}
			offset = -1
			continue
		case errors.As(err, &status) && status.code == http.StatusConflict:
			// Our idea of the offset was wrong: ask the server, at once.
			offset = -1
			if attempt == 0 {
				attempt++
				continue
			}
		case errors.As(err, &status) && status.code == http.StatusTooManyRequests:
			d := retryAfter(status.resp)
			if d > mediaRetryAfterCap {
				return status.err
			}
			offset = -1
			if !sleepCtx(ctx, max(d, b.delay(attempt))) {
				return mediaCtxErr(ctx, last)
			}
			attempt++
			continue
		case errors.As(err, &status) && transient(status.code):
			offset = -1
		case errors.As(err, &status):
			return status.err
		case !retryableTransport(ctx, err):
			return err
		default:
			offset = -1
		}
		u.c.log.Debug("media upload: retrying", "err", err, "attempt", attempt)
		if !sleepCtx(ctx, b.delay(attempt)) {
			return mediaCtxErr(ctx, last)
		}
		attempt++
	}
}

func (u *mediaUpload) createURL() string {
	return u.c.server().httpBase + "/v1/media/"
}

// create announces the upload; done: the server already has the blob.
func (u *mediaUpload) create(ctx context.Context) (bool, error) {
	meta := "sha256 " + base64.StdEncoding.EncodeToString([]byte(u.digest))
	target := u.createURL()
	hdr := tusHeader("Upload-Length", strconv.FormatInt(u.total, 10), "Upload-Metadata", meta)
	resp, err := u.c.mediaDo(ctx, u.hc, http.MethodPost, target, hdr, http.NoBody, 0)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		drain(resp)
		if got := resp.Header.Get("Courier-Blob-Digest"); got != u.digest {
			return false, fmt.Errorf("%w: it answered for blob %q, not %q", errMediaProtocol, got, u.digest)
		}
		return true, nil
	case http.StatusCreated:
		drain(resp)
		loc := resp.Header.Get("Location")
		base, _ := url.Parse(target)
		ref, err := url.Parse(loc)
		if loc == "" || err != nil {
			return false, fmt.Errorf("%w: it created an upload without a usable Location (%q)", errMediaProtocol, loc)
		}
		u.loc = base.ResolveReference(ref).String()
		return false, nil
	}
	return false, refused(resp, "media: create upload")
}

// head asks the server how much of the upload it has. The HEAD of a
// complete upload may finish it: done when it names the published blob.
func (u *mediaUpload) head(ctx context.Context) (int64, bool, error) {
	resp, err := u.c.mediaDo(ctx, u.hc, http.MethodHead, u.loc, tusHeader(), nil, 0)
	if err != nil {
		return -1, false, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
		drain(resp)
		off, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		if err != nil || off < 0 || off > u.total {
			return -1, false, fmt.Errorf("%w: it reports offset %q of %d", errMediaProtocol, resp.Header.Get("Upload-Offset"), u.total)
		}
		if got := resp.Header.Get("Courier-Blob-Digest"); off == u.total && got != "" {
			if got != u.digest {
				return off, false, fmt.Errorf("%w: it published blob %q, not %q", errMediaProtocol, got, u.digest)
			}
			return off, true, nil
		}
		return off, false, nil
	case http.StatusNotFound, http.StatusGone:
		drain(resp)
		return -1, false, errUploadLost
	case http.StatusBadRequest:
		// Finishing the complete upload found the wrong digest.
		e := mediaRefusal(resp, "media: upload")
		return -1, false, fmt.Errorf("%w: %w", ErrMediaDigestRefused, e)
	}
	return -1, false, refused(resp, "media: resume upload")
}

// blobExists asks whether the server has published the blob.
func (u *mediaUpload) blobExists(ctx context.Context) (bool, error) {
	target := u.c.server().httpBase + "/v1/media/blobs/" + u.digest
	resp, err := u.c.mediaDo(ctx, u.hc, http.MethodHead, target, nil, nil, 0)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
		drain(resp)
		return true, nil
	case http.StatusNotFound, http.StatusGone:
		drain(resp)
		return false, nil
	}
	return false, refused(resp, "media: look for the published blob")
}

// patchBody is the body of one PATCH: a piece of the ciphertext. Once
// the request is over, stop waits for a read in progress and refuses more
// (the transport may still read after Do returned), so the next request
// can use the source.
type patchBody struct {
	mu      sync.Mutex
	r       io.Reader
	stopped bool
	sent    int64
	onRead  func(sent int64)
	err     error // the source failed
}

func (b *patchBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return 0, errors.New("media: request over")
	}
	n, err := b.r.Read(p)
	b.sent += int64(n)
	if n > 0 {
		b.onRead(b.sent)
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *patchBody) stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	return b.err
}

// patch sends the piece at offset and returns the server's new offset.
func (u *mediaUpload) patch(ctx context.Context, offset int64) (int64, bool, error) {
	n := u.total - offset
	if u.mc.pieceSize > 0 {
		n = min(n, u.mc.pieceSize)
	}
	src, err := u.src.from(offset)
	if err != nil {
		return offset, false, fmt.Errorf("%w: %w", errLocal, err)
	}
	// The next blocks are encrypted while this one is sent.
	ahead := newAheadReader(src, n)
	defer ahead.Close()
	rctx, guard, release := newStallGuard(ctx, u.mc.stall)
	defer release()
	body := &patchBody{r: ahead, onRead: func(sent int64) {
		if offset+sent == u.total {
			// The server now checks and publishes the whole upload
			// before it answers: that may take minutes.
			guard.extend(mediaFinishWait)
		} else {
			guard.tick()
		}
		u.prog.report(offset + sent)
	}}
	hdr := tusHeader("Upload-Offset", strconv.FormatInt(offset, 10), "Content-Type", "application/offset+octet-stream")
	resp, err := u.c.mediaDo(rctx, u.hc, http.MethodPatch, u.loc, hdr, body, n)
	srcErr := body.stop()
	ahead.Close() // the next request may seek the source
	if srcErr != nil {
		// The source, not the network, failed: resuming cannot help.
		if resp != nil {
			drain(resp)
		}
		if errors.Is(srcErr, ErrMediaSourceChanged) || errors.Is(srcErr, ErrMediaSize) {
			return offset, false, srcErr
		}
		return offset, false, fmt.Errorf("%w: %w", errLocal, srcErr)
	}
	if err != nil {
		if c := context.Cause(rctx); errors.Is(c, errMediaStalled) && ctx.Err() == nil {
			return -1, false, errMediaStalled
		}
		return -1, false, err
	}
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		drain(resp)
		next, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
		if err != nil || next < offset || next > u.total {
			return -1, false, nil // ask with HEAD
		}
		if next == u.total {
			got := resp.Header.Get("Courier-Blob-Digest")
			if got == "" {
				return next, false, nil // see run: offset == total
			}
			if got != u.digest {
				return next, false, fmt.Errorf("%w: it published blob %q, not %q", errMediaProtocol, got, u.digest)
			}
			return next, true, nil
		}
		return next, false, nil
	case http.StatusBadRequest:
		e := mediaRefusal(resp, "media: upload")
		return offset, false, fmt.Errorf("%w: %w", ErrMediaDigestRefused, e)
	case http.StatusNotFound, http.StatusGone:
		drain(resp)
		return -1, false, errUploadLost
	}
	return -1, false, refused(resp, "media: upload")
}

// terminate deletes an abandoned upload (best effort).
func (u *mediaUpload) terminate(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	resp, err := u.c.mediaDo(ctx, u.hc, http.MethodDelete, u.loc, tusHeader(), nil, 0)
	if err == nil {
		drain(resp)
	}
}
