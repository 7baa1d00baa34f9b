package embedded

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/courier-im/courier/persistence"
)

// A store written before handles were folded keeps working: its handles
// are found by any spelling, claimed against look-alikes, and two old
// handles that fold alike are both still found by their exact spelling
// (other spellings find the one holding the folded key: here "casey",
// already in folded form).
func TestHandlesStoredBeforeFoldingAreFoundAndClaimed(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// What an older binary wrote: exact keys, no marker.
	at := time.Unix(1_700_000_000, 0).UTC()
	old := map[string]string{"Casey": "u-casey", "casey": "u-casey2", "Bob": "u-bob", "ivan": "u-ivan"}
	b := s.db.NewBatch()
	for h, id := range old {
		_ = b.Set(exactHandleKey(h), []byte(id), nil)
		_ = b.Set(userKey(id), encodeUser(h, at), nil)
	}
	_ = b.Delete(handlesFoldedMarker, nil)
	if err := s.db.Apply(b, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for range 2 { // the second open finds the marker and folds nothing again
		s, err = Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
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
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
