package client_test

import (
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestUserIDsAndHandlesLookUpBothWays: entries name users by id, and a
// client shows handles, so it can ask for the handle of any user id.
func TestUserIDsAndHandlesLookUpBothWays(t *testing.T) {
	n := startNode(t, node.Config{})
	ctx := timeout(t, 20*time.Second)
	alice := dial(t, register(t, n, "alice"))
	bob := register(t, n, "bob")
	tests := []struct {
		name string
		id   string
		want string
		code courierpb.ErrorCode
	}{
		{"another user", bob.UserID, bob.Handle, 0},
		{"oneself", alice.UserID(), alice.Credentials().Handle, 0},
		{"unknown id", "01a00000-0000-7000-8000-000000000000", "", courierpb.ErrorCode_NOT_FOUND},
	}
	for _, tc := range tests {
		got, err := alice.LookupUser(ctx, tc.id)
		if tc.code != 0 {
			if !client.IsCode(err, tc.code) {
				t.Errorf("%s: err = %v, want %v", tc.name, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: LookupUser = %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if id, err := alice.LookupHandle(ctx, got); err != nil || id != tc.id {
			t.Errorf("%s: LookupHandle(%q) = %q, %v; want %q", tc.name, got, id, err, tc.id)
		}
	}
}
