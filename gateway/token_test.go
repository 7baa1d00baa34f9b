package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

var tokenEpoch = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func fixedNow(t *time.Time) func() time.Time { return func() time.Time { return *t } }

func mustKey(t testing.TB, now time.Time) TokenKey {
	t.Helper()
	k, err := NewTokenKey(now)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustSet(t testing.TB, keys ...TokenKey) *TokenKeySet {
	t.Helper()
	s, err := NewTokenKeySet(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustTokens(t testing.TB, set *TokenKeySet, now *time.Time) *Tokens {
	t.Helper()
	tok, err := NewTokens(set, 15*time.Minute, fixedNow(now))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func issue(t testing.TB, tok *Tokens, user string) string {
	t.Helper()
	s, _, err := tok.Issue(user, 1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// header decodes a token's JWT header.
func header(t testing.TB, token string) map[string]string {
	t.Helper()
	h, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatalf("header of %q: %v", token, err)
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("header %s: %v", raw, err)
	}
	return m
}

// legacyToken is a token as Courier signed them before key ids, byte for
// byte: the header names no key.
func legacyToken(secret []byte, c Claims) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(c)
	signing := h + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// signWith signs a token with an arbitrary header under secret.
func signWith(secret []byte, rawHeader string, c Claims) string {
	h := base64.RawURLEncoding.EncodeToString([]byte(rawHeader))
	body, _ := json.Marshal(c)
	signing := h + "." + base64.RawURLEncoding.EncodeToString(body)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func wantVerify(t *testing.T, tok *Tokens, token string, want error) {
	t.Helper()
	c, err := tok.Verify(token)
	if !errors.Is(err, want) {
		t.Fatalf("Verify = (%+v, %v), want %v", c, err, want)
	}
}

func TestTokenCarriesTheSigningKeyID(t *testing.T) {
	now := tokenEpoch
	k1 := mustKey(t, now)
	tok := mustTokens(t, mustSet(t, k1), &now)
	s := issue(t, tok, "alice")
	if h := header(t, s); h["kid"] != k1.ID || h["alg"] != "HS256" || h["typ"] != "JWT" {
		t.Fatalf("header %v, want kid %s", h, k1.ID)
	}
	c, err := tok.Verify(s)
	if err != nil || c.UserID != "alice" || c.DeviceID != 1 || c.ExpiresAt != now.Add(15*time.Minute).Unix() {
		t.Fatalf("Verify = (%+v, %v)", c, err)
	}
}

// A rotation puts a new key in front: it signs, the old one still
// verifies what it signed, and a node that has not loaded the new set yet
// refuses the new key's tokens as unknown.
func TestTokenSignedWithNewKeyOldOneStillVerifies(t *testing.T) {
	now := tokenEpoch
	k1 := mustKey(t, now)
	before := mustTokens(t, mustSet(t, k1), &now)
	old := issue(t, before, "alice")

	keys, k2, dropped, err := RotateTokenKeys([]TokenKey{k1}, now.Add(time.Hour), 0, 0)
	if err != nil || len(dropped) != 0 || len(keys) != 2 || keys[0].ID != k2.ID || keys[1].ID != k1.ID {
		t.Fatalf("RotateTokenKeys = (%v, %v, %v, %v)", keys, k2, dropped, err)
	}
	after := mustTokens(t, mustSet(t, keys...), &now)
	if _, err := after.Verify(old); err != nil {
		t.Fatalf("token of the old key after the rotation: %v", err)
	}
	fresh := issue(t, after, "bob")
	if kid := header(t, fresh)["kid"]; kid != k2.ID {
		t.Fatalf("new token's kid %q, want the new key %q", kid, k2.ID)
	}
	wantVerify(t, before, fresh, ErrTokenInvalid)

	// Retired: the old key's tokens are refused.
	retired := mustTokens(t, mustSet(t, k2), &now)
	wantVerify(t, retired, old, ErrTokenInvalid)
	if _, err := retired.Verify(fresh); err != nil {
		t.Fatal(err)
	}
}

func TestTokenWithUnknownOrTamperedKidRefused(t *testing.T) {
	now := tokenEpoch
	k1, k2 := mustKey(t, now), mustKey(t, now)
	tok := mustTokens(t, mustSet(t, k1, k2), &now)
	claims := Claims{UserID: "alice", DeviceID: 1, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()}
	stranger := mustKey(t, now)

	good := issue(t, tok, "alice")
	_, rest, _ := strings.Cut(good, ".")
	cases := map[string]string{
		"unknown kid":                  signWith(stranger.Secret, `{"alg":"HS256","typ":"JWT","kid":"`+stranger.ID+`"}`, claims),
		"known kid, another key's MAC": signWith(stranger.Secret, `{"alg":"HS256","typ":"JWT","kid":"`+k2.ID+`"}`, claims),
		"kid swapped to the other key": jwtHeaderFor(k2.ID) + "." + rest,
		"kid removed":                  jwtHeaderFor("") + "." + rest,
		"header spelled otherwise":     signWith(k1.Secret, `{"typ":"JWT","alg":"HS256","kid":"`+k1.ID+`"}`, claims),
		"alg none":                     base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"`+k1.ID+`"}`)) + "." + strings.SplitN(rest, ".", 2)[0] + ".",
		"no kid, no legacy key":        legacyToken(k1.Secret, claims),
		"garbage":                      "a.b.c",
		"two parts":                    "a.b",
		"four parts":                   good + ".x",
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) { wantVerify(t, tok, s, ErrTokenInvalid) })
	}
	wantVerify(t, tok, "", ErrTokenMissing)
}

func TestTamperedTokenRefused(t *testing.T) {
	now := tokenEpoch
	tok := mustTokens(t, mustSet(t, mustKey(t, now)), &now)
	good := issue(t, tok, "alice")
	h, rest, _ := strings.Cut(good, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	body, _ := json.Marshal(Claims{UserID: "mallory", DeviceID: 1, IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for name, s := range map[string]string{
		"claims replaced":  h + "." + base64.RawURLEncoding.EncodeToString(body) + "." + sig,
		"payload bit":      h + "." + flip(payload, 3) + "." + sig,
		"signature bit":    h + "." + payload + "." + flip(sig, 0),
		"signature padded": good + "=",
		"signature short":  good[:len(good)-1],
		// The last of 43 characters carries 4 bits of the MAC and 2 of
		// padding: another spelling of the same MAC is still refused.
		"signature respelled": h + "." + payload + "." + sig[:len(sig)-1] + string(rune(sig[len(sig)-1]^1)),
	} {
		t.Run(name, func(t *testing.T) { wantVerify(t, tok, s, ErrTokenInvalid) })
	}
}

// Tokens issued before key ids have no kid; they stay valid (at most a
// TTL) when their key is in the set marked legacy, and only then.
func TestLegacyTokenWithoutKid(t *testing.T) {
	now := tokenEpoch
	secret := bytes.Repeat([]byte{7}, 32)
	claims := Claims{UserID: "alice", DeviceID: 2, IssuedAt: now.Unix(), ExpiresAt: now.Add(10 * time.Minute).Unix()}
	old := legacyToken(secret, claims)

	legacy := LegacyTokenKey(secret, now)
	if legacy.ID != TokenKeyID(secret) || !legacy.Legacy {
		t.Fatalf("LegacyTokenKey = %+v", legacy)
	}
	tok := mustTokens(t, mustSet(t, legacy), &now)
	if c, err := tok.Verify(old); err != nil || c != claims {
		t.Fatalf("legacy token: (%+v, %v), want %+v", c, err, claims)
	}
	// The legacy key signs with a kid from now on.
	if kid := header(t, issue(t, tok, "bob"))["kid"]; kid != legacy.ID {
		t.Fatalf("kid %q, want %q", kid, legacy.ID)
	}
	// Rotated: still verified (the legacy key verifies), until dropped.
	keys, _, _, err := RotateTokenKeys([]TokenKey{legacy}, now, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	tok.SetKeys(mustSet(t, keys...))
	if _, err := tok.Verify(old); err != nil {
		t.Fatalf("legacy token after a rotation: %v", err)
	}
	notLegacy := legacy
	notLegacy.Legacy = false
	tok.SetKeys(mustSet(t, keys[0], notLegacy))
	wantVerify(t, tok, old, ErrTokenInvalid)
	tok.SetKeys(mustSet(t, keys[0]))
	wantVerify(t, tok, old, ErrTokenInvalid)

	if _, err := NewTokenKeySet([]TokenKey{legacy, LegacyTokenKey(bytes.Repeat([]byte{8}, 32), now)}); err == nil {
		t.Fatal("two legacy keys accepted")
	}
}

func TestTokenExpiry(t *testing.T) {
	now := tokenEpoch
	tok := mustTokens(t, mustSet(t, mustKey(t, now)), &now)
	s := issue(t, tok, "alice")
	now = now.Add(15*time.Minute - time.Second)
	if _, err := tok.Verify(s); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	wantVerify(t, tok, s, ErrTokenExpired)
}

// A reload swaps the set while requests verify and issue: a token of
// any key still in the set verifies throughout.
func TestTokenKeysSwapUnderLoad(t *testing.T) {
	now := tokenEpoch
	k1 := mustKey(t, now)
	tok := mustTokens(t, mustSet(t, k1), &now)
	old := issue(t, tok, "alice")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := tok.Verify(old); err != nil {
					t.Errorf("Verify during swaps: %v", err)
					return
				}
				if _, err := tok.Verify(issue(t, tok, "bob")); err != nil {
					t.Errorf("fresh token during swaps: %v", err)
					return
				}
			}
		})
	}
	keys := []TokenKey{k1}
	for range 50 {
		var err error
		if keys, _, _, err = RotateTokenKeys(keys, now, 0, 0); err != nil {
			t.Fatal(err)
		}
		tok.SetKeys(mustSet(t, keys...))
	}
	close(stop)
	wg.Wait()
}

func TestVerifyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items")
	}
	now := tokenEpoch
	keys := []TokenKey{mustKey(t, now), mustKey(t, now), mustKey(t, now)}
	tok := mustTokens(t, mustSet(t, keys...), &now)
	s := issue(t, tok, "0190c0de-7e57-7000-8000-000000000001")
	if _, err := tok.Verify(s); err != nil {
		t.Fatal(err)
	}
	// The user id string; the header lookup, the MAC and the claims
	// decoding allocate nothing.
	if n := testing.AllocsPerRun(200, func() { _, _ = tok.Verify(s) }); n > 1 {
		t.Fatalf("Verify allocates %v times, want at most 1", n)
	}
	bad := s[:len(s)-2] + "AA"
	if n := testing.AllocsPerRun(200, func() { _, _ = tok.Verify(bad) }); n > 0 {
		t.Fatalf("refusing a forged token allocates %v times, want none", n)
	}
}

// A user id that JSON escapes takes encoding/json's way and reads the same.
func TestClaimsOfAnyUserIDRoundTrip(t *testing.T) {
	now := tokenEpoch
	tok := mustTokens(t, mustSet(t, mustKey(t, now)), &now)
	for _, id := range []string{"0190c0de-7e57-7000-8000-000000000001", `a"b\c`, "<&>", "\u2028\x00é", "x"} {
		s, _, err := tok.Issue(id, 4294967295)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tok.Verify(s)
		if err != nil || c.UserID != id || c.DeviceID != 4294967295 {
			t.Fatalf("%q: Verify = (%+v, %v)", id, c, err)
		}
	}
}

// Whatever the fast claims parser accepts, encoding/json reads alike.
func FuzzParseIssuedClaims(f *testing.F) {
	for _, c := range []Claims{{UserID: "u", DeviceID: 1, IssuedAt: 2, ExpiresAt: 3}, {UserID: "<", DeviceID: 1 << 31}} {
		b, _ := json.Marshal(c)
		f.Add(b)
	}
	f.Add([]byte(`{"sub":"u","dev":4294967296,"iat":1,"exp":2}`))
	f.Add([]byte(`{"sub":"u","dev":1,"iat":1,"exp":2} `))
	f.Add([]byte(`{"sub":"","dev":00000,"iat":0,"exp":0}`))
	f.Add([]byte("{\"sub\":\"\xfe\",\"dev\":0,\"iat\":0,\"exp\":0}"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := parseIssuedClaims(raw)
		if !ok {
			return
		}
		var want Claims
		if err := json.Unmarshal(raw, &want); err != nil || got != want {
			t.Fatalf("%q: fast (%+v), encoding/json (%+v, %v)", raw, got, want, err)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	now := tokenEpoch
	tok := mustTokens(b, mustSet(b, mustKey(b, now), mustKey(b, now)), &now)
	s := issue(b, tok, "0190c0de-7e57-7000-8000-000000000001")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tok.Verify(s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
