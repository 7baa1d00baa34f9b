package media

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/s3store"
)

// S3Config names the S3-compatible bucket an S3Store keeps uploads and
// blobs in. Every node of a cluster names the same bucket, so any gateway
// serves any blob.
type S3Config struct {
	// Endpoint is the server's base URL (http://127.0.0.1:9000 for MinIO);
	// empty means AWS S3 itself.
	Endpoint string
	// Bucket must exist.
	Bucket string
	// Region signs the requests (default us-east-1).
	Region string
	// AccessKey and SecretKey are static credentials; when both are
	// empty the SDK's default chain (AWS_* variables, shared config,
	// instance role) finds them.
	AccessKey, SecretKey string
	// PathStyle addresses the bucket as Endpoint/bucket/key rather than
	// bucket.host/key. MinIO, SeaweedFS and most servers that are not AWS
	// need it.
	PathStyle bool
	// TempDir is where tusd's s3store buffers parts on disk before it
	// sends them (default os.TempDir()).
	TempDir string
	// CopyPartSize is the largest blob published with one server-side
	// CopyObject; larger ones are copied in parts of this size (default
	// and maximum 5 GiB, S3's limit of one copy; minimum 5 MiB).
	CopyPartSize int64
}

const (
	s3UploadPrefix = "uploads/"
	s3BlobPrefix   = "blobs/"
	s3MaxCopy      = 5 << 30
	s3MinPart      = 5 << 20
	// s3Timeout bounds the bucket check of NewS3Store.
	s3Timeout = 10 * time.Second
)

// S3Store keeps uploads in progress and published blobs in one bucket of
// an S3-compatible object store.
//
//   - An upload in progress is tusd's s3store: a multipart upload of
//     uploads/<id>, its info in uploads/<id>.info and a short tail part in
//     uploads/<id>.part. Parts are buffered in TempDir, never in memory.
//     tusd's s3store names an upload "<object id>+<multipart id>"; S3Store
//     shows tusd (and the client, in the upload's URL) the object id only,
//     32 hex digits like the local store's, and finds the multipart id in
//     the upload's info.
//   - A published blob is the object blobs/<digest>. Publishing copies the
//     finished upload's object server-side (no byte passes through the
//     node; in parts above CopyPartSize) and deletes the upload.
//   - Reads are ranged GETs; Delete is a DeleteObject.
type S3Store struct {
	client   *s3.Client
	bucket   string
	tempDir  string
	copyPart int64

	// multipart caches the multipart id of upload ids this node has seen;
	// a miss reads the upload's info object.
	mu        sync.Mutex
	multipart map[string]string
}

// NewS3Store connects to cfg's bucket and checks that it exists and the
// credentials reach it.
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("media: S3 needs a bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, errors.New("media: S3 needs both an access key and a secret key, or neither")
	}
	if cfg.CopyPartSize == 0 || cfg.CopyPartSize > s3MaxCopy {
		cfg.CopyPartSize = s3MaxCopy
	}
	if cfg.CopyPartSize < s3MinPart {
		return nil, fmt.Errorf("media: S3 copy part size %d is below S3's minimum part size of 5 MiB", cfg.CopyPartSize)
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region)}
	if cfg.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	acfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("media: S3 configuration: %w", err)
	}
	client := s3.NewFromConfig(acfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		// Ranged GETs carry no whole-object checksum to validate; the
		// service checks the blob's SHA-256 when it is published.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	s := &S3Store{client: client, bucket: cfg.Bucket, tempDir: cfg.TempDir, copyPart: cfg.CopyPartSize, multipart: map[string]string{}}
	hctx, cancel := context.WithTimeout(ctx, s3Timeout)
	defer cancel()
	if _, err := client.HeadBucket(hctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		where := cfg.Endpoint
		if where == "" {
			where = "AWS S3"
		}
		return nil, fmt.Errorf("media: S3 bucket %q at %s: %w", cfg.Bucket, where, err)
	}
	return s, nil
}

// UseIn installs tusd's s3store, behind S3Store's upload ids, as tusd's
// core and terminater. Unlike LocalStore it keeps no incremental hash
// state (hashstate.go says why): finish reads an S3 upload back to hash it.
func (s *S3Store) UseIn(c *handler.StoreComposer) {
	inner := s3store.New(s.bucket, s.client)
	inner.ObjectPrefix = s3UploadPrefix
	inner.TemporaryDirectory = s.tempDir
	u := &s3Uploads{s: s, inner: inner}
	c.UseCore(u)
	c.UseTerminater(u)
}

func (s *S3Store) uploadKey(id string) string   { return s3UploadPrefix + id }
func (s *S3Store) blobKey(digest string) string { return s3BlobPrefix + digest }

// ListUploads lists the uploads that have an info object.
func (s *S3Store) ListUploads(ctx context.Context) ([]string, error) {
	var ids []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s3UploadPrefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("media: list uploads: %w", err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(o.Key), s3UploadPrefix)
			if id, ok := strings.CutSuffix(name, ".info"); ok && validUploadID(id) {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// Publish copies uploads/<uploadID> to blobs/<digest> server-side, without
// the upload's metadata, then deletes the upload's objects. S3 acknowledges
// a copy once it is durable. Two uploads of one digest publishing at once
// both copy the same bytes; the second copy replaces the first.
func (s *S3Store) Publish(ctx context.Context, uploadID, digest string) error {
	if !validUploadID(uploadID) || !ValidDigest(digest) {
		return fmt.Errorf("media: publish %q as %q: bad name", uploadID, digest)
	}
	if _, err := s.Stat(ctx, digest); err == nil {
		return errors.Join(ErrBlobExists, s.deleteUpload(ctx, uploadID))
	} else if !errors.Is(err, ErrBlobNotFound) {
		return err
	}
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.uploadKey(uploadID))})
	if err != nil {
		if s3NotFound(err) {
			return fmt.Errorf("media: publish: upload %s has no finished object", uploadID)
		}
		return fmt.Errorf("media: publish: %w", err)
	}
	size := aws.ToInt64(head.ContentLength)
	src := url.PathEscape(s.bucket) + "/" + s.uploadKey(uploadID)
	if size <= s.copyPart {
		_, err = s.client.CopyObject(ctx, &s3.CopyObjectInput{
			Bucket:            aws.String(s.bucket),
			Key:               aws.String(s.blobKey(digest)),
			CopySource:        aws.String(src),
			CopySourceIfMatch: head.ETag,
			MetadataDirective: types.MetadataDirectiveReplace,
			ContentType:       aws.String("application/octet-stream"),
		})
	} else {
		err = s.copyInParts(ctx, src, head.ETag, size, s.blobKey(digest))
	}
	if err != nil {
		return fmt.Errorf("media: publish %s: copy: %w", digest, err)
	}
	return s.deleteUpload(ctx, uploadID)
}

// copyInParts copies an object larger than one CopyObject may copy with a
// multipart upload of UploadPartCopy ranges, aborted when a part fails.
func (s *S3Store) copyInParts(ctx context.Context, src string, etag *string, size int64, dst string) error {
	mp, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(dst), ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return err
	}
	abort := func(err error) error {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3Timeout)
		defer cancel()
		_, aerr := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.bucket), Key: aws.String(dst), UploadId: mp.UploadId})
		return errors.Join(err, aerr)
	}
	// S3 allows at most 10,000 parts.
	part := max(s.copyPart, (size+9999)/10000)
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < size; off, n = off+part, n+1 {
		end := min(off+part, size) - 1
		res, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
			Bucket:            aws.String(s.bucket),
			Key:               aws.String(dst),
			UploadId:          mp.UploadId,
			PartNumber:        aws.Int32(n),
			CopySource:        aws.String(src),
			CopySourceIfMatch: etag,
			CopySourceRange:   aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
		})
		if err != nil {
			return abort(err)
		}
		parts = append(parts, types.CompletedPart{ETag: res.CopyPartResult.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(s.bucket), Key: aws.String(dst), UploadId: mp.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return abort(err)
	}
	return nil
}

// deleteUpload deletes an upload's objects (bytes, info, tail part) and
// aborts its multipart upload if it is still open.
func (s *S3Store) deleteUpload(ctx context.Context, id string) error {
	var errs []error
	if mp, err := s.multipartID(ctx, id); err == nil {
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(s.uploadKey(id)), UploadId: aws.String(mp),
		})
		if err != nil && !s3NoSuchUpload(err) {
			errs = append(errs, fmt.Errorf("media: abort upload %s: %w", id, err))
		}
	} else if !errors.Is(err, handler.ErrNotFound) {
		errs = append(errs, err)
	}
	key := s.uploadKey(id)
	res, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Quiet: aws.Bool(true), Objects: []types.ObjectIdentifier{
			{Key: aws.String(key)}, {Key: aws.String(key + ".part")}, {Key: aws.String(key + ".info")},
		}},
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("media: delete upload %s: %w", id, err))
	} else {
		for _, e := range res.Errors {
			if aws.ToString(e.Code) != "NoSuchKey" {
				errs = append(errs, fmt.Errorf("media: delete %s: %s: %s", aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message)))
			}
		}
	}
	s.mu.Lock()
	delete(s.multipart, id)
	s.mu.Unlock()
	return errors.Join(errs...)
}

// Open returns a reader of blobs/<digest> that GETs the range from its
// offset to the end on its first Read after a Seek.
func (s *S3Store) Open(ctx context.Context, digest string) (io.ReadSeekCloser, error) {
	if !ValidDigest(digest) {
		return nil, ErrBlobNotFound
	}
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.blobKey(digest))})
	if err != nil {
		if s3NotFound(err) {
			return nil, ErrBlobNotFound
		}
		return nil, err
	}
	return &s3Reader{ctx: ctx, s: s, key: s.blobKey(digest), size: aws.ToInt64(head.ContentLength)}, nil
}

// Stat returns a blob's size (a HEAD).
func (s *S3Store) Stat(ctx context.Context, digest string) (int64, error) {
	if !ValidDigest(digest) {
		return 0, ErrBlobNotFound
	}
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.blobKey(digest))})
	if err != nil {
		if s3NotFound(err) {
			return 0, ErrBlobNotFound
		}
		return 0, fmt.Errorf("media: stat blob: %w", err)
	}
	return aws.ToInt64(head.ContentLength), nil
}

// Delete deletes blobs/<digest>; S3 answers a missing key with success.
func (s *S3Store) Delete(ctx context.Context, digest string) error {
	if !ValidDigest(digest) {
		return nil
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.blobKey(digest))}); err != nil {
		return fmt.Errorf("media: delete blob: %w", err)
	}
	return nil
}

// multipartID returns the multipart id of upload id: from the cache, or
// from the upload's info object (handler.ErrNotFound when there is none).
func (s *S3Store) multipartID(ctx context.Context, id string) (string, error) {
	s.mu.Lock()
	mp, ok := s.multipart[id]
	s.mu.Unlock()
	if ok {
		return mp, nil
	}
	res, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.uploadKey(id) + ".info")})
	if err != nil {
		if s3NotFound(err) {
			return "", handler.ErrNotFound
		}
		return "", err
	}
	defer res.Body.Close()
	var info handler.FileInfo
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&info); err != nil {
		return "", fmt.Errorf("media: upload %s: bad info object: %w", id, err)
	}
	obj, mp, ok := strings.Cut(info.ID, "+")
	if !ok || obj != id || mp == "" {
		return "", fmt.Errorf("media: upload %s: info names upload %q", id, info.ID)
	}
	s.remember(id, mp)
	return mp, nil
}

// remember caches a multipart id; the cache is emptied when it grows past
// what a node has uploads in flight, so it never grows without bound.
func (s *S3Store) remember(id, mp string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.multipart) >= 8192 {
		clear(s.multipart)
	}
	s.multipart[id] = mp
}

// s3Uploads is the tusd data store S3Store gives tusd: tusd's s3store
// with upload ids of 32 hex digits (see S3Store).
type s3Uploads struct {
	s     *S3Store
	inner s3store.S3Store
}

func (u *s3Uploads) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	if !validUploadID(info.ID) {
		var b [16]byte
		_, _ = rand.Read(b[:])
		info.ID = hex.EncodeToString(b[:])
	}
	id := info.ID
	up, err := u.inner.NewUpload(ctx, info)
	if err != nil {
		return nil, err
	}
	full, err := up.GetInfo(ctx)
	if err != nil {
		return nil, err
	}
	_, mp, _ := strings.Cut(full.ID, "+")
	u.s.remember(id, mp)
	return &s3Upload{Upload: up, id: id, u: u}, nil
}

func (u *s3Uploads) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	if !validUploadID(id) {
		return nil, handler.ErrNotFound
	}
	mp, err := u.s.multipartID(ctx, id)
	if err != nil {
		return nil, err
	}
	up, err := u.inner.GetUpload(ctx, id+"+"+mp)
	if err != nil {
		return nil, err
	}
	return &s3Upload{Upload: up, id: id, u: u}, nil
}

// AsTerminatableUpload: terminating deletes the upload's objects and aborts
// its multipart upload, whatever state it is in.
func (u *s3Uploads) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	return up.(*s3Upload)
}

// s3Upload is one of tusd's s3store uploads under its short id.
type s3Upload struct {
	handler.Upload
	id string
	u  *s3Uploads
}

func (up *s3Upload) GetInfo(ctx context.Context) (handler.FileInfo, error) {
	info, err := up.Upload.GetInfo(ctx)
	info.ID = up.id
	return info, err
}

// GetReader reads the finished upload. An upload whose bytes all arrived
// but whose multipart upload was never completed (the node stopped in
// between) is completed first.
func (up *s3Upload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	rc, err := up.Upload.GetReader(ctx)
	if err == nil || errors.Is(err, handler.ErrNotFound) {
		return rc, err
	}
	info, ierr := up.Upload.GetInfo(ctx)
	if ierr != nil || info.Offset != info.Size {
		return nil, err
	}
	if ferr := up.Upload.FinishUpload(ctx); ferr != nil {
		return nil, errors.Join(err, ferr)
	}
	return up.Upload.GetReader(ctx)
}

func (up *s3Upload) Terminate(ctx context.Context) error {
	return up.u.s.deleteUpload(ctx, up.id)
}

// s3Reader reads an object with ranged GETs: a Seek drops the body in
// flight and the next Read GETs from the new offset to the end.
type s3Reader struct {
	ctx       context.Context
	s         *S3Store
	key       string
	size, off int64
	body      io.ReadCloser
}

func (r *s3Reader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if r.body == nil {
		res, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{
			Bucket: aws.String(r.s.bucket),
			Key:    aws.String(r.key),
			Range:  aws.String(fmt.Sprintf("bytes=%d-", r.off)),
		})
		if err != nil {
			if s3NotFound(err) {
				return 0, ErrBlobNotFound
			}
			return 0, err
		}
		r.body = res.Body
	}
	n, err := r.body.Read(p)
	r.off += int64(n)
	if errors.Is(err, io.EOF) && r.off < r.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *s3Reader) Seek(offset int64, whence int) (int64, error) {
	var off int64
	switch whence {
	case io.SeekStart:
		off = offset
	case io.SeekCurrent:
		off = r.off + offset
	case io.SeekEnd:
		off = r.size + offset
	default:
		return r.off, errors.New("media: seek: bad whence")
	}
	if off < 0 {
		return r.off, errors.New("media: seek before the start")
	}
	if off != r.off {
		r.closeBody()
		r.off = off
	}
	return off, nil
}

func (r *s3Reader) closeBody() {
	if r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
}

func (r *s3Reader) Close() error {
	r.closeBody()
	return nil
}

// s3NotFound reports a missing key: HEAD answers 404 without a body (the
// SDK's NotFound), GET answers NoSuchKey.
func s3NotFound(err error) bool {
	var nk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nk) || errors.As(err, &nf) {
		return true
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	var re interface{ HTTPStatusCode() int }
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound && !s3NoSuchUpload(err) && !s3NoSuchBucket(err)
}

// s3NoSuchUpload reports a multipart upload that is gone (completed or
// aborted). Servers answer it as a typed error or only by its code.
func s3NoSuchUpload(err error) bool {
	var nu *types.NoSuchUpload
	var apiErr smithy.APIError
	return errors.As(err, &nu) || (errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchUpload")
}

func s3NoSuchBucket(err error) bool {
	var nb *types.NoSuchBucket
	var apiErr smithy.APIError
	return errors.As(err, &nb) || (errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchBucket")
}
