package media_test

import (
	"testing"

	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/media/blobstoretest"
)

// The local directory store passes the blob store conformance suite (the
// S3 store runs the same one: s3store_test.go).
func TestLocalStoreConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) media.BlobStore {
		s, err := media.NewLocalStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
