package media_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/media/blobstoretest"
	"github.com/courier-im/courier/media/s3test"
)

// newS3Store opens an S3Store on a fresh bucket of the test server.
func newS3Store(t testing.TB, cfg media.S3Config) *media.S3Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := media.NewS3Store(ctx, cfg)
	if err != nil {
		t.Fatalf("NewS3Store: %v", err)
	}
	return s
}

// The S3 store passes the same conformance suite as the local one, against
// a real S3 server (MinIO under make test).
func TestS3StoreConformance(t *testing.T) {
	s3test.Endpoint(t)
	blobstoretest.Run(t, func(t *testing.T) media.BlobStore {
		return newS3Store(t, s3test.Config(t))
	})
}

// Above CopyPartSize a blob is published with a multipart copy (S3 copies
// at most 5 GiB in one request; here the limit is 5 MiB).
func TestS3PublishCopiesLargeBlobsInParts(t *testing.T) {
	cfg := s3test.Config(t)
	cfg.CopyPartSize = 5 << 20
	s := newS3Store(t, cfg)
	comp := handler.NewStoreComposer()
	s.UseIn(comp)
	ctx := context.Background()
	data := blobstoretest.Bytes(11, 11<<20+3)
	id := uploadDirect(t, comp, data, 6<<20)
	d := blobstoretest.Digest(data)
	if err := s.Publish(ctx, id, d); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	head, err := s3test.Client(cfg).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String("blobs/" + d)})
	if err != nil {
		t.Fatal(err)
	}
	// A multipart object's ETag ends in -<parts>.
	if etag := aws.ToString(head.ETag); !strings.HasSuffix(strings.Trim(etag, `"`), "-3") {
		t.Errorf("ETag %s: want a copy in 3 parts", etag)
	}
	r, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d published", len(got), err, len(data))
	}
	if keys := s3test.Keys(t, cfg, "uploads/"); len(keys) != 0 {
		t.Fatalf("upload objects left after publish: %v", keys)
	}
}

// A blob object carries nothing of the upload's metadata (its uploader, its
// creation time): only the ciphertext, under its digest.
func TestS3BlobsCarryNoUploadMetadata(t *testing.T) {
	cfg := s3test.Config(t)
	s := newS3Store(t, cfg)
	comp := handler.NewStoreComposer()
	s.UseIn(comp)
	ctx := context.Background()
	data := blobstoretest.Bytes(12, 1000)
	up, err := comp.Core.NewUpload(ctx, handler.FileInfo{Size: int64(len(data)), MetaData: handler.MetaData{"owner": "alice-id", "created": "1764676800"}})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := up.GetInfo(ctx)
	if _, err := up.WriteChunk(ctx, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := up.FinishUpload(ctx); err != nil {
		t.Fatal(err)
	}
	d := blobstoretest.Digest(data)
	if err := s.Publish(ctx, info.ID, d); err != nil {
		t.Fatal(err)
	}
	head, err := s3test.Client(cfg).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String("blobs/" + d)})
	if err != nil {
		t.Fatal(err)
	}
	if len(head.Metadata) != 0 {
		t.Fatalf("blob object metadata %v, want none", head.Metadata)
	}
	if keys := s3test.Keys(t, cfg, ""); !slices.Equal(keys, []string{"blobs/" + d}) {
		t.Fatalf("bucket holds %v, want only the blob", keys)
	}
}

// An upload whose bytes all arrived but whose multipart upload was never
// completed (the node died in between) still reads back, so media can
// check and publish it when the client asks for its offset again.
func TestS3StrandedUploadReadsBack(t *testing.T) {
	cfg := s3test.Config(t)
	s := newS3Store(t, cfg)
	comp := handler.NewStoreComposer()
	s.UseIn(comp)
	ctx := context.Background()
	data := blobstoretest.Bytes(13, 200_000)
	up, err := comp.Core.NewUpload(ctx, handler.FileInfo{Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := up.GetInfo(ctx)
	if _, err := up.WriteChunk(ctx, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	// No FinishUpload. Another node (a fresh store on the same bucket)
	// picks it up.
	other := newS3Store(t, cfg)
	comp2 := handler.NewStoreComposer()
	other.UseIn(comp2)
	up2, err := comp2.Core.GetUpload(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info2, err := up2.GetInfo(ctx); err != nil || info2.Offset != info2.Size || info2.ID != info.ID {
		t.Fatalf("the stranded upload on another node: %+v, %v", info2, err)
	}
	rc, err := up2.GetReader(ctx)
	if err != nil {
		t.Fatalf("GetReader: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
}

func TestNewS3StoreRefusesAMissingBucketAndBadConfig(t *testing.T) {
	cfg := s3test.Config(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missing := cfg
	missing.Bucket = cfg.Bucket + "-missing"
	if _, err := media.NewS3Store(ctx, missing); err == nil || !strings.Contains(err.Error(), missing.Bucket) {
		t.Fatalf("a missing bucket: %v, want an error naming it", err)
	}
	wrong := cfg
	wrong.SecretKey = "wrong-secret"
	if _, err := media.NewS3Store(ctx, wrong); err == nil {
		t.Fatal("a wrong secret key was accepted")
	}
	half := cfg
	half.SecretKey = ""
	if _, err := media.NewS3Store(ctx, half); err == nil {
		t.Fatal("an access key without a secret key was accepted")
	}
	small := cfg
	small.CopyPartSize = 1 << 20
	if _, err := media.NewS3Store(ctx, small); err == nil {
		t.Fatal("a copy part size below 5 MiB was accepted")
	}
}

// uploadDirect writes data into a new upload through tusd's data store in
// chunks and finishes it.
func uploadDirect(t *testing.T, comp *handler.StoreComposer, data []byte, chunk int) string {
	t.Helper()
	ctx := context.Background()
	up, err := comp.Core.NewUpload(ctx, handler.FileInfo{Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := up.GetInfo(ctx)
	for off := 0; off < len(data); off += chunk {
		up, err := comp.Core.GetUpload(ctx, info.ID)
		if err != nil {
			t.Fatal(err)
		}
		end := min(off+chunk, len(data))
		if _, err := up.WriteChunk(ctx, int64(off), bytes.NewReader(data[off:end])); err != nil {
			t.Fatalf("WriteChunk at %d: %v", off, err)
		}
	}
	up, err = comp.Core.GetUpload(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.FinishUpload(ctx); err != nil && !errors.Is(err, handler.ErrNotFound) {
		t.Fatal(err)
	}
	return info.ID
}
