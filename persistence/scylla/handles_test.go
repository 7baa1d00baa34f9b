package scylla_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/scylla/scyllatest"
)

// A keyspace written before handles were folded keeps working: its handles
// are found by any spelling, claimed against look-alikes, and two old
// handles that fold alike are both still found by their exact spelling.
func TestHandlesStoredBeforeFoldingAreFoundAndClaimed(t *testing.T) {
	opts := scyllatest.Options(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := open(t, opts)
	at := time.Unix(1_700_000_000, 0).UTC()
	for h, id := range map[string]string{"Casey": "u-casey", "casey": "u-casey2", "Bob": "u-bob", "ivan": "u-ivan"} {
		if err := s.WriteLegacyHandle(ctx, h, id, at); err != nil {
			t.Fatal(err)
		}
	}
	_ = s.Close()
	for range 2 { // the second open finds the marker and folds nothing again
		s = open(t, opts)
		for lookup, want := range map[string]string{"Casey": "u-casey", "casey": "u-casey2", "CASEY": "u-casey2", "bob": "u-bob", "BOB": "u-bob", "Ivan": "u-ivan", "lvan": "u-ivan", "ivan": "u-ivan"} {
			u, err := s.GetUserByHandle(ctx, lookup)
			if err != nil || u.ID != want {
				t.Errorf("GetUserByHandle(%q) = %q, %v; want %q", lookup, u.ID, err, want)
			}
		}
		for _, h := range []string{"bob", "IVAN", "cAsEy"} {
			if err := s.CreateUser(ctx, persistence.User{ID: "new-" + h, Handle: h, CreatedAt: at}); !errors.Is(err, persistence.ErrHandleTaken) {
				t.Errorf("CreateUser(%q) beside an old look-alike: %v, want ErrHandleTaken", h, err)
			}
		}
		_ = s.Close()
	}
}
