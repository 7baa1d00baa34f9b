package verification

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// A challenge token is base64url(payload || mac), where
//
//	payload = version (1) || nonce (16) || expiry, Unix seconds (8) || codeMAC (32)
//	codeMAC = HMAC(codeKey, nonce || handle || 0 || code)
//	mac     = HMAC(challengeKey, payload || handle)
//
// mac makes the whole payload the server's and binds it to the handle;
// codeMAC is what the code is checked against. Both keys derive from the
// one Service key, so neither MAC can stand in for the other.
const (
	challengeVersion = 1
	nonceLen         = 16
	payloadLen       = 1 + nonceLen + 8 + sha256.Size
	tokenLen         = payloadLen + sha256.Size
)

type keys struct{ challenge, code []byte }

func deriveKeys(key []byte) keys {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	return keys{challenge: derive("courier verification challenge v1"), code: derive("courier verification code v1")}
}

// challenge is an opened, genuine token.
type challenge struct {
	nonce   [nonceLen]byte
	expires time.Time
	codeMAC []byte
}

func (k keys) codeHash(nonce []byte, handle, code string) []byte {
	m := hmac.New(sha256.New, k.code)
	m.Write(nonce)
	m.Write([]byte(handle))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

func (k keys) mac(payload []byte, handle string) []byte {
	m := hmac.New(sha256.New, k.challenge)
	m.Write(payload)
	m.Write([]byte(handle))
	return m.Sum(nil)
}

func (k keys) issue(handle, code string, expires time.Time) (string, error) {
	b := make([]byte, 0, tokenLen)
	b = append(b, challengeVersion)
	nonce := make([]byte, nonceLen)
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("verification: make a nonce: %w", err)
	}
	b = append(b, nonce...)
	b = binary.BigEndian.AppendUint64(b, uint64(expires.Unix()))
	b = append(b, k.codeHash(nonce, handle, code)...)
	b = append(b, k.mac(b, handle)...)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// open returns the challenge of token if this server issued it for handle.
func (k keys) open(token, handle string) (challenge, bool) {
	if base64.RawURLEncoding.DecodedLen(len(token)) != tokenLen {
		return challenge{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != tokenLen || b[0] != challengeVersion {
		return challenge{}, false
	}
	payload, mac := b[:payloadLen], b[payloadLen:]
	if !hmac.Equal(mac, k.mac(payload, handle)) {
		return challenge{}, false
	}
	var c challenge
	copy(c.nonce[:], payload[1:1+nonceLen])
	c.expires = time.Unix(int64(binary.BigEndian.Uint64(payload[1+nonceLen:])), 0)
	c.codeMAC = payload[1+nonceLen+8:]
	return c, true
}

// codeMatches compares in constant time: how long it takes says nothing
// about how close a guess was.
func (k keys) codeMatches(c challenge, handle, code string) bool {
	return hmac.Equal(c.codeMAC, k.codeHash(c.nonce[:], handle, code))
}

// attempts counts the checks of each challenge on this node until it
// expires. Expired records are swept inline as the map grows (no
// goroutine); at max, new challenges are refused rather than old counts
// forgotten, since a forgotten count is a fresh set of guesses.
type attempts struct {
	limit, max int

	mu      sync.Mutex
	m       map[[nonceLen]byte]attempt // guarded by mu
	sweepAt int                        // sweep when len(m) reaches this (guarded by mu)
}

type attempt struct {
	n       int
	expires time.Time
}

const minSweepAt = 1024

func newAttempts(limit, max int) *attempts {
	return &attempts{limit: limit, max: max, m: make(map[[nonceLen]byte]attempt), sweepAt: minSweepAt}
}

// take counts one check of nonce and returns how many there have been,
// or ErrVoid when the limit was already reached.
func (a *attempts) take(nonce [nonceLen]byte, expires, now time.Time) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.m[nonce]
	if !ok && (len(a.m) >= a.sweepAt || len(a.m) >= a.max) {
		for k, r := range a.m {
			if !now.Before(r.expires) {
				delete(a.m, k)
			}
		}
		a.sweepAt = max(minSweepAt, 2*len(a.m))
		if len(a.m) >= a.max {
			return 0, ErrBusy
		}
	}
	if r.n >= a.limit {
		return r.n, ErrVoid
	}
	r.n++
	r.expires = expires
	a.m[nonce] = r
	return r.n, nil
}

// size is how many challenges are counted (tests).
func (a *attempts) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.m)
}
