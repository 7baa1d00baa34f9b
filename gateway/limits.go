package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/protos/courierpb"
)

// Rate is the shape of a token bucket: N events per Per, in bursts of up
// to N. The zero Rate means "the default"; a negative N means "no limit".
type Rate struct {
	N   int
	Per time.Duration
}

// Off is a Rate that limits nothing.
var Off = Rate{N: -1}

// ParseRate reads "N/duration" (e.g. "20/1m", "5/10s", "32MiB/1m" for a
// byte limit) or "off".
func ParseRate(s string) (Rate, error) {
	if s == "off" {
		return Off, nil
	}
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("rate %q: want N/duration (e.g. 20/1m) or off", s)
	}
	unit := 1
	for suffix, u := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(n, suffix); ok {
			n, unit = v, u
		}
	}
	count, err := strconv.Atoi(n)
	if err != nil || count <= 0 || count > math.MaxInt32/unit {
		return Rate{}, fmt.Errorf("rate %q: N must be a positive integer (bytes may be given as 32MiB)", s)
	}
	count *= unit
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("rate %q: bad duration: %v", s, err)
	}
	return Rate{N: count, Per: d}, nil
}

func (r Rate) String() string {
	if r.N < 0 {
		return "off"
	}
	return strconv.Itoa(r.N) + "/" + r.Per.String()
}

// Set and Type make a Rate a command-line flag value (pflag.Value).
func (r *Rate) Set(s string) error {
	v, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Type names the flag's value in help output.
func (*Rate) Type() string { return "rate" }

func (r Rate) orDefault(def Rate) Rate {
	if r.N == 0 {
		return def
	}
	return r
}

// Limits bounds what one client (an IP address, or an account) may make
// the HTTP API do. Zero fields take the defaults below; Off disables one.
type Limits struct {
	// RegisterPerIP: POST /v1/register per client IP (default 20/1h).
	RegisterPerIP Rate
	// RegisterPerHandle: POST /v1/register per handle, folded as the
	// store folds it (default 5/1m), so probing one name is slow too.
	RegisterPerHandle Rate
	// CodePerIP, CodePerHandle and CodePerAddress: POST /v1/register/code
	// (verified registration) per client IP (default 20/1h), per handle
	// (default 5/1h) and per address, folded (default 5/1h). Each code may
	// cost the operator a text message, so none of the three can be made
	// to spend without bound by rotating the other two.
	CodePerIP, CodePerHandle, CodePerAddress Rate
	// TokenPerIP: POST /v1/token per client IP (default 600/1m: many
	// clients may share an address behind a carrier's NAT).
	TokenPerIP Rate
	// TokenPerAccount: POST /v1/token per user (by id, or by folded handle
	// when it names nobody; default 120/1m): one account's requests from
	// many addresses stay bounded. Secrets are 256 random bits, so this
	// bounds cost, not guessing; it is generous because a client (the CLI
	// runs one per command) signs in on every start.
	TokenPerAccount Rate
	// BundlesPerRequester: GET /v1/keys/{user} per requesting user, all
	// targets together (default 1200/1h: a client starting sessions with
	// every member of a large group needs many once).
	BundlesPerRequester Rate
	// BundlesPerPair: GET /v1/keys/{user} per requesting user and target
	// (default 10/1m): a stranger fetching one user's bundle over and over
	// is refused long before the pool is gone.
	BundlesPerPair Rate
	// BundlesPerTarget: one-time prekeys handed out per target to other
	// users (default 60/1h). Beyond it bundles carry the signed prekey
	// only (the last-resort path of X3DH, as when the pool is empty), so
	// many requesters together cannot drain a pool, yet everyone can
	// still start a session. The owner's own devices are not counted.
	BundlesPerTarget Rate
	// LimitLoopback applies the per-IP limits (these, and the node's cap on
	// connections per IP) to loopback peers too. Off by default: on one
	// machine, a reverse proxy terminating TLS or a bench is many clients
	// behind 127.0.0.1, and Courier does not trust X-Forwarded-For, so
	// limiting the address would limit all of them together.
	LimitLoopback bool
	// FramesPerIP bounds the WebSocket frames of all connections of one
	// client address together (default 6000/2s: 3,000 a second, bursts of
	// 6,000), on top of each connection's --rate. Past it the address's
	// sockets are read no faster than it allows.
	FramesPerIP Rate
	// BytesPerIP bounds the bytes those frames carry together (default
	// 32MiB/4s: 8 MiB a second, bursts of 32 MiB). Frames refused later
	// (a send over its limit) have been read and decoded all the same: a
	// flood of large frames costs the node by its bytes.
	BytesPerIP Rate
	// RefusalDelay holds each 429 of the HTTP API this long (at most the
	// wait it names) before answering: a tarpit, so one address looping on
	// refusals costs the node a sleeping request per connection, not a
	// parse and an answer each. Zero: none (tests); `courier serve`
	// defaults to 250ms.
	RefusalDelay time.Duration
	// Actions bounds the costly socket and key API requests per user and
	// per client address (actions.go); zero rates take
	// DefaultActionLimits.
	Actions [NumActions]ActionLimit
	// MaxKeys caps the keys one limiter remembers (default 100,000). Keys
	// whose bucket has refilled are forgotten first; at the cap arbitrary
	// keys are forgotten (down to 3/4 of it), which only ever gives those
	// keys a fresh bucket.
	MaxKeys int
}

// WithDefaults fills the zero fields with the defaults documented on them.
func (l Limits) WithDefaults() Limits {
	l.RegisterPerIP = l.RegisterPerIP.orDefault(Rate{20, time.Hour})
	l.RegisterPerHandle = l.RegisterPerHandle.orDefault(Rate{5, time.Minute})
	l.CodePerIP = l.CodePerIP.orDefault(Rate{20, time.Hour})
	l.CodePerHandle = l.CodePerHandle.orDefault(Rate{5, time.Hour})
	l.CodePerAddress = l.CodePerAddress.orDefault(Rate{5, time.Hour})
	l.TokenPerIP = l.TokenPerIP.orDefault(Rate{600, time.Minute})
	l.TokenPerAccount = l.TokenPerAccount.orDefault(Rate{120, time.Minute})
	l.BundlesPerRequester = l.BundlesPerRequester.orDefault(Rate{1200, time.Hour})
	l.BundlesPerPair = l.BundlesPerPair.orDefault(Rate{10, time.Minute})
	l.BundlesPerTarget = l.BundlesPerTarget.orDefault(Rate{60, time.Hour})
	l.FramesPerIP = l.FramesPerIP.orDefault(Rate{6000, 2 * time.Second})
	l.BytesPerIP = l.BytesPerIP.orDefault(Rate{32 << 20, 4 * time.Second})
	for i := range l.Actions {
		l.Actions[i].PerUser = l.Actions[i].PerUser.orDefault(DefaultActionLimits[i].PerUser)
		l.Actions[i].PerIP = l.Actions[i].PerIP.orDefault(DefaultActionLimits[i].PerIP)
	}
	if l.MaxKeys <= 0 {
		l.MaxKeys = 100_000
	}
	return l
}

func (l Limits) validate() error {
	for name, r := range map[string]Rate{
		"RegisterPerIP": l.RegisterPerIP, "RegisterPerHandle": l.RegisterPerHandle,
		"CodePerIP": l.CodePerIP, "CodePerHandle": l.CodePerHandle, "CodePerAddress": l.CodePerAddress,
		"TokenPerIP": l.TokenPerIP, "TokenPerAccount": l.TokenPerAccount, "FramesPerIP": l.FramesPerIP, "BytesPerIP": l.BytesPerIP,
		"BundlesPerRequester": l.BundlesPerRequester, "BundlesPerPair": l.BundlesPerPair, "BundlesPerTarget": l.BundlesPerTarget,
	} {
		if r.N > 0 && r.Per <= 0 {
			return fmt.Errorf("gateway limits: %s %v needs a positive period", name, r)
		}
	}
	for i, a := range l.Actions {
		for _, r := range []Rate{a.PerUser, a.PerIP} {
			if r.N > 0 && r.Per <= 0 {
				return fmt.Errorf("gateway limits: %s %v needs a positive period", Action(i), r)
			}
		}
	}
	return nil
}

// limiters are the gateway's keyed token buckets (Limits). They start no
// goroutine: idle keys are swept inline as a map grows, so there is
// nothing to stop.
type limiters struct {
	registerIP, registerHandle *keyedLimiter
	codeIP, codeHandle         *keyedLimiter
	codeAddress                *keyedLimiter
	tokenIP, tokenAccount      *keyedLimiter
	bundlesRequester           *keyedLimiter
	bundlesPair                *keyedLimiter
	bundlesTarget              *keyedLimiter
	// framesIP is every socket of one address reading frames (session.go).
	framesIP, bytesIP *keyedLimiter
	// prekeysLow gates PREKEYS_LOW notices per device (keys.go).
	prekeysLow *keyedLimiter
}

// prekeysLowNotices: a device whose pool is below the watermark is told
// at most once a minute, however fast it drains; one notice is enough for
// it to upload more, and a pool drained again later is told again.
var prekeysLowNotices = Rate{1, time.Minute}

func newLimiters(l Limits) limiters {
	return limiters{
		registerIP:       newKeyedLimiter(l.RegisterPerIP, l.MaxKeys),
		registerHandle:   newKeyedLimiter(l.RegisterPerHandle, l.MaxKeys),
		codeIP:           newKeyedLimiter(l.CodePerIP, l.MaxKeys),
		codeHandle:       newKeyedLimiter(l.CodePerHandle, l.MaxKeys),
		codeAddress:      newKeyedLimiter(l.CodePerAddress, l.MaxKeys),
		tokenIP:          newKeyedLimiter(l.TokenPerIP, l.MaxKeys),
		tokenAccount:     newKeyedLimiter(l.TokenPerAccount, l.MaxKeys),
		bundlesRequester: newKeyedLimiter(l.BundlesPerRequester, l.MaxKeys),
		bundlesPair:      newKeyedLimiter(l.BundlesPerPair, l.MaxKeys),
		bundlesTarget:    newKeyedLimiter(l.BundlesPerTarget, l.MaxKeys),
		prekeysLow:       newKeyedLimiter(prekeysLowNotices, l.MaxKeys),
		framesIP:         newKeyedLimiter(l.FramesPerIP, l.MaxKeys),
		bytesIP:          newKeyedLimiter(l.BytesPerIP, l.MaxKeys),
	}
}

// all names the HTTP API's limiters for the admin stats and logs; the
// PREKEYS_LOW pacing is not a limit on anyone and is left out.
func (l *limiters) all(into map[string]*keyedLimiter) {
	into["register/ip"], into["register/handle"] = l.registerIP, l.registerHandle
	into["register-code/ip"], into["register-code/handle"], into["register-code/address"] = l.codeIP, l.codeHandle, l.codeAddress
	into["token/ip"], into["token/account"] = l.tokenIP, l.tokenAccount
	into["bundles/requester"], into["bundles/pair"] = l.bundlesRequester, l.bundlesPair
	into["frames/ip"], into["frame-bytes/ip"] = l.framesIP, l.bytesIP
	// Not a refusal: bundles past it carry no one-time prekey.
	into["bundles/target-prekeys"] = l.bundlesTarget
}

// keyedLimiter is one tokenBucket per key (an IP, a user, a handle),
// bounded in memory: a bucket that has refilled is the same as no bucket,
// so those are dropped whenever the map doubles (amortised O(1) per call),
// and MaxKeys caps it outright. A nil keyedLimiter allows everything.
type keyedLimiter struct {
	perSec  float64
	burst   int
	maxKeys int
	// name and log are set once by the gateway before any use: what the
	// limit is called in the admin stats and in the log line written when
	// a key starts being refused.
	name string
	log  *slog.Logger
	// redact logs a hash of the key instead of the key: a phone number or
	// e-mail address is personal data the log must not keep.
	redact bool
	// refused counts refusals since start (the admin stats' rate_limited).
	refused atomic.Int64

	mu      sync.Mutex
	buckets map[string]*tokenBucket // guarded by mu
	sweepAt int                     // sweep when len(buckets) reaches this (guarded by mu)
}

const minSweepAt = 1024

func newKeyedLimiter(r Rate, maxKeys int) *keyedLimiter {
	if r.N < 0 {
		return nil
	}
	return &keyedLimiter{
		perSec: float64(r.N) / r.Per.Seconds(), burst: r.N, maxKeys: maxKeys,
		buckets: make(map[string]*tokenBucket), sweepAt: minSweepAt,
	}
}

// allow takes one token from key's bucket; when there is none it says how
// long until there will be.
func (l *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	return l.allowN(key, 1, now)
}

// allowN takes n tokens from key's bucket, or none and says how long until
// there will be n. n must not exceed the burst (see fits).
func (l *keyedLimiter) allowN(key string, n int, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.sweepAt || len(l.buckets) >= l.maxKeys {
			l.sweepLocked(now)
		}
		nb := newTokenBucket(l.perSec, l.burst)
		b = &nb
		l.buckets[key] = b
	}
	if b.allowN(now, n) {
		b.limited = false
		l.mu.Unlock()
		return true, 0
	}
	wait := b.retryAfterN(now, n)
	first := !b.limited
	b.limited = true
	l.mu.Unlock()
	l.refused.Add(1)
	if first && l.log != nil {
		shown := key
		if l.redact {
			sum := sha256.Sum256([]byte(key))
			shown = "sha256:" + hex.EncodeToString(sum[:6])
		}
		l.log.Info("rate limit reached", "limit", l.name, "key", shown, "retry_after", wait)
	}
	return false, wait
}

// fits reports whether a request of cost n can ever pass: n within the burst.
func (l *keyedLimiter) fits(n int) bool { return l == nil || n <= l.burst }

// refusals is how many requests l refused since start.
func (l *keyedLimiter) refusals() int64 {
	if l == nil {
		return 0
	}
	return l.refused.Load()
}

// sweepLocked forgets refilled buckets and then, if still at maxKeys,
// arbitrary ones down to three quarters of it, so a flood of new keys
// sweeps once per maxKeys/4 of them, not once each. Lock must be held.
func (l *keyedLimiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.full(now) {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.maxKeys {
		for k := range l.buckets {
			if len(l.buckets) <= l.maxKeys*3/4 {
				break
			}
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(minSweepAt, 2*len(l.buckets))
}

// size is how many keys l remembers (tests).
func (l *keyedLimiter) size() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// clientKey names the client of r for per-IP limits: its address, or its
// /64 for IPv6, where one subscriber holds a whole /64. Courier does not
// trust X-Forwarded-For: behind a proxy every client is the proxy. ok is
// false for a peer the per-IP limits leave alone (see LimitLoopback).
func clientKey(r *http.Request, limitLoopback bool) (key string, ok bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return IPKey(host), limitLoopback || !IsLoopback(host)
}

// IsLoopback reports whether host is a loopback address (127.0.0.0/8,
// ::1, or IPv4-mapped loopback).
func IsLoopback(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// IPKey is the per-IP limits' key of an address: the address itself for
// IPv4 (and IPv4-mapped IPv6), its /64 prefix for IPv6.
func IPKey(host string) string {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// maxLimitKey bounds the client-chosen part of a limiter key (a user id,
// a handle): user ids are 36-byte UUIDs and handles at most 64 bytes, and
// a longer one names nobody, so it is refused before it can be a key (a
// limiter remembers up to MaxKeys keys: their size must be bounded too).
const maxLimitKey = max(actors.MaxUserIDLen, actors.MaxHandleLen)

// limited answers 429 RATE_LIMITED with Retry-After (whole seconds, at
// least 1) when ok is false, after Limits.RefusalDelay: a client looping
// on refused requests then waits for each answer instead of making the
// node parse and refuse thousands a second.
func (g *Gateway) limited(w http.ResponseWriter, r *http.Request, ok bool, wait time.Duration, what string) bool {
	if ok {
		return false
	}
	if d := min(g.cfg.Limits.RefusalDelay, wait); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	secs := max(1, int64((wait+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeError(w, http.StatusTooManyRequests, courierpb.ErrorCode_RATE_LIMITED,
		fmt.Sprintf("too many %s: retry in %ds", what, secs))
	return true
}
