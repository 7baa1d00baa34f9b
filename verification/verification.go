// Package verification proves, before a handle is registered, that the
// person registering it receives messages at an address: a phone number
// or an e-mail address, opaque to Courier. It is WhatsApp's and Signal's
// SMS code, with the delivery left to the operator:
//
//  1. Request makes a random 6-digit code, hands it to a Sender (the
//     signed webhook here, Webhook) with the handle, the address and
//     when it expires, and returns a challenge for the client.
//  2. Check takes the challenge back with the code the person read, and
//     succeeds only for the right code, for the same handle, before it
//     expires, within MaxAttempts tries.
//
// # Stateless challenges
//
// Nothing is stored: the challenge is the server's signed record of the
// code (a nonce, the expiry, and a keyed hash of handle and code; never
// the code), so any node of a cluster that shares the key checks it. The
// hash is keyed (HMAC), so the 10^6 possible codes cannot be tried
// offline against a challenge.
//
// The cost of statelessness is the attempt count: each node counts the
// tries of a challenge in memory, so a challenge is void after MaxAttempts
// wrong codes on one node, and a cluster of N nodes allows at most
// N×MaxAttempts guesses (5 of 10^6 per node with the defaults) before the
// code expires. Registration's own per-handle limit bounds them further.
// A node that restarts forgets its counts; the expiry still holds.
package verification

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Modes of registration.
const (
	// ModeOpen: anyone may register any free handle (a local server).
	ModeOpen = "open"
	// ModeVerified: registration needs a code sent to an address.
	ModeVerified = "verified"
)

// CodeDigits is the length of a code.
const CodeDigits = 6

// MaxAddressLen bounds an address in bytes: an e-mail address is at most
// 254 (RFC 5321), a phone number far less.
const MaxAddressLen = 254

// Verification is one code on its way to an address.
type Verification struct {
	Handle    string
	Address   string
	Code      string
	ExpiresAt time.Time
}

// Sender delivers a code to its address (an SMS gateway, a mailer, the
// operator's webhook). Send returns once the code is handed over; an error
// means the person will not get it, and registration fails with nothing
// created.
type Sender interface {
	Send(ctx context.Context, v Verification) error
}

// Errors of Check, each saying what the client does next.
var (
	ErrInvalid   = errors.New("not a challenge this server issued for this handle: request a code with POST /v1/register/code")
	ErrExpired   = errors.New("the code has expired: request a new one")
	ErrWrongCode = errors.New("wrong code")
	ErrVoid      = errors.New("too many wrong codes: this code is void, request a new one")
	// ErrBusy: this node tracks as many challenges as it may (MaxPending);
	// retry later.
	ErrBusy = errors.New("too many verifications in progress: retry later")
)

// ErrNotSent wraps a Sender's failure (Request).
var ErrNotSent = errors.New("the verification code could not be delivered")

// Config tunes verified registration. Zero values take the defaults.
type Config struct {
	// Mode is ModeOpen (default, also "") or ModeVerified.
	Mode string
	// WebhookURL and WebhookSecret make the sender a Webhook: codes are
	// POSTed there, HMAC-signed with the secret. Both are needed in
	// verified mode unless Sender is set.
	WebhookURL    string
	WebhookSecret string
	// Sender delivers codes instead of the webhook (an embedding program's
	// own SMS or mail provider).
	Sender Sender
	// CodeTTL is how long a code is valid (default 10m).
	CodeTTL time.Duration
	// MaxAttempts is how many codes one challenge may be checked against,
	// per node, before it is void (default 5).
	MaxAttempts int
	// SendTimeout bounds handing one code to the Sender, retries included
	// (default 15s): the client's request waits for it.
	SendTimeout time.Duration
	// MaxPending caps the challenges one node counts attempts for (default
	// 100,000); past it, checks are refused with ErrBusy until the oldest
	// expire, rather than forgetting counts, which would give guesses back.
	MaxPending int
}

// Verified reports whether registration needs a code.
func (c Config) Verified() bool { return c.Mode == ModeVerified }

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModeOpen
	}
	if c.CodeTTL <= 0 {
		c.CodeTTL = 10 * time.Minute
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 15 * time.Second
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 100_000
	}
	return c
}

// Validate says what a configuration lacks, in the terms of its fields.
func (c Config) Validate() error {
	switch c.Mode {
	case "", ModeOpen:
		return nil
	case ModeVerified:
	default:
		return fmt.Errorf("registration mode %q: use %s or %s", c.Mode, ModeOpen, ModeVerified)
	}
	if c.Sender != nil {
		return nil
	}
	if c.WebhookURL == "" || c.WebhookSecret == "" {
		return errors.New("verified registration needs a sender of codes: set the webhook URL and secret (--registration-webhook-url, --registration-webhook-secret)")
	}
	return nil
}

// Service issues and checks codes. It is safe for concurrent use and
// starts no goroutine.
type Service struct {
	cfg    Config
	sender Sender
	keys   keys
	tries  *attempts
	now    func() time.Time
}

// New returns the Service of a verified-mode configuration. key (at least
// 32 bytes) signs challenges: every node of a cluster must have the same.
func New(cfg Config, key []byte) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if !cfg.Verified() {
		return nil, errors.New("verification: a Service is for verified registration only")
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("verification: the challenge key has %d bytes, needs at least 32", len(key))
	}
	sender := cfg.Sender
	if sender == nil {
		// Each try gets a third of the time, so a receiver that hangs once
		// still leaves room for the retries.
		sender = &Webhook{URL: cfg.WebhookURL, Secret: []byte(cfg.WebhookSecret), Client: &http.Client{Timeout: cfg.SendTimeout / 3}}
	}
	return &Service{
		cfg: cfg, sender: sender, keys: deriveKeys(key),
		tries: newAttempts(cfg.MaxAttempts, cfg.MaxPending),
		now:   time.Now,
	}, nil
}

// Challenge is what Request hands the client: it sends Token back with
// the code.
type Challenge struct {
	Token     string
	ExpiresAt time.Time
}

// Request makes a code for handle, has it delivered to address, and
// returns its challenge. A Sender failure is ErrNotSent (wrapping the
// cause, which never quotes the code); no challenge exists then.
func (s *Service) Request(ctx context.Context, handle, address string) (Challenge, error) {
	code, err := NewCode()
	if err != nil {
		return Challenge{}, err
	}
	exp := s.now().Add(s.cfg.CodeTTL).Truncate(time.Second)
	tok, err := s.keys.issue(handle, code, exp)
	if err != nil {
		return Challenge{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	if err := s.sender.Send(ctx, Verification{Handle: handle, Address: address, Code: code, ExpiresAt: exp}); err != nil {
		return Challenge{}, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	return Challenge{Token: tok, ExpiresAt: exp}, nil
}

// Check tells whether code is the one challenge was issued with, for
// handle, unexpired, and within its attempts on this node. Every call
// with a genuine challenge counts as an attempt, right or wrong.
func (s *Service) Check(challenge, handle, code string) error {
	now := s.now()
	c, ok := s.keys.open(challenge, handle)
	if !ok {
		return ErrInvalid
	}
	if !now.Before(c.expires) {
		return ErrExpired
	}
	n, err := s.tries.take(c.nonce, c.expires, now)
	if err != nil {
		return err
	}
	if s.keys.codeMatches(c, handle, code) {
		return nil
	}
	if left := s.cfg.MaxAttempts - n; left > 0 {
		return fmt.Errorf("%w: %d attempts left", ErrWrongCode, left)
	}
	return ErrVoid
}

// NewCode is a uniformly random code of CodeDigits digits.
func NewCode() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", fmt.Errorf("verification: make a code: %w", err)
	}
	return fmt.Sprintf("%06d", n.Int64()), nil
}

// CheckAddress refuses an address Courier will not carry: empty, longer
// than MaxAddressLen, not UTF-8, or with control characters or spaces at
// its ends. Otherwise it is opaque: what it means is the Sender's affair.
func CheckAddress(a string) error {
	switch {
	case a == "":
		return errors.New("address is required: the phone number or e-mail address the code goes to")
	case len(a) > MaxAddressLen:
		return fmt.Errorf("address is longer than %d bytes", MaxAddressLen)
	case !utf8.ValidString(a):
		return errors.New("address must be UTF-8")
	case strings.TrimSpace(a) != a:
		return errors.New("address must not start or end with spaces")
	case strings.ContainsFunc(a, unicode.IsControl):
		return errors.New("address must not contain control characters")
	}
	return nil
}

// AddressKey folds an address for rate limits: case, spaces and the
// punctuation people write phone numbers with ("+1 (555) 010-9999") do
// not make another address. It may fold two real addresses together,
// which only makes their limit shared, never looser.
func AddressKey(a string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case unicode.IsSpace(r), r == '-', r == '(', r == ')', r == '.':
			return -1
		}
		return unicode.ToLower(r)
	}, a)
}
