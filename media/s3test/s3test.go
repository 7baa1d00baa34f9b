// Package s3test gives tests an S3-compatible server: the one named by
// COURIER_TEST_S3_ENDPOINT (which `make test` sets after starting MinIO
// with scripts/minio.sh), and a fresh bucket per test that is emptied and
// deleted when the test ends.
//
// Without COURIER_TEST_S3_ENDPOINT a test that needs S3 is skipped with a
// note on how to run it, except in CI (CI=true), where it fails: CI must
// never pass by not testing the S3 backend.
package s3test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/courier-im/courier/media"
)

// The variables that name the test server and its credentials.
const (
	EndpointEnv  = "COURIER_TEST_S3_ENDPOINT"
	AccessKeyEnv = "COURIER_TEST_S3_ACCESS_KEY"
	SecretKeyEnv = "COURIER_TEST_S3_SECRET_KEY"
)

// Config returns the configuration of a new, empty bucket on the test
// server (path-style, region us-east-1) that is emptied and deleted when t
// ends, or skips (fails in CI) the test when no server is configured.
func Config(t testing.TB) media.S3Config {
	t.Helper()
	endpoint := Endpoint(t)
	cfg := media.S3Config{
		Endpoint:  endpoint,
		Bucket:    fmt.Sprintf("courier-test-%08x", rand.Uint32()),
		Region:    "us-east-1",
		AccessKey: os.Getenv(AccessKeyEnv),
		SecretKey: os.Getenv(SecretKeyEnv),
		PathStyle: true,
		TempDir:   t.TempDir(),
	}
	c := Client(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		t.Fatalf("create test bucket %s at %s: %v", cfg.Bucket, endpoint, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := deleteBucket(ctx, c, cfg.Bucket); err != nil {
			t.Logf("delete test bucket %s: %v", cfg.Bucket, err)
		}
	})
	return cfg
}

// Endpoint returns the test server's URL, or skips (fails in CI) the test
// when none is configured.
func Endpoint(t testing.TB) string {
	t.Helper()
	endpoint := strings.TrimSpace(os.Getenv(EndpointEnv))
	if endpoint == "" {
		msg := EndpointEnv + " is not set: this test needs an S3-compatible server. Run `make test` " +
			"(it starts MinIO with scripts/minio.sh), or point " + EndpointEnv + " (with " + AccessKeyEnv +
			" and " + SecretKeyEnv + ") at one that allows path-style requests"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return endpoint
}

// Client returns a plain S3 client for cfg's server, to look into a
// bucket behind the store's back.
func Client(cfg media.S3Config) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(cfg.Endpoint),
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		UsePathStyle: cfg.PathStyle,

		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

// Keys lists the keys in cfg's bucket under prefix.
func Keys(t testing.TB, cfg media.S3Config, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(Client(cfg), &s3.ListObjectsV2Input{Bucket: aws.String(cfg.Bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("list %s/%s: %v", cfg.Bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// deleteBucket aborts the bucket's multipart uploads, deletes its objects,
// then the bucket.
func deleteBucket(ctx context.Context, c *s3.Client, bucket string) error {
	mps, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		return err
	}
	for _, u := range mps.Uploads {
		_, _ = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: u.Key, UploadId: u.UploadId})
	}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, len(page.Contents))
		for i, o := range page.Contents {
			ids[i] = types.ObjectIdentifier{Key: o.Key}
		}
		if _, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(bucket), Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}}); err != nil {
			return err
		}
	}
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
	return err
}
