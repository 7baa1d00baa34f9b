package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// Credentials are what a device needs to sign in: keep them secret (the CLI
// stores them with mode 0600). The device secret is shown once only, by
// Register.
type Credentials struct {
	BaseURL      string `json:"base_url"`
	UserID       string `json:"user_id"`
	Handle       string `json:"handle"`
	DeviceID     uint32 `json:"device_id"`
	DeviceSecret string `json:"device_secret"`
}

// Register creates a user with its first device. base may be an http(s) or
// ws(s) URL. A taken handle fails with an *Error of code HANDLE_TAKEN.
//
// A server with verified registration needs WithVerificationCode: the
// challenge of RequestCode and the code that reached the address. Without
// it, or with a wrong, expired or used-up code, Register fails with an
// *Error of code VERIFICATION_FAILED (HTTP 403).
//
// With WithE2EE the device's key file is created and its identity key,
// signed prekey and a batch of one-time prekeys are published before
// Register returns, as Signal and WhatsApp do at registration: others can
// write to the user before its first connection. The user exists even when
// publishing fails (the error says so); the first Dial publishes again.
func Register(ctx context.Context, base, handle string, opts ...Option) (Credentials, error) {
	body := map[string]string{"handle": handle}
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.verifyChallenge != "" || c.verifyCode != "" {
		body["challenge"], body["code"] = c.verifyChallenge, c.verifyCode
	}
	creds, err := newDevice(ctx, base, "/v1/register", body, opts)
	if err != nil {
		return Credentials{}, fmt.Errorf("register %q: %w", handle, err)
	}
	creds.Handle = handle
	if err := publishAtRegistration(ctx, creds, opts); err != nil {
		return creds, fmt.Errorf("registered %q (user id %s) but could not publish its encryption keys: %w", handle, creds.UserID, err)
	}
	return creds, nil
}

// CodeChallenge is a verification code on its way to an address
// (RequestCode). Keep it until the person has the code: Register needs
// Challenge with the code, before ExpiresAt.
type CodeChallenge struct {
	Handle    string    `json:"handle"`
	Challenge string    `json:"challenge"`
	ExpiresAt time.Time `json:"expires_at"`
}

// RequestCode asks a server with verified registration to send a code for
// handle to address (a phone number or e-mail address, which the server's
// operator delivers to). Errors are *Error: HANDLE_TAKEN; RATE_LIMITED
// when codes for the handle, the address or this client came too often;
// UNAVAILABLE (HTTP 502) when the code could not be delivered; NOT_FOUND
// when the server has open registration and needs no code.
func RequestCode(ctx context.Context, base, handle, address string, opts ...Option) (CodeChallenge, error) {
	cfg, err := buildConfig(opts)
	if err != nil {
		return CodeChallenge{}, err
	}
	httpBase, _, err := endpoints(base)
	if err != nil {
		return CodeChallenge{}, err
	}
	var out CodeChallenge
	if err := doJSON(ctx, cfg.httpClient, http.MethodPost, httpBase+"/v1/register/code", "", map[string]string{"handle": handle, "address": address}, &out); err != nil {
		return CodeChallenge{}, fmt.Errorf("request a verification code for %q: %w", handle, err)
	}
	out.Handle = handle
	return out, nil
}

// WithVerificationCode registers with the code that reached the address
// and the challenge RequestCode returned with it (Register).
func WithVerificationCode(challenge, code string) Option {
	return func(o *config) { o.verifyChallenge, o.verifyCode = challenge, code }
}

// newDevice posts to an endpoint that creates a device (registration,
// linking) and returns its credentials; the secret is shown only here.
func newDevice(ctx context.Context, base, path string, body any, opts []Option) (Credentials, error) {
	cfg, err := buildConfig(opts)
	if err != nil {
		return Credentials{}, err
	}
	httpBase, _, err := endpoints(base)
	if err != nil {
		return Credentials{}, err
	}
	var out struct {
		UserID       string `json:"user_id"`
		DeviceID     uint32 `json:"device_id"`
		DeviceSecret string `json:"device_secret"`
	}
	if err := doJSON(ctx, cfg.httpClient, http.MethodPost, httpBase+path, "", body, &out); err != nil {
		return Credentials{}, err
	}
	return Credentials{BaseURL: httpBase, UserID: out.UserID, DeviceID: out.DeviceID, DeviceSecret: out.DeviceSecret}, nil
}

// doJSON sends body as JSON (nil: no body) and decodes a 2xx answer into
// out; a non-2xx answer becomes an *Error.
func doJSON(ctx context.Context, hc *http.Client, method, u, bearer string, body, out any) error {
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequestWithContext(ctx, method, u, rd)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, u, nil)
	}
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errorFromHTTP(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s answer: %w", u, err)
	}
	return nil
}

// tokenSource fetches access tokens and refreshes them before they expire.
type tokenSource struct {
	hc    *http.Client
	creds Credentials
	now   func() time.Time

	mu      sync.Mutex
	token   string
	refresh time.Time // when to fetch a new one
}

// get returns a token valid for a while yet, fetching one if needed.
// Tokens are valid on every node of a cluster, so one is fetched from
// whichever server base the client uses at the moment.
func (t *tokenSource) get(ctx context.Context, base string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && t.now().Before(t.refresh) {
		return t.token, nil
	}
	var out struct {
		AccessToken  string `json:"access_token"`
		ExpiresInSec int64  `json:"expires_in_sec"`
	}
	req := map[string]any{"user_id": t.creds.UserID, "device_id": t.creds.DeviceID, "device_secret": t.creds.DeviceSecret}
	if t.creds.UserID == "" {
		req = map[string]any{"handle": t.creds.Handle, "device_id": t.creds.DeviceID, "device_secret": t.creds.DeviceSecret}
	}
	if err := doJSON(ctx, t.hc, http.MethodPost, base+"/v1/token", "", req, &out); err != nil {
		return "", fmt.Errorf("get access token: %w", err)
	}
	t.token = out.AccessToken
	t.refresh = t.now().Add(refreshAfter(time.Duration(out.ExpiresInSec) * time.Second))
	return t.token, nil
}

// refreshAfter is when, within a token's lifetime, to replace it: a fifth
// of the lifetime early, at least 5s and at most a minute early.
func refreshAfter(ttl time.Duration) time.Duration {
	margin := min(max(ttl/5, 5*time.Second), time.Minute)
	return max(ttl-margin, 0)
}

// invalidate drops tok (the server refused it) so the next get fetches anew.
func (t *tokenSource) invalidate(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == tok {
		t.token = ""
	}
}

func authRefused(err error) bool {
	return IsCode(err, courierpb.ErrorCode_TOKEN_EXPIRED) || IsCode(err, courierpb.ErrorCode_UNAUTHENTICATED)
}

// api calls the HTTP API with a bearer token, fetching a fresh token once if
// the server refuses the cached one.
func (c *Client) api(ctx context.Context, method, path string, body, out any) error {
	for attempt := 0; ; attempt++ {
		srv := c.server()
		tok, err := c.tokens.get(ctx, srv.httpBase)
		if err != nil {
			if transportErr(err) {
				c.failOver(srv)
			}
			return err
		}
		err = doJSON(ctx, c.cfg.httpClient, method, srv.httpBase+path, tok, body, out)
		if err != nil && transportErr(err) {
			c.failOver(srv)
		}
		if err != nil && attempt == 0 && authRefused(err) {
			c.tokens.invalidate(tok)
			continue
		}
		return err
	}
}

// LookupUser returns the handle of the user with id userID; an unknown id
// fails with an *Error of code NOT_FOUND.
func (c *Client) LookupUser(ctx context.Context, userID string) (string, error) {
	var out struct {
		Handle string `json:"handle"`
	}
	if err := c.api(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(userID), nil, &out); err != nil {
		return "", fmt.Errorf("look up user %s: %w", userID, err)
	}
	return out.Handle, nil
}

// LookupHandle returns the user id registered under handle; an unknown
// handle fails with an *Error of code NOT_FOUND.
func (c *Client) LookupHandle(ctx context.Context, handle string) (string, error) {
	var out struct {
		UserID string `json:"user_id"`
	}
	if err := c.api(ctx, http.MethodGet, "/v1/users/by-handle/"+url.PathEscape(handle), nil, &out); err != nil {
		return "", fmt.Errorf("look up %q: %w", handle, err)
	}
	return out.UserID, nil
}
