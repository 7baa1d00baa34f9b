package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST scheme and coturn specify.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultTTL is how long issued credentials stay valid: a day, the "ttl":
// 86400 of draft-uberti-behave-turn-rest and what coturn deployments and
// WebRTC samples hand out. Shorter is not safer in the way it looks: TURN
// servers (coturn, pion) re-check the username's expiry on every Refresh,
// so the TTL is also the longest a relayed call can run. Clients fetch
// fresh credentials for each call, so a leaked pair relays for a day at
// most and only to peers the holder could reach anyway.
const DefaultTTL = 24 * time.Hour

// Errors of Verify and ParseUsername.
var (
	// ErrMalformed: the username is not "<unix expiry>:<user id>".
	ErrMalformed = errors.New("turn: malformed credential username")
	// ErrExpired: the credential's expiry has passed.
	ErrExpired = errors.New("turn: credential expired")
	// ErrBadPassword: the password is not the secret's HMAC of the username.
	ErrBadPassword = errors.New("turn: credential password does not match")
)

// Credentials are one TURN REST username/password pair.
type Credentials struct {
	Username string
	Password string
	Expires  time.Time
}

// NewCredentials issues credentials for userID valid for at least ttl:
// until now+ttl, rounded up to the whole second the username carries.
func NewCredentials(secret []byte, userID string, ttl time.Duration, now time.Time) (Credentials, error) {
	if len(secret) == 0 {
		return Credentials{}, errors.New("turn: empty shared secret")
	}
	if userID == "" {
		return Credentials{}, errors.New("turn: empty user id")
	}
	if ttl <= 0 {
		return Credentials{}, fmt.Errorf("turn: credential ttl %v is not positive", ttl)
	}
	exp := now.Add(ttl)
	if t := exp.Truncate(time.Second); !t.Equal(exp) {
		exp = t.Add(time.Second)
	}
	username := strconv.FormatInt(exp.Unix(), 10) + ":" + userID
	return Credentials{Username: username, Password: Password(secret, username), Expires: exp}, nil
}

// Password is the TURN REST password of username under secret:
// base64(HMAC-SHA1(secret, username)).
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseUsername splits a TURN REST username into its expiry and user id
// and refuses it when the expiry has passed at now (T1). The user id is
// everything after the first colon.
func ParseUsername(username string, now time.Time) (expires time.Time, userID string, err error) {
	ts, user, ok := strings.Cut(username, ":")
	if !ok || user == "" {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrMalformed, username)
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || unix <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: expiry %q of %q", ErrMalformed, ts, username)
	}
	expires = time.Unix(unix, 0)
	if now.After(expires) {
		return expires, user, fmt.Errorf("%w: %q expired at %s", ErrExpired, username, expires.UTC().Format(time.RFC3339))
	}
	return expires, user, nil
}

// Verify checks a username/password pair against secret at now and
// returns the user id it was issued to.
func Verify(secret []byte, username, password string, now time.Time) (userID string, err error) {
	_, userID, err = ParseUsername(username, now)
	if err != nil {
		return "", err
	}
	if !hmac.Equal([]byte(Password(secret, username)), []byte(password)) {
		return "", ErrBadPassword
	}
	return userID, nil
}
