package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token errors the gateway turns into UNAUTHENTICATED or TOKEN_EXPIRED.
var (
	ErrTokenMissing = errors.New("access token missing")
	ErrTokenInvalid = errors.New("access token invalid")
	ErrTokenExpired = errors.New("access token expired")
)

// DefaultTokenTTL is how long an access token is valid.
const DefaultTokenTTL = 15 * time.Minute

// Claims is what an access token asserts: which device of which user holds it.
type Claims struct {
	UserID    string `json:"sub"`
	DeviceID  uint32 `json:"dev"`
	IssuedAt  int64  `json:"iat"`
	ExpiresAt int64  `json:"exp"`
}

// Tokens issues and verifies access tokens: compact JWTs signed with
// HMAC-SHA256 under a key shared by every gateway of the cluster.
type Tokens struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// NewTokens returns a signer; key must be at least 32 bytes.
func NewTokens(key []byte, ttl time.Duration, now func() time.Time) (*Tokens, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("token key is %d bytes, need at least 32", len(key))
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Tokens{key: key, ttl: ttl, now: now}, nil
}

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// Issue returns a token for the device and when it expires.
func (t *Tokens) Issue(userID string, deviceID uint32) (string, time.Time, error) {
	now := t.now()
	exp := now.Add(t.ttl)
	claims, err := json.Marshal(Claims{UserID: userID, DeviceID: deviceID, IssuedAt: now.Unix(), ExpiresAt: exp.Unix()})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("encode claims: %w", err)
	}
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(claims)
	return signing + "." + t.sign(signing), exp, nil
}

func (t *Tokens) sign(s string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(s))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verify checks the signature and expiry of a token.
func (t *Tokens) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrTokenMissing
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != jwtHeader {
		return Claims{}, ErrTokenInvalid
	}
	want := t.sign(parts[0] + "." + parts[1])
	if subtle.ConstantTimeCompare([]byte(want), []byte(parts[2])) != 1 {
		return Claims{}, ErrTokenInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Claims{}, ErrTokenInvalid
	}
	var c Claims
	if err := json.Unmarshal(raw, &c); err != nil || c.UserID == "" || c.DeviceID == 0 {
		return Claims{}, ErrTokenInvalid
	}
	if t.now().Unix() >= c.ExpiresAt {
		return Claims{}, ErrTokenExpired
	}
	return c, nil
}

// NewDeviceSecret returns a fresh device secret and the hash to store.
func NewDeviceSecret() (secret string, hash []byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("device secret: %w", err)
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	return secret, HashDeviceSecret(secret), nil
}

// HashDeviceSecret hashes a secret for storage. Secrets are 256 random bits,
// so a plain SHA-256 cannot be brute-forced and needs no slow KDF.
func HashDeviceSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// SecretMatches compares in constant time.
func SecretMatches(secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(HashDeviceSecret(secret), hash) == 1
}
