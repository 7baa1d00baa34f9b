package turn_test

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // the scheme under test
	"encoding/base64"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/courier-im/courier/turn"
)

func TestCredentialsHaveTheTURNRESTForm(t *testing.T) {
	secret := []byte("north-secret")
	now := time.Unix(1_800_000_000, 500_000_000)
	c, err := turn.NewCredentials(secret, "user-1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	// Half a second past now.Unix(): the expiry rounds up, never granting
	// less than the TTL.
	if want := strconv.FormatInt(now.Unix()+3601, 10) + ":user-1"; c.Username != want {
		t.Fatalf("username %q, want %q", c.Username, want)
	}
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(c.Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); c.Password != want {
		t.Fatalf("password %q, want base64(HMAC-SHA1(secret, username)) %q", c.Password, want)
	}
	if !c.Expires.Equal(time.Unix(now.Unix()+3601, 0)) {
		t.Fatalf("expires %v", c.Expires)
	}
}

func TestVerify(t *testing.T) {
	secret := []byte("north-secret")
	now := time.Unix(1_800_000_000, 0)
	valid, err := turn.NewCredentials(secret, "user:with:colons", time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name               string
		username, password string
		at                 time.Time
		want               error
		user               string
	}{
		{name: "valid", username: valid.Username, password: valid.Password, at: now, user: "user:with:colons"},
		{name: "valid through its expiry second", username: valid.Username, password: valid.Password, at: valid.Expires, user: "user:with:colons"},
		{name: "expired", username: valid.Username, password: valid.Password, at: valid.Expires.Add(time.Second), want: turn.ErrExpired},
		{name: "wrong secret", username: valid.Username, password: turn.Password([]byte("south-secret"), valid.Username), at: now, want: turn.ErrBadPassword},
		{name: "password of another username", username: strconv.FormatInt(now.Unix()+60, 10) + ":mallory", password: valid.Password, at: now, want: turn.ErrBadPassword},
		{name: "no colon", username: "1800000060", password: turn.Password(secret, "1800000060"), at: now, want: turn.ErrMalformed},
		{name: "no user", username: "1800000060:", password: turn.Password(secret, "1800000060:"), at: now, want: turn.ErrMalformed},
		{name: "expiry not a number", username: "soon:user-1", password: turn.Password(secret, "soon:user-1"), at: now, want: turn.ErrMalformed},
		{name: "expiry negative", username: "-5:user-1", password: turn.Password(secret, "-5:user-1"), at: now, want: turn.ErrMalformed},
		{name: "user first (the other order)", username: "user-1:1800000060", password: turn.Password(secret, "user-1:1800000060"), at: now, want: turn.ErrMalformed},
		{name: "empty", at: now, want: turn.ErrMalformed},
		{name: "made by another issuer with the secret (coturn's turnadmin, a script)", username: "1800000001:u", password: turn.Password(secret, "1800000001:u"), at: now, user: "u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, err := turn.Verify(secret, tc.username, tc.password, tc.at)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify(%q) = %v, want %v", tc.username, err, tc.want)
			}
			if user != tc.user {
				t.Fatalf("user %q, want %q", user, tc.user)
			}
		})
	}
}

func TestNewCredentialsRefusesWhatCannotBeVerified(t *testing.T) {
	now := time.Now()
	for name, f := range map[string]func() error{
		"no secret":    func() error { _, err := turn.NewCredentials(nil, "u", time.Hour, now); return err },
		"no user":      func() error { _, err := turn.NewCredentials([]byte("s"), "", time.Hour, now); return err },
		"ttl not > 0":  func() error { _, err := turn.NewCredentials([]byte("s"), "u", 0, now); return err },
		"negative ttl": func() error { _, err := turn.NewCredentials([]byte("s"), "u", -time.Hour, now); return err },
	} {
		if f() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
