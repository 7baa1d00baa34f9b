package storetest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/courier-im/courier/persistence"
)

func testProfiles(t *testing.T, factory Factory) {
	f := newFixture(t, factory, Options{})
	alice, bob := f.id("alice"), f.id("alice2") // one id a prefix of the other

	if _, err := f.s.GetProfile(ctx(t), alice); !errors.Is(err, persistence.ErrNotFound) {
		t.Fatalf("GetProfile of a user without one: err = %v, want ErrNotFound", err)
	}
	steps := []struct {
		user string
		put  []byte
	}{
		{alice, []byte("v1\x00\xff")},
		{bob, []byte("bob's")},
		{alice, []byte("v2, longer than v1")},
		{alice, []byte("v3")}, // shorter again: nothing of v2 may remain
		{bob, []byte{}},       // an empty record is a record
	}
	want := map[string][]byte{}
	for i, st := range steps {
		if err := f.s.PutProfile(ctx(t), st.user, st.put); err != nil {
			t.Fatalf("step %d: PutProfile: %v", i, err)
		}
		want[st.user] = st.put
		for user, w := range want {
			got, err := f.s.GetProfile(ctx(t), user)
			if err != nil {
				t.Fatalf("step %d: GetProfile(%s): %v", i, user, err)
			}
			if !bytes.Equal(got, w) {
				t.Fatalf("step %d: GetProfile(%s) = %q, want %q", i, user, got, w)
			}
		}
	}
	if f.reopen == nil {
		return
	}
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	f.s = f.reopen(t)
	for user, w := range want {
		got, err := f.s.GetProfile(ctx(t), user)
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("after reopen: GetProfile(%s) = (%q, %v), want %q", user, got, err, w)
		}
	}
}
