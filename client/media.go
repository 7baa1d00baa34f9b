package client

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Media: photos, voice notes, videos and documents, the way WhatsApp and
// Signal send them. UploadMedia encrypts a file with a fresh key (see
// mediacrypt.go for the exact format) and uploads only the ciphertext, out
// of band, with the tus 1.0 resumable protocol under /v1/media/; the
// server stores it as an opaque blob named by the SHA-256 of the
// ciphertext. SendMedia then sends the key, digest and sizes inside an
// end-to-end encrypted message (MediaContentType); the receiver gets them
// with MediaOf and fetches and decrypts the blob with DownloadMedia.
//
//	ref, err := c.UploadMedia(ctx, f, size, client.WithMediaFileName("a.jpg"),
//		client.WithMediaContentType("image/jpeg"), client.WithMediaThumbnail(thumb))
//	_, err = c.SendMedia(ctx, bobID, ref)
//	...
//	if ref, ok := client.MediaOf(e); ok {
//		err = c.DownloadMedia(ctx, ref, out)
//	}

// MediaContentType is the content type of media messages. Their plaintext
// is the JSON of a MediaRef:
//
//	{"digest":"<64 lowercase hex>","key":"<base64 of 32 bytes>","size":N,
//	 "cipher_size":M,"content_type":"image/jpeg","file_name":"a.jpg",
//	 "thumbnail":"<base64 JPEG>"}
//
// (base64 is standard, padded; thumbnail is left out when there is none;
// unknown fields are ignored). Other clients (web) implement the same.
const MediaContentType = "application/x-courier-media"

// MediaRef names an uploaded, encrypted file: what a media message
// carries. Key is secret: it must only travel end-to-end encrypted.
type MediaRef struct {
	// Digest is the lowercase hex SHA-256 of the ciphertext: the blob's
	// name on the server and its integrity check.
	Digest string `json:"digest"`
	// Key is the file's 32-byte AES-256 key.
	Key []byte `json:"key"`
	// Size is the plaintext size, CipherSize the blob's
	// (MediaCipherSize(Size)).
	Size       int64 `json:"size"`
	CipherSize int64 `json:"cipher_size"`
	// ContentType and FileName describe the file to the receiver only; the
	// server never sees them.
	ContentType string `json:"content_type"`
	FileName    string `json:"file_name"`
	// Thumbnail is an optional small preview (JPEG) carried inline in the
	// encrypted message, not uploaded. The whole message must fit one
	// frame (256 KiB by default; base64 adds a third), so keep it small.
	Thumbnail []byte `json:"thumbnail,omitempty"`
}

// Errors of media uploads and downloads. Server refusals wrap the
// server's *Error as well.
var (
	// ErrMediaCorrupt: a downloaded blob does not have the digest or size
	// its MediaRef names, or a chunk fails authentication. Nothing was
	// written to the destination.
	ErrMediaCorrupt = errors.New("media: corrupt or tampered file (digest or authentication mismatch)")
	// ErrMediaSourceChanged: the file being uploaded did not read the same
	// when read again to resume, so the upload was abandoned (nothing
	// encrypted differently under the same key was sent).
	ErrMediaSourceChanged = errors.New("media: the file changed while it was being uploaded")
	// ErrMediaDigestRefused: the server received bytes whose SHA-256 is not
	// the declared digest and published nothing.
	ErrMediaDigestRefused = errors.New("media: the server refused the upload: its SHA-256 is not the declared digest")
	// ErrMediaNotFound: the server has no blob of that digest (never
	// uploaded, or expired).
	ErrMediaNotFound = errors.New("media: no such file on the server (unknown or expired)")
	// ErrMediaTooLarge: the file is larger than the server takes.
	ErrMediaTooLarge = errors.New("media: file larger than the server takes")
	// ErrMediaQuota: the user's upload quota is used up; see
	// MediaRetryAfter for when to try again.
	ErrMediaQuota = errors.New("media: upload quota exceeded")
	// ErrMediaRef: a MediaRef that is malformed (not what UploadMedia
	// returns).
	ErrMediaRef = errors.New("media: malformed media reference")
	// ErrMediaNeedsE2EE: SendMedia and SendGroupMedia need a Client with
	// WithE2EE, or the file's key would reach the server in the clear.
	ErrMediaNeedsE2EE = errors.New("media: sending media needs end-to-end encryption (WithE2EE): the key must not reach the server")
)

// Defaults of the media options.
const (
	DefaultMediaPieceSize    = 8 << 20
	DefaultMediaStallTimeout = 30 * time.Second
	// mediaRetryAfterCap: a 429 asking to wait longer than this is
	// returned (a quota) rather than waited for (a rate limit).
	mediaRetryAfterCap = time.Minute
	// mediaMaxAuthFailures bounds consecutive 401s (each with a fresh token).
	mediaMaxAuthFailures = 3
	// mediaMaxRecreate bounds how often an upload the server lost is
	// created again.
	mediaMaxRecreate = 3
	// mediaFinishWait is how long the server may take to check and
	// publish a complete upload (reading it back from an object store)
	// before it answers the last PATCH; the SDK waits that long for the
	// answer, and as long for a complete upload to be published before it
	// uploads again.
	mediaFinishWait = 11 * time.Minute
)

// MediaOption adjusts one UploadMedia or DownloadMedia.
type MediaOption func(*mediaConfig)

type mediaConfig struct {
	progress    func(done, total int64)
	contentType string
	fileName    string
	thumbnail   []byte
	pieceSize   int64
	tempDir     string
	stall       time.Duration
}

// WithMediaProgress calls fn as the transfer advances: done is how many
// ciphertext bytes were sent (upload) or received (download), total the
// ciphertext size (MediaRef.CipherSize). Calls never overlap, done never
// decreases (after a resume from an earlier offset fn is quiet until the
// transfer passes the last figure), and a successful transfer ends with
// done == total. fn runs on the transfer's goroutines: keep it quick.
func WithMediaProgress(fn func(done, total int64)) MediaOption {
	return func(c *mediaConfig) { c.progress = fn }
}

// WithMediaContentType sets MediaRef.ContentType (e.g. "image/jpeg";
// UploadMedia only, like WithMediaFileName and WithMediaThumbnail).
func WithMediaContentType(ct string) MediaOption {
	return func(c *mediaConfig) { c.contentType = ct }
}

// WithMediaFileName sets MediaRef.FileName.
func WithMediaFileName(name string) MediaOption {
	return func(c *mediaConfig) { c.fileName = name }
}

// WithMediaThumbnail sets MediaRef.Thumbnail: a small JPEG preview that
// travels inside the encrypted message.
func WithMediaThumbnail(jpeg []byte) MediaOption {
	return func(c *mediaConfig) { c.thumbnail = slices.Clone(jpeg) }
}

// WithMediaPieceSize sets how many bytes one upload request (PATCH)
// carries at most (default 8 MiB); 0 or less sends the rest of the file
// in one request.
func WithMediaPieceSize(n int64) MediaOption {
	return func(c *mediaConfig) { c.pieceSize = n }
}

// WithMediaTempDir sets where UploadMedia spools the ciphertext of a
// non-seekable reader and DownloadMedia keeps the ciphertext until it is
// verified (default os.TempDir()). Only ciphertext is ever written there.
func WithMediaTempDir(dir string) MediaOption {
	return func(c *mediaConfig) { c.tempDir = dir }
}

// WithMediaStallTimeout sets how long a transfer may make no progress
// before its request is abandoned and resumed (default 30s). Once the last
// byte of an upload is sent the SDK waits longer (11 minutes) for the
// answer: the server reads the whole upload back to check its digest and
// publish it before it answers.
func WithMediaStallTimeout(d time.Duration) MediaOption {
	return func(c *mediaConfig) { c.stall = d }
}

func mediaOptions(opts []MediaOption) mediaConfig {
	c := mediaConfig{pieceSize: DefaultMediaPieceSize, stall: DefaultMediaStallTimeout}
	for _, o := range opts {
		o(&c)
	}
	if c.stall <= 0 {
		c.stall = DefaultMediaStallTimeout
	}
	return c
}

// MediaRetryAfter returns how long the server asked to wait, for an
// ErrMediaQuota error.
func MediaRetryAfter(err error) (time.Duration, bool) {
	var e *mediaRetryError
	if errors.As(err, &e) {
		return e.after, true
	}
	return 0, false
}

type mediaRetryError struct {
	after time.Duration
	err   error
}

func (e *mediaRetryError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.err, e.after)
}
func (e *mediaRetryError) Unwrap() error { return e.err }

// MediaOf returns the media reference a media message carries (an entry
// of content type MediaContentType whose Plaintext is a well-formed
// MediaRef), for direct, group and sent-transcript entries alike.
func MediaOf(e Entry) (MediaRef, bool) {
	if e.ContentType != MediaContentType || e.Plaintext == nil || e.DecryptErr != nil {
		return MediaRef{}, false
	}
	var ref MediaRef
	if err := json.Unmarshal(e.Plaintext, &ref); err != nil {
		return MediaRef{}, false
	}
	if ref.validate() != nil {
		return MediaRef{}, false
	}
	return ref, true
}

// validate checks the parts of r a download depends on.
func (r MediaRef) validate() error {
	if len(r.Digest) != 2*sha256.Size || strings.ToLower(r.Digest) != r.Digest {
		return fmt.Errorf("%w: digest %q is not a lowercase hex SHA-256", ErrMediaRef, r.Digest)
	}
	if _, err := hex.DecodeString(r.Digest); err != nil {
		return fmt.Errorf("%w: digest %q is not a lowercase hex SHA-256", ErrMediaRef, r.Digest)
	}
	if len(r.Key) != mediaKeySize {
		return fmt.Errorf("%w: key is %d bytes, want %d", ErrMediaRef, len(r.Key), mediaKeySize)
	}
	if r.Size < 0 || MediaCipherSize(r.Size) < 0 || r.CipherSize != MediaCipherSize(r.Size) {
		return fmt.Errorf("%w: sizes %d (plain) and %d (cipher) do not match", ErrMediaRef, r.Size, r.CipherSize)
	}
	return nil
}

func encodeMediaRef(ref MediaRef) ([]byte, error) {
	if err := ref.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(ref)
}

// SendMedia sends ref to toUserID as an end-to-end encrypted media
// message (content type MediaContentType), like Send. It needs WithE2EE.
func (c *Client) SendMedia(ctx context.Context, toUserID string, ref MediaRef, opts ...SendOption) (SendResult, error) {
	if c.enc == nil {
		return SendResult{}, ErrMediaNeedsE2EE
	}
	body, err := encodeMediaRef(ref)
	if err != nil {
		return SendResult{}, err
	}
	return c.Send(ctx, toUserID, body, append(slices.Clip(opts), WithContentType(MediaContentType))...)
}

// SendGroupMedia sends ref to a group as an end-to-end encrypted media
// message, like SendGroup. It needs WithE2EE.
func (c *Client) SendGroupMedia(ctx context.Context, groupID string, ref MediaRef, opts ...GroupSendOption) (SendResult, error) {
	if c.enc == nil {
		return SendResult{}, ErrMediaNeedsE2EE
	}
	body, err := encodeMediaRef(ref)
	if err != nil {
		return SendResult{}, err
	}
	return c.SendGroup(ctx, groupID, body, append(slices.Clip(opts), WithGroupContentType(MediaContentType))...)
}

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

// mediaContext ends with ctx or when the Client closes.
func (c *Client) mediaContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := func() bool { return false }
	if c.ctx != nil {
		stop = context.AfterFunc(c.ctx, func() { cancel(ErrClosed) })
	}
	return ctx, func() { stop(); cancel(nil) }
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

// mediaProgress serializes progress calls and keeps them monotone.
type mediaProgress struct {
	mu    sync.Mutex
	fn    func(done, total int64)
	total int64
	last  int64
}

func newMediaProgress(fn func(done, total int64), total int64) *mediaProgress {
	return &mediaProgress{fn: fn, total: total, last: -1}
}

func (p *mediaProgress) report(done int64) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	done = min(done, p.total)
	if done > p.last {
		p.last = done
		p.fn(done, p.total)
	}
}

// mediaHTTP is the HTTP client of media transfers: the Client's, without
// an overall timeout (a large file takes long; stalls are caught instead).
func (c *Client) mediaHTTP() *http.Client {
	hc := *c.cfg.httpClient
	hc.Timeout = 0
	return &hc
}

// mediaDo sends one authenticated request. A 401 drops the token so the
// next request fetches a new one.
func (c *Client) mediaDo(ctx context.Context, hc *http.Client, method, u string, hdr http.Header, body io.Reader, n int64) (*http.Response, error) {
	srv := c.server()
	tok, err := c.tokens.get(ctx, srv.httpBase)
	if err != nil {
		if transportErr(err) {
			c.failOver(srv)
		}
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	copyHeader(req.Header, hdr)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		c.tokens.invalidate(tok)
	}
	return resp, nil
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

func tusHeader(kv ...string) http.Header {
	h := http.Header{"Tus-Resumable": {"1.0.0"}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// drain reads a little of a response body so the connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// mediaRefusal turns a non-success answer into an error (reading its body).
func mediaRefusal(resp *http.Response, what string) error {
	e := errorFromHTTP(resp)
	_ = resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%s: %w: %w", what, ErrMediaTooLarge, e)
	case http.StatusTooManyRequests:
		return &mediaRetryError{after: retryAfter(resp), err: fmt.Errorf("%s: %w: %w", what, ErrMediaQuota, e)}
	case http.StatusNotFound, http.StatusGone:
		return fmt.Errorf("%s: %w: %w", what, ErrMediaNotFound, e)
	}
	return fmt.Errorf("%s: %w", what, e)
}

// retryAfter reads Retry-After (seconds or an HTTP date); 0 when absent.
func retryAfter(resp *http.Response) time.Duration {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// transient: an answer worth retrying after a pause (resuming from the
// server's offset).
func transient(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusLocked || status == http.StatusConflict
}

// stallGuard cancels a request that makes no progress for a while.
type stallGuard struct {
	t *time.Timer
	d time.Duration
}

var errMediaStalled = errors.New("media: transfer stalled")

func newStallGuard(ctx context.Context, d time.Duration) (context.Context, *stallGuard, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	g := &stallGuard{d: d}
	g.t = time.AfterFunc(d, func() { cancel(errMediaStalled) })
	return ctx, g, func() { g.t.Stop(); cancel(nil) }
}

func (g *stallGuard) tick() { g.t.Reset(g.d) }

// extend gives the request d from now, and from then on.
func (g *stallGuard) extend(d time.Duration) {
	g.d = max(g.d, d)
	g.t.Reset(g.d)
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

// statusErr is an HTTP answer the upload loop decides about.
type statusErr struct {
	code int
	resp *http.Response // body closed
	err  error
}

func (e *statusErr) Error() string { return e.err.Error() }
func (e *statusErr) Unwrap() error { return e.err }

func refused(resp *http.Response, what string) error {
	return &statusErr{code: resp.StatusCode, resp: resp, err: mediaRefusal(resp, what)}
}

// retryableTransport: err is a network failure (or a stall), not our
// context ending or a local failure (reading the file).
func retryableTransport(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if errors.Is(err, ErrMediaSourceChanged) || errors.Is(err, ErrMediaSize) || errors.Is(err, errLocal) ||
		errors.Is(err, errMediaProtocol) || errors.Is(err, ErrMediaDigestRefused) {
		return false
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.Retryable
	}
	return true
}

// errLocal marks failures of the local side (the source file).
var errLocal = errors.New("media: local failure")

// errMediaProtocol: the server answered something the protocol does not
// allow; retrying would not help.
var errMediaProtocol = errors.New("media: the server broke the protocol")

func mediaCtxErr(ctx context.Context, last error) error {
	err := context.Cause(ctx)
	if last != nil {
		return fmt.Errorf("media: %w (last error: %w)", err, last)
	}
	return fmt.Errorf("media: %w", err)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
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

// DownloadMedia fetches the blob ref names, checks it and writes the
// plaintext to w. The ciphertext is first downloaded into a temporary file
// (WithMediaTempDir; removed before DownloadMedia returns), resuming with
// a Range request after a dropped connection or server error, with
// backoff, until ctx ends. Its SHA-256 and every chunk's tag are computed
// as the bytes arrive (on another goroutine; a resume continues them, a
// server that answers a resume with the whole blob starts them over); once
// the last byte is in, the size, digest and tags are checked against ref,
// and only then is the file decrypted into w, in one pass: a blob that
// fails any check is ErrMediaCorrupt and not a byte reaches w. An unknown
// or expired blob is ErrMediaNotFound.
func (c *Client) DownloadMedia(ctx context.Context, ref MediaRef, w io.Writer, opts ...MediaOption) error {
	if err := ref.validate(); err != nil {
		return err
	}
	mc := mediaOptions(opts)
	aead, err := newMediaAEAD(ref.Key)
	if err != nil {
		return err
	}
	ctx, cancel := c.mediaContext(ctx)
	defer cancel()
	f, err := os.CreateTemp(mc.tempDir, "courier-media-down-*.enc")
	if err != nil {
		return fmt.Errorf("media: temporary file: %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	// The ciphertext is hashed and its chunks authenticated as it arrives,
	// on another goroutine; after the last byte one pass remains.
	if err := preallocSpool(f, ref.CipherSize); err != nil {
		return fmt.Errorf("%w: %w", errLocal, err)
	}
	ver := startVerifier(newChunkVerifier(aead, ref.CipherSize))
	defer ver.wait()
	d := &mediaDownload{c: c, mc: mc, ref: ref, f: f, ver: ver, prog: newMediaProgress(mc.progress, ref.CipherSize), hc: c.mediaHTTP()}
	if err := d.run(ctx); err != nil {
		return err
	}
	// The digest proves the bytes are the sender's, the tags that the
	// sender's key sealed them in this order: both are checked before the
	// first plaintext byte goes out.
	if err := ver.wait().check(ref.Digest); err != nil {
		return err
	}
	n, err := decryptSpool(ctx, aead, f, ref.CipherSize, w)
	if err != nil {
		return err
	}
	if n != ref.Size {
		return fmt.Errorf("media: wrote %d of %d bytes", n, ref.Size)
	}
	return nil
}

// ctxReader stops a long local read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func newCtxReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, context.Cause(r.ctx)
	}
	return r.r.Read(p)
}

// mediaDownload is one DownloadMedia's transfer into f.
type mediaDownload struct {
	c    *Client
	mc   mediaConfig
	ref  MediaRef
	f    *os.File
	ver  *asyncVerifier // has been handed exactly f's contents
	got  int64          // bytes in f
	prog *mediaProgress
	hc   *http.Client
}

func (d *mediaDownload) restart() error {
	if err := d.f.Truncate(0); err != nil {
		return err
	}
	if _, err := d.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	d.ver.reset()
	d.got = 0
	return preallocSpool(d.f, d.ref.CipherSize)
}

func (d *mediaDownload) run(ctx context.Context) error {
	b := backoff{min: d.c.cfg.minBackoff, max: d.c.cfg.maxBackoff}
	d.prog.report(0)
	attempt, authFails := 0, 0
	var last error
	for {
		if d.got == d.ref.CipherSize {
			d.prog.report(d.got)
			return nil
		}
		if ctx.Err() != nil {
			return mediaCtxErr(ctx, last)
		}
		before := d.got
		err := d.fetch(ctx)
		if err == nil {
			continue
		}
		last = err
		if ctx.Err() != nil {
			return mediaCtxErr(ctx, last)
		}
		var status *statusErr
		switch {
		case errors.As(err, &status) && status.code == http.StatusUnauthorized:
			authFails++
			if authFails >= mediaMaxAuthFailures {
				return status.err
			}
			continue
		case errors.As(err, &status) && status.code == http.StatusTooManyRequests:
			wait := retryAfter(status.resp)
			if wait > mediaRetryAfterCap {
				return status.err
			}
			if !sleepCtx(ctx, max(wait, b.delay(attempt))) {
				return mediaCtxErr(ctx, last)
			}
			attempt++
			continue
		case errors.As(err, &status) && transient(status.code) && status.code != http.StatusConflict:
		case errors.As(err, &status):
			return status.err
		case errors.Is(err, ErrMediaCorrupt) || errors.Is(err, ErrMediaNotFound) || errors.Is(err, errLocal):
			return err
		}
		authFails = 0
		if d.got > before {
			attempt = 0
		}
		d.c.log.Debug("media download: retrying", "err", err, "have", d.got, "attempt", attempt)
		if !sleepCtx(ctx, b.delay(attempt)) {
			return mediaCtxErr(ctx, last)
		}
		attempt++
	}
}

// fetch makes one GET from d.got on and appends what arrives to f.
func (d *mediaDownload) fetch(ctx context.Context) error {
	srv := d.c.server()
	target := srv.httpBase + "/v1/media/blobs/" + d.ref.Digest
	hdr := http.Header{}
	if d.got > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(d.got, 10)+"-")
	}
	rctx, guard, release := newStallGuard(ctx, d.mc.stall)
	defer release()
	resp, err := d.c.mediaDo(rctx, d.hc, http.MethodGet, target, hdr, nil, 0)
	if err != nil {
		if transportErr(err) {
			d.c.failOver(srv)
		}
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if d.got > 0 {
			// The server ignored the range: take the whole blob again.
			if err := d.restart(); err != nil {
				return fmt.Errorf("%w: %w", errLocal, err)
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != d.ref.CipherSize {
			return fmt.Errorf("%w: the server's blob is %d bytes, the reference says %d", ErrMediaCorrupt, resp.ContentLength, d.ref.CipherSize)
		}
	case http.StatusPartialContent:
		start, size, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.got {
			return fmt.Errorf("media: the server answered range %q to a request from byte %d", resp.Header.Get("Content-Range"), d.got)
		}
		if size >= 0 && size != d.ref.CipherSize {
			return fmt.Errorf("%w: the server's blob is %d bytes, the reference says %d", ErrMediaCorrupt, size, d.ref.CipherSize)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// We asked from past the end: what we have is not this blob.
		_ = d.restart()
		return fmt.Errorf("%w: the server's blob is shorter than the reference says", ErrMediaCorrupt)
	case http.StatusNotFound, http.StatusGone:
		return fmt.Errorf("%w: %s: %w", ErrMediaNotFound, d.ref.Digest, errorFromHTTP(resp))
	default:
		return refused(resp, "media: download")
	}
	for {
		// At most one byte past the end: enough to tell a longer blob.
		buf := d.ver.block()
		buf = buf[:min(int64(len(buf)), d.ref.CipherSize-d.got+1)]
		n, rerr := 0, error(nil)
		for n < len(buf) && rerr == nil {
			var k int
			k, rerr = resp.Body.Read(buf[n:])
			n += k
			if k > 0 {
				guard.tick()
			}
		}
		if n == 0 {
			d.ver.release(buf)
		} else {
			if d.got+int64(n) > d.ref.CipherSize {
				d.ver.release(buf)
				return fmt.Errorf("%w: the server's blob is longer than the reference says", ErrMediaCorrupt)
			}
			if _, err := d.f.Write(buf[:n]); err != nil {
				d.ver.release(buf)
				return fmt.Errorf("%w: %w", errLocal, err)
			}
			d.ver.submit(buf[:n])
			d.got += int64(n)
			d.prog.report(d.got)
		}
		if rerr == io.EOF {
			if d.got != d.ref.CipherSize {
				return fmt.Errorf("media: the download ended at byte %d of %d", d.got, d.ref.CipherSize)
			}
			return nil
		}
		if rerr != nil {
			if c := context.Cause(rctx); errors.Is(c, errMediaStalled) && ctx.Err() == nil {
				return errMediaStalled
			}
			return rerr
		}
	}
}

// contentRange parses "bytes a-b/n" (n may be "*": -1).
func contentRange(v string) (start, size int64, ok bool) {
	v, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, total, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	size = -1
	if total != "*" {
		if size, err = strconv.ParseInt(total, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, size, true
}
