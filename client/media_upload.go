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
	"hash"
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
// When r is an io.ReadSeeker (a file), the upload declares the
// ciphertext's SHA-256 only at its end (a deferred digest: a fresh key
// makes a ciphertext no existing blob shares, so there is nothing to look
// up first): the file is encrypted and hashed in one pass as it is sent,
// keeping 16 bytes per 64 KiB (the chunks' tags) to check that what is
// encrypted again (a resume seeks back; the last piece, at most 8 MiB, is
// hashed before its PATCH and then sent) has not changed. Any other reader
// is encrypted once into a temporary file (ciphertext only,
// WithMediaTempDir, removed before UploadMedia returns) and the upload
// declares its digest at creation. While a piece goes up, encryption runs
// on a goroutine of its own a few MiB ahead of the network. The file is
// never held in memory. r must
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
// an object store), asking again (HEAD) if the answer is lost (a
// deferred-digest upload is told its digest again by an empty PATCH), and
// never uploads a complete file again unless the server still has not
// published it after 11 minutes. When the digest is declared at creation
// (a spooled upload) and the server already has that blob, nothing is
// uploaded. An upload that fails for good is deleted from the server.
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
			src = newSeekSource(ctx, aead, rs, start, size)
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
		Key:         key,
		Size:        size,
		CipherSize:  total,
		ContentType: mc.contentType,
		FileName:    mc.fileName,
		Thumbnail:   mc.thumbnail,
	}
	up := &mediaUpload{c: c, mc: mc, src: src, deferred: src.digest() == "", total: total, prog: newMediaProgress(mc.progress, total)}
	if err := up.run(ctx); err != nil {
		return MediaRef{}, err
	}
	ref.Digest = src.digest()
	return ref, nil
}

// mediaPrecheckSize: uploads of this much ciphertext or more ask the
// server's size limit before reading the file.
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
	// digest is the ciphertext's SHA-256, "" until prepare hashed it all
	// (a deferred digest).
	digest() string
	// prepare readies the source for a PATCH at off; final: that PATCH
	// completes the upload (the digest is known after it).
	prepare(off int64, final bool) error
	from(off int64) (io.Reader, error)
}

// seekSource encrypts the file from any offset, seeking to the chunk that
// holds it, and hashes the ciphertext as it first goes out: its digest is
// known once the last piece is prepared (a deferred digest), after one
// pass over the file (the last piece is read twice: hashed, then sent).
//
// It keeps each chunk's tag as the chunk is first sealed: a chunk sealed
// again (a resume, the last piece sent after it was hashed) must match, so
// the bytes sent are the bytes the digest covers (ErrMediaSourceChanged
// otherwise). Because of that, bytes hashed but not kept by the server (a
// dropped PATCH, a restart that lost some) need no hashing again: the
// resume re-sends them, checked against their tags, and hashes only from
// where the hash stopped.
type seekSource struct {
	ctx   context.Context
	aead  cipher.AEAD
	rs    io.ReadSeeker
	start int64
	size  int64
	total int64
	tags  []byte

	h      hash.Hash // the SHA-256 of the first hashed bytes of the ciphertext
	hashed int64
	dig    string // once every byte was hashed
}

func newSeekSource(ctx context.Context, aead cipher.AEAD, rs io.ReadSeeker, start, size int64) *seekSource {
	return &seekSource{ctx: ctx, aead: aead, rs: rs, start: start, size: size, total: MediaCipherSize(size), h: sha256.New(),
		tags: make([]byte, 0, mediaChunks(size)*mediaTagSize)}
}

func (s *seekSource) digest() string { return s.dig }

// prepare readies a PATCH at off: the hash must cover at least the bytes
// before off (the PATCH hashes what it sends beyond them), or, when final
// (the PATCH completes the upload and must declare the digest), the whole
// ciphertext: what is missing is encrypted and hashed here, not sent.
func (s *seekSource) prepare(off int64, final bool) error {
	if s.dig != "" {
		return nil
	}
	to := off
	if final {
		to = s.total
	}
	if s.hashed < to {
		enc, err := s.encrypter(newCtxReader(s.ctx, s.rs), s.hashed)
		if err != nil {
			return err
		}
		var n int64
		if final {
			// To the end: the encrypter checks that the file ends there.
			n, err = io.Copy(s.h, enc)
		} else {
			n, err = io.CopyN(s.h, enc, to-s.hashed)
		}
		s.hashed += n
		if err != nil {
			return err
		}
		if s.hashed != to {
			return fmt.Errorf("%w: its ciphertext ended at byte %d of %d", ErrMediaSize, s.hashed, s.total)
		}
	}
	if final {
		s.dig = hex.EncodeToString(s.h.Sum(nil))
	}
	return nil
}

// encrypter seeks to the chunk that holds ciphertext offset off and
// encrypts from there, skipping to off.
func (s *seekSource) encrypter(r io.Reader, off int64) (*mediaEncrypter, error) {
	chunk := off / mediaSealedChunk
	if _, err := s.rs.Seek(s.start+chunk*MediaChunkSize, io.SeekStart); err != nil {
		return nil, fmt.Errorf("media: seek back to resume: %w", err)
	}
	enc := newMediaEncrypter(s.aead, r, s.size, chunk, off%mediaSealedChunk)
	enc.tags = &s.tags
	return enc, nil
}

// from is the ciphertext from off, which prepare readied. Until the digest
// is known, the bytes beyond those hashed are hashed as they are read (on
// the reader's goroutine; the caller stops it before the next prepare).
func (s *seekSource) from(off int64) (io.Reader, error) {
	enc, err := s.encrypter(s.rs, off)
	if err != nil {
		return nil, err
	}
	if s.dig != "" {
		return enc, nil
	}
	return &hashingReader{r: enc, s: s, skip: s.hashed - off}, nil
}

// hashingReader hashes what it reads, after skip bytes, into its
// source's hash.
type hashingReader struct {
	r    io.Reader
	s    *seekSource
	skip int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	b := p[:n]
	if h.skip > 0 {
		k := min(h.skip, int64(len(b)))
		h.skip -= k
		b = b[k:]
	}
	if len(b) > 0 {
		h.s.h.Write(b)
		h.s.hashed += int64(len(b))
	}
	return n, err
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

func (s *spoolSource) prepare(int64, bool) error { return nil }

func (s *spoolSource) from(off int64) (io.Reader, error) {
	return io.NewSectionReader(s.f, off, s.n-off), nil
}

func (s *spoolSource) close() {
	_ = s.f.Close()
	_ = os.Remove(s.f.Name())
}

// mediaUpload is one UploadMedia's transfer.
type mediaUpload struct {
	c   *Client
	mc  mediaConfig
	src cipherSource
	// deferred: the digest is declared by the PATCH that completes the
	// upload, not at creation.
	deferred bool
	// sentAll: a PATCH sent the last byte (the server may have published
	// the blob and dropped the upload without our hearing of it).
	sentAll bool
	total   int64
	prog    *mediaProgress
	hc      *http.Client

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
			if u.deferred {
				// Nobody declared its digest yet (the server stopped
				// between the last byte and the check): an empty PATCH
				// with it finishes the upload.
				done, err = u.finishDeferred(ctx)
				offset = -1
				break
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
		case errors.Is(err, errUploadLost) && (!completeAt.IsZero() || u.sentAll):
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
	target := u.createURL()
	hdr := tusHeader("Upload-Length", strconv.FormatInt(u.total, 10))
	if !u.deferred {
		hdr.Set("Upload-Metadata", "sha256 "+base64.StdEncoding.EncodeToString([]byte(u.src.digest())))
	}
	resp, err := u.c.mediaDo(ctx, u.hc, http.MethodPost, target, hdr, http.NoBody, 0)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		drain(resp)
		if got := resp.Header.Get("Courier-Blob-Digest"); u.deferred || got != u.src.digest() {
			return false, fmt.Errorf("%w: it answered for blob %q, not %q", errMediaProtocol, got, u.src.digest())
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
			if err := u.src.prepare(u.total, true); err != nil {
				return off, false, localErr(err)
			}
			if got != u.src.digest() {
				return off, false, fmt.Errorf("%w: it published blob %q, not %q", errMediaProtocol, got, u.src.digest())
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
	if u.src.digest() == "" {
		return false, nil // never hashed to the end: never sent it all
	}
	target := u.c.server().httpBase + "/v1/media/blobs/" + u.src.digest()
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
	if u.deferred && offset+n == u.total && n > mediaFinalPiece {
		// The PATCH that completes the upload declares the digest, so
		// its bytes are hashed before it is sent: keep it small.
		n -= mediaFinalPiece
	}
	final := offset+n == u.total
	if err := u.src.prepare(offset, final); err != nil {
		return offset, false, localErr(err)
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
	if u.deferred && final {
		hdr.Set("Courier-Blob-Digest", u.src.digest())
	}
	resp, err := u.c.mediaDo(rctx, u.hc, http.MethodPatch, u.loc, hdr, body, n)
	srcErr := body.stop()
	if offset+body.sent == u.total {
		u.sentAll = true
	}
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
			if got != u.src.digest() {
				return next, false, fmt.Errorf("%w: it published blob %q, not %q", errMediaProtocol, got, u.src.digest())
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

// mediaFinalPiece is the most a PATCH that completes a deferred-digest
// upload sends: its bytes are encrypted and hashed once more before it.
const mediaFinalPiece = DefaultMediaPieceSize

// localErr marks a failure of the source: ErrMediaSourceChanged and
// ErrMediaSize as they are, others as errLocal.
func localErr(err error) error {
	if errors.Is(err, ErrMediaSourceChanged) || errors.Is(err, ErrMediaSize) {
		return err
	}
	return fmt.Errorf("%w: %w", errLocal, err)
}

// finishDeferred finishes a complete deferred-digest upload: an empty
// PATCH at its final offset declaring the digest. done: the server named
// the published blob.
func (u *mediaUpload) finishDeferred(ctx context.Context) (bool, error) {
	if err := u.src.prepare(u.total, true); err != nil {
		return false, localErr(err)
	}
	dig := u.src.digest()
	hdr := tusHeader("Upload-Offset", strconv.FormatInt(u.total, 10), "Content-Type", "application/offset+octet-stream",
		"Courier-Blob-Digest", dig)
	resp, err := u.c.mediaDo(ctx, u.hc, http.MethodPatch, u.loc, hdr, http.NoBody, 0)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		drain(resp)
		got := resp.Header.Get("Courier-Blob-Digest")
		if got == "" {
			return false, errNotPublished
		}
		if got != dig {
			return false, fmt.Errorf("%w: it published blob %q, not %q", errMediaProtocol, got, dig)
		}
		return true, nil
	case http.StatusBadRequest:
		e := mediaRefusal(resp, "media: upload")
		return false, fmt.Errorf("%w: %w", ErrMediaDigestRefused, e)
	case http.StatusNotFound, http.StatusGone:
		drain(resp)
		return false, errUploadLost
	}
	return false, refused(resp, "media: finish upload")
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
