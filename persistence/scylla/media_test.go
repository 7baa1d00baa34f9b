package scylla_test

import (
	"testing"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/scylla"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
	"github.com/courier-im/courier/persistence/storetest"
)

var _ persistence.MediaStore = (*scylla.Store)(nil)

func TestMediaConformance(t *testing.T) {
	base := scyllatest.Options(t)
	// Create the keyspace and schema once, before the suite's parallel
	// subtests open their stores on it.
	open(t, base)
	storetest.RunMedia(t, func(t *testing.T) (persistence.Store, storetest.Reopen) {
		return open(t, base), func(t *testing.T) persistence.Store { return open(t, base) }
	})
}
