package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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
