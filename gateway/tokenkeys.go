package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"strings"
	"sync"
	"time"
)

// MinTokenKeyBytes is the shortest HMAC key a TokenKeySet takes.
const MinTokenKeyBytes = 32

// TokenKey is one HMAC-SHA256 key of a TokenKeySet.
type TokenKey struct {
	// ID is the key's kid, named in the header of every token it signs:
	// 1–64 of A-Z a-z 0-9 . _ -.
	ID string
	// Secret is the HMAC key, at least MinTokenKeyBytes long.
	Secret []byte
	// Created is when the key was made (zero: unknown). A key stops
	// signing when the key above it is created, so RotateTokenKeys tells
	// from it how long the tokens of older keys may still be alive.
	Created time.Time
	// Legacy also verifies tokens without a kid: those signed before
	// tokens named their key (the key an earlier Courier kept in the
	// store, or the one --token-key gives). At most one key is legacy.
	Legacy bool
}

// NewTokenKey returns a fresh random key created at now.
func NewTokenKey(now time.Time) (TokenKey, error) {
	secret := make([]byte, MinTokenKeyBytes)
	if _, err := rand.Read(secret); err != nil {
		return TokenKey{}, fmt.Errorf("generate token key: %w", err)
	}
	return TokenKey{ID: TokenKeyID(secret), Secret: secret, Created: now.UTC().Truncate(time.Second)}, nil
}

// TokenKeyID derives a key id from a secret: 8 hex digits of a SHA-256 of
// it. One key given to several nodes, or imported twice, gets one id
// everywhere, and the id reveals nothing usable about the key.
func TokenKeyID(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("courier token key id\x00"))
	h.Write(secret)
	return hex.EncodeToString(h.Sum(nil)[:4])
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// TokenKeySet is the keys access tokens are signed and verified with: the
// first key signs, every key verifies. It is immutable; a rotation makes
// a new set (Tokens.SetKeys).
type TokenKeySet struct {
	keys   []TokenKey
	signer *tokenKeyMAC
	// byHeader finds the key of a token by its encoded header, so a
	// token names a known key exactly as this set writes it or is
	// refused before any MAC is computed.
	byHeader map[string]*tokenKeyMAC
}

// tokenKeyMAC signs and checks with one key.
type tokenKeyMAC struct {
	header string // base64url of the JWT header naming the key
	secret []byte
	states sync.Pool // of *macState
}

// macState is the scratch of one MAC and of the claims it covers:
// pooled, so Verify allocates none for them.
type macState struct {
	mac    hash.Hash
	sum    [sha256.Size]byte
	enc    [sigLen]byte
	buf    [512]byte
	raw    [384]byte // base64 decodes 512 bytes into 384
	claims Claims
}

// sigLen is the length of an encoded HMAC-SHA256.
const sigLen = (sha256.Size*8 + 5) / 6

// jwtHeaderFor is the encoded JWT header of tokens kid signs; an empty kid
// is the header of tokens from before key ids.
func jwtHeaderFor(kid string) string {
	if kid == "" {
		return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	}
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"` + kid + `"}`))
}

// NewTokenKeySet checks keys and returns the set; keys[0] signs.
func NewTokenKeySet(keys []TokenKey) (*TokenKeySet, error) {
	if len(keys) == 0 {
		return nil, errors.New("no token key")
	}
	s := &TokenKeySet{byHeader: make(map[string]*tokenKeyMAC, len(keys)+1)}
	legacy := ""
	for i, k := range keys {
		if !validKeyID(k.ID) {
			return nil, fmt.Errorf("token key %d: id %q is not 1–64 of A-Z a-z 0-9 . _ -", i+1, k.ID)
		}
		if len(k.Secret) < MinTokenKeyBytes {
			return nil, fmt.Errorf("token key %s is %d bytes, need at least %d", k.ID, len(k.Secret), MinTokenKeyBytes)
		}
		header := jwtHeaderFor(k.ID)
		if _, dup := s.byHeader[header]; dup {
			return nil, fmt.Errorf("token key id %s appears twice", k.ID)
		}
		k.Secret = bytes.Clone(k.Secret)
		s.keys = append(s.keys, k)
		m := newTokenKeyMAC(header, k.Secret)
		s.byHeader[header] = m
		if i == 0 {
			s.signer = m
		}
		if k.Legacy {
			if legacy != "" {
				return nil, fmt.Errorf("token keys %s and %s are both legacy: at most one verifies tokens without a kid", legacy, k.ID)
			}
			legacy = k.ID
			lh := jwtHeaderFor("")
			s.byHeader[lh] = newTokenKeyMAC(lh, k.Secret)
		}
	}
	return s, nil
}

func newTokenKeyMAC(header string, secret []byte) *tokenKeyMAC {
	m := &tokenKeyMAC{header: header, secret: secret}
	m.states.New = func() any { return &macState{mac: hmac.New(sha256.New, secret)} }
	return m
}

// Keys returns a copy of the set's keys, the signing key first.
func (s *TokenKeySet) Keys() []TokenKey {
	out := make([]TokenKey, len(s.keys))
	for i, k := range s.keys {
		k.Secret = bytes.Clone(k.Secret)
		out[i] = k
	}
	return out
}

// SigningKeyID is the id of the key that signs.
func (s *TokenKeySet) SigningKeyID() string { return s.keys[0].ID }

// Contains reports whether secret is one of the set's keys.
func (s *TokenKeySet) Contains(secret []byte) bool {
	for _, k := range s.keys {
		if hmac.Equal(k.Secret, secret) {
			return true
		}
	}
	return false
}

// sign returns the encoded MAC of signing.
func (m *tokenKeyMAC) sign(signing string) string {
	st := m.states.Get().(*macState)
	defer m.states.Put(st)
	st.compute(signing)
	return string(st.enc[:])
}

// compute leaves the encoded MAC of signing in enc.
func (st *macState) compute(signing string) {
	st.mac.Reset()
	// Copied through buf: writing []byte(signing) would allocate.
	for rest := signing; rest != ""; {
		n := copy(st.buf[:], rest)
		st.mac.Write(st.buf[:n])
		rest = rest[n:]
	}
	base64.RawURLEncoding.Encode(st.enc[:], st.mac.Sum(st.sum[:0]))
}

// check reports, in constant time, whether sig is the MAC of signing.
// Encoded MACs are compared, so a signature is accepted in its one
// canonical spelling only.
func (st *macState) check(signing, sig string) bool {
	if len(sig) != sigLen {
		return false
	}
	st.compute(signing)
	var diff byte
	for i := range sigLen {
		diff |= st.enc[i] ^ sig[i]
	}
	return subtle.ConstantTimeByteEq(diff, 0) == 1
}

// decodeClaims decodes the claims of a verified payload.
func (st *macState) decodeClaims(payload string) (Claims, bool) {
	var raw []byte
	if len(payload) <= len(st.buf) {
		n := copy(st.buf[:], payload)
		m, err := base64.RawURLEncoding.Decode(st.raw[:], st.buf[:n])
		if err != nil {
			return Claims{}, false
		}
		raw = st.raw[:m]
	} else {
		var err error
		if raw, err = base64.RawURLEncoding.DecodeString(payload); err != nil {
			return Claims{}, false
		}
	}
	c, ok := parseIssuedClaims(raw)
	if !ok {
		// Not as Issue writes them (an escaped user id): the general way.
		st.claims = Claims{}
		if err := json.Unmarshal(raw, &st.claims); err != nil {
			return Claims{}, false
		}
		c = st.claims
	}
	if c.UserID == "" || c.DeviceID == 0 {
		return Claims{}, false
	}
	return c, true
}

// parseIssuedClaims reads claims exactly as Issue encodes them,
// {"sub":"…","dev":N,"iat":N,"exp":N} with nothing escaped, allocating only
// the user id; anything else is not ok. Only a payload whose MAC checked
// comes here, so it is one Issue wrote.
func parseIssuedClaims(raw []byte) (Claims, bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(`{"sub":"`))
	if !ok {
		return Claims{}, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return Claims{}, false
	}
	sub := rest[:end]
	for _, c := range sub {
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return Claims{}, false // escaped, or not ASCII: encoding/json decides
		}
	}
	rest = rest[end+1:]
	var dev, iat, exp uint64
	for _, f := range []struct {
		name string
		to   *uint64
	}{{`,"dev":`, &dev}, {`,"iat":`, &iat}, {`,"exp":`, &exp}} {
		if rest, ok = bytes.CutPrefix(rest, []byte(f.name)); !ok {
			return Claims{}, false
		}
		n, digits := uint64(0), 0
		for ; digits < len(rest) && digits < 18 && '0' <= rest[digits] && rest[digits] <= '9'; digits++ {
			n = n*10 + uint64(rest[digits]-'0')
		}
		if digits == 0 || digits > 1 && rest[0] == '0' {
			return Claims{}, false
		}
		*f.to, rest = n, rest[digits:]
	}
	if string(rest) != "}" || dev > math.MaxUint32 {
		return Claims{}, false
	}
	return Claims{UserID: string(sub), DeviceID: uint32(dev), IssuedAt: int64(iat), ExpiresAt: int64(exp)}, true
}

// The key file's text. See ParseTokenKeys.
const tokenKeysPreamble = `# Courier access-token signing keys: whoever reads this file can sign tokens
# for any user. Keep it mode 0600, the same on every node, and apart from the
# message store and its backups.
# One key per line: <kid> <key, base64url, 32+ bytes> [created=<RFC 3339>] [legacy]
# The first key signs new tokens; every key verifies. "legacy" also verifies
# tokens without a kid. Manage it with: courier token-keys new|rotate|list.
`

// ParseTokenKeys reads the text of a token key file: one key per line,
//
//	<kid> <key> [created=<time>] [legacy]
//
// where key is base64url (padding optional) of at least MinTokenKeyBytes
// bytes, time is RFC 3339 and legacy marks the key that also verifies
// tokens without a kid. Blank lines and lines starting with # are
// skipped. The first key signs.
func ParseTokenKeys(text []byte) ([]TokenKey, error) {
	var keys []TokenKey
	for i, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := parseTokenKeyLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in it")
	}
	if _, err := NewTokenKeySet(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

func parseTokenKeyLine(line string) (TokenKey, error) {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return TokenKey{}, errors.New(`want "<kid> <base64url key> [created=<RFC 3339 time>] [legacy]"`)
	}
	k := TokenKey{ID: fields[0]}
	if !validKeyID(k.ID) {
		return TokenKey{}, fmt.Errorf("kid %q is not 1–64 of A-Z a-z 0-9 . _ -", k.ID)
	}
	secret, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(fields[1], "="))
	if err != nil {
		return TokenKey{}, fmt.Errorf("key %s is not base64url", k.ID)
	}
	k.Secret = secret
	for _, attr := range fields[2:] {
		switch name, value, _ := strings.Cut(attr, "="); name {
		case "legacy":
			k.Legacy = true
		case "created":
			t, err := time.Parse(time.RFC3339, value)
			if err != nil {
				return TokenKey{}, fmt.Errorf("key %s: created: %w", k.ID, err)
			}
			k.Created = t
		default:
			return TokenKey{}, fmt.Errorf("key %s: unknown attribute %q (want created=<time> or legacy)", k.ID, attr)
		}
	}
	return k, nil
}

// FormatTokenKeys is the key file text of keys (ParseTokenKeys reads it).
func FormatTokenKeys(keys []TokenKey) []byte {
	var b strings.Builder
	b.WriteString(tokenKeysPreamble)
	for _, k := range keys {
		b.WriteString(k.ID)
		b.WriteByte(' ')
		b.WriteString(base64.RawURLEncoding.EncodeToString(k.Secret))
		if !k.Created.IsZero() {
			b.WriteString(" created=")
			b.WriteString(k.Created.UTC().Format(time.RFC3339))
		}
		if k.Legacy {
			b.WriteString(" legacy")
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// LegacyTokenKey is the key an earlier Courier signed with (kept in the
// store, or given as --token-key) as a member of a key set: its id is
// derived from it, so every node that imports it names it alike, and it
// verifies the tokens signed before key ids.
func LegacyTokenKey(secret []byte, now time.Time) TokenKey {
	return TokenKey{ID: TokenKeyID(secret), Secret: bytes.Clone(secret), Created: now.UTC().Truncate(time.Second), Legacy: true}
}

// ImportLegacyTokenKey adds a legacy key to keys unless they hold it: as
// the signing key when keys is empty, else last, verifying only (the key
// that signs stays). A key already legacy loses the mark, since one key
// verifies tokens without a kid. It reports whether it added the key.
func ImportLegacyTokenKey(keys []TokenKey, secret []byte, now time.Time) ([]TokenKey, bool) {
	for _, k := range keys {
		if hmac.Equal(k.Secret, secret) {
			return keys, false
		}
	}
	out := make([]TokenKey, 0, len(keys)+1)
	for _, k := range keys {
		k.Legacy = false
		out = append(out, k)
	}
	return append(out, LegacyTokenKey(secret, now)), true
}

// RotateTokenKeys puts a fresh key, created at now, in front of keys: it
// signs from the moment a node loads the result, and the others keep
// verifying the tokens they signed. Then it retires old keys: with
// dropOlderThan > 0, every key that stopped signing (when the key above it
// was created) more than dropOlderThan ago; with keep > 0, every key past
// the first keep. The fresh key is never dropped. Keys without a creation
// time above them are only dropped by keep.
func RotateTokenKeys(keys []TokenKey, now time.Time, dropOlderThan time.Duration, keep int) (next []TokenKey, added TokenKey, dropped []TokenKey, err error) {
	now = now.UTC().Truncate(time.Second) // as the new key's creation time
	for {
		if added, err = NewTokenKey(now); err != nil {
			return nil, TokenKey{}, nil, err
		}
		taken := false
		for _, k := range keys {
			taken = taken || k.ID == added.ID
		}
		if !taken {
			break
		}
	}
	all := append([]TokenKey{added}, keys...)
	next = all[:1]
	for i := 1; i < len(all); i++ {
		retired := all[i-1].Created
		switch {
		case keep > 0 && len(next) >= keep,
			dropOlderThan > 0 && !retired.IsZero() && now.Sub(retired) > dropOlderThan:
			dropped = append(dropped, all[i])
		default:
			next = append(next, all[i])
		}
	}
	if _, err := NewTokenKeySet(next); err != nil {
		return nil, TokenKey{}, nil, err
	}
	return next, added, dropped, nil
}
