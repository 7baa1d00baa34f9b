package gateway

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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
// HMAC-SHA256 under a key set every gateway of the cluster shares. The
// header names the signing key (kid); a token naming no key of the set is
// refused. The set can be replaced while tokens are issued and verified
// (SetKeys), so a rotation needs no restart.
type Tokens struct {
	keys atomic.Pointer[TokenKeySet]
	ttl  time.Duration
	now  func() time.Time
}

// NewTokens returns a signer of keys.
func NewTokens(keys *TokenKeySet, ttl time.Duration, now func() time.Time) (*Tokens, error) {
	if keys == nil {
		return nil, errors.New("tokens: no key set")
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if now == nil {
		now = time.Now
	}
	t := &Tokens{ttl: ttl, now: now}
	t.keys.Store(keys)
	return t, nil
}

// SetKeys makes keys the set tokens are issued and verified with from now
// on; a nil set is ignored.
func (t *Tokens) SetKeys(keys *TokenKeySet) {
	if keys != nil {
		t.keys.Store(keys)
	}
}

// Keys is the key set in use.
func (t *Tokens) Keys() *TokenKeySet { return t.keys.Load() }

// Issue returns a token for the device and when it expires.
func (t *Tokens) Issue(userID string, deviceID uint32) (string, time.Time, error) {
	now := t.now()
	exp := now.Add(t.ttl)
	claims, err := json.Marshal(Claims{UserID: userID, DeviceID: deviceID, IssuedAt: now.Unix(), ExpiresAt: exp.Unix()})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("encode claims: %w", err)
	}
	signer := t.keys.Load().signer
	signing := signer.header + "." + base64.RawURLEncoding.EncodeToString(claims)
	return signing + "." + signer.sign(signing), exp, nil
}

// Verify checks the key, signature and expiry of a token. It runs on every
// request and WebSocket upgrade: the key is found by one map lookup of the
// header, the MAC is computed in pooled scratch and compared in constant
// time, and only the claims allocate.
func (t *Tokens) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrTokenMissing
	}
	header, rest, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrTokenInvalid
	}
	key := t.keys.Load().byHeader[header]
	if key == nil {
		return Claims{}, ErrTokenInvalid // an unknown or retired kid, or no JWT of ours
	}
	payload, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return Claims{}, ErrTokenInvalid
	}
	st := key.states.Get().(*macState)
	defer key.states.Put(st)
	if !st.check(token[:len(header)+1+len(payload)], sig) {
		return Claims{}, ErrTokenInvalid
	}
	c, ok := st.decodeClaims(payload)
	if !ok {
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
