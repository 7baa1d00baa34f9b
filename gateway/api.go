package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// RegisterRequest is the body of POST /v1/register. Challenge and Code are
// needed with verified registration only (verify.go): the challenge of
// POST /v1/register/code and the code that went to the address.
type RegisterRequest struct {
	Handle    string `json:"handle"`
	Challenge string `json:"challenge,omitempty"`
	Code      string `json:"code,omitempty"`
}

// RegisterResponse carries the device secret, shown this once only.
type RegisterResponse struct {
	UserID       string `json:"user_id"`
	DeviceID     uint32 `json:"device_id"`
	DeviceSecret string `json:"device_secret"`
}

// TokenRequest is the body of POST /v1/token. UserID or Handle names the user.
type TokenRequest struct {
	UserID       string `json:"user_id,omitempty"`
	Handle       string `json:"handle,omitempty"`
	DeviceID     uint32 `json:"device_id"`
	DeviceSecret string `json:"device_secret"`
}

// TokenResponse is a short-lived access token for /v1/ws and the API.
type TokenResponse struct {
	AccessToken  string    `json:"access_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	ExpiresInSec int64     `json:"expires_in_sec"`
}

// UserInfo is the public view of a user.
type UserInfo struct {
	UserID string `json:"user_id"`
	Handle string `json:"handle"`
}

// Handles are phone numbers or names: letters, digits and . _ + - only.
var handlePattern = regexp.MustCompile(`^[A-Za-z0-9._+\-]{1,64}$`)

const maxJSONBody = 16 << 10

func (g *Gateway) routes() {
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	g.mux.HandleFunc("POST /v1/register", g.handleRegister)
	g.mux.HandleFunc("POST /v1/register/code", g.handleRegisterCode)
	g.mux.HandleFunc("POST /v1/token", g.handleToken)
	g.mux.HandleFunc("GET /v1/users/by-handle/{handle}", g.handleLookup)
	g.mux.HandleFunc("GET /v1/users/{user_id}", g.handleUser)
	g.mux.HandleFunc("GET /v1/ws", g.handleWS)
	g.mux.HandleFunc("PUT /v1/keys", g.handlePutKeys)
	g.mux.HandleFunc("GET /v1/keys", g.handleCountKeys)
	g.mux.HandleFunc("GET /v1/keys/{user_id}", g.handleBundles)
	g.mux.HandleFunc("POST /v1/devices/link-code", g.handleLinkCode)
	g.mux.HandleFunc("POST /v1/devices/link", g.handleLink)
	g.mux.HandleFunc("GET /v1/devices", g.handleListDevices)
	g.mux.HandleFunc("DELETE /v1/devices/{device_id}", g.handleUnlink)
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "body must be a JSON object: "+err.Error())
		return false
	}
	return true
}

func (g *Gateway) storeCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), g.cfg.RequestTimeout)
}

func (g *Gateway) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !handlePattern.MatchString(req.Handle) {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "handle must be 1-64 of A-Z a-z 0-9 . _ + -")
		return
	}
	now := time.Now()
	if key, ok := clientKey(r, g.cfg.Limits.LimitLoopback); ok {
		if ok, wait := g.limits.registerIP.allow(key, now); g.limited(w, r, ok, wait, "registrations from this address") {
			return
		}
	}
	if ok, wait := g.limits.registerHandle.allow(persistence.HandleKey(req.Handle), now); g.limited(w, r, ok, wait, "registrations of this handle") {
		return
	}
	// After the limits: they bound the guesses at a code too.
	if !g.verified(w, req) {
		return
	}
	id, err := uuid.NewV7()
	if err != nil {
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "cannot make a user id")
		return
	}
	secret, hash, err := NewDeviceSecret()
	if err != nil {
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, err.Error())
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	now = now.UTC()
	// The device goes first: an orphan device of a user id nobody holds is
	// harmless, a user without its primary device is not.
	if err := g.cfg.Store.PutDevice(ctx, persistence.Device{UserID: id.String(), DeviceID: 1, SecretHash: hash, CreatedAt: now}); err != nil {
		g.storeFailed(w, "register", err)
		return
	}
	err = g.cfg.Store.CreateUser(ctx, persistence.User{ID: id.String(), Handle: req.Handle, CreatedAt: now})
	switch {
	case errors.Is(err, persistence.ErrHandleTaken):
		writeError(w, http.StatusConflict, courierpb.ErrorCode_HANDLE_TAKEN, "handle "+req.Handle+" is taken")
		return
	case err != nil:
		g.storeFailed(w, "register", err)
		return
	}
	writeJSON(w, http.StatusCreated, RegisterResponse{UserID: id.String(), DeviceID: 1, DeviceSecret: secret})
}

func (g *Gateway) handleToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	now := time.Now()
	if key, ok := clientKey(r, g.cfg.Limits.LimitLoopback); ok {
		if ok, wait := g.limits.tokenIP.allow(key, now); g.limited(w, r, ok, wait, "token requests from this address") {
			return
		}
	}
	if len(req.UserID) > maxLimitKey || (req.Handle != "" && !handlePattern.MatchString(req.Handle)) {
		writeError(w, http.StatusUnauthorized, courierpb.ErrorCode_UNAUTHENTICATED, "unknown device or wrong secret")
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	userID := req.UserID
	if userID == "" && req.Handle != "" {
		u, err := g.cfg.Store.GetUserByHandle(ctx, req.Handle)
		if err != nil && !errors.Is(err, persistence.ErrNotFound) {
			g.storeFailed(w, "token", err)
			return
		}
		userID = u.ID
	}
	// Per account: by user id, so naming it by handle or by id shares one
	// bucket; a handle that names nobody is limited by its folded key.
	account := "u:" + userID
	if userID == "" {
		account = "h:" + persistence.HandleKey(req.Handle)
	}
	if ok, wait := g.limits.tokenAccount.allow(account, now); g.limited(w, r, ok, wait, "token requests for this account") {
		return
	}
	if req.DeviceID == 0 {
		req.DeviceID = 1
	}
	dev, err := g.cfg.Store.GetDevice(ctx, userID, req.DeviceID)
	if err != nil && !errors.Is(err, persistence.ErrNotFound) {
		g.storeFailed(w, "token", err)
		return
	}
	// One answer for unknown user, unknown device and wrong secret, so the
	// endpoint does not tell which users exist.
	if userID == "" || err != nil || !SecretMatches(req.DeviceSecret, dev.SecretHash) {
		writeError(w, http.StatusUnauthorized, courierpb.ErrorCode_UNAUTHENTICATED, "unknown device or wrong secret")
		return
	}
	tok, exp, err := g.cfg.Tokens.Issue(userID, req.DeviceID)
	if err != nil {
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, TokenResponse{AccessToken: tok, ExpiresAt: exp.UTC(), ExpiresInSec: int64(time.Until(exp).Seconds())})
}

func (g *Gateway) handleLookup(w http.ResponseWriter, r *http.Request) {
	if _, ok := g.authenticate(w, r); !ok {
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	u, err := g.cfg.Store.GetUserByHandle(ctx, r.PathValue("handle"))
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no user with that handle")
	case err != nil:
		g.storeFailed(w, "lookup", err)
	default:
		writeJSON(w, http.StatusOK, UserInfo{UserID: u.ID, Handle: u.Handle})
	}
}

// handleUser names a user by id: clients show handles, and a message or
// group event carries only ids. A handle is no more private than the
// by-handle lookup above makes it.
func (g *Gateway) handleUser(w http.ResponseWriter, r *http.Request) {
	if _, ok := g.authenticate(w, r); !ok {
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	u, err := g.cfg.Store.GetUser(ctx, r.PathValue("user_id"))
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no user with that id")
	case err != nil:
		g.storeFailed(w, "user", err)
	default:
		writeJSON(w, http.StatusOK, UserInfo{UserID: u.ID, Handle: u.Handle})
	}
}

// Handle serves pattern on the gateway's listener next to the API; the
// node mounts media this way. Call it before the listener serves.
func (g *Gateway) Handle(pattern string, h http.Handler) { g.mux.Handle(pattern, h) }

// Authenticate checks r's bearer access token as /v1/ws does, for handlers
// mounted with Handle. On failure it has answered 401 with the API's JSON
// error itself.
func (g *Gateway) Authenticate(w http.ResponseWriter, r *http.Request) (Claims, bool) {
	return g.authenticate(w, r)
}

// authenticate verifies the bearer token (header, or ?token= for WebSocket
// clients that cannot set headers) and that its device still exists, and
// answers a failure itself. A token lives up to --token-ttl; the device
// record is the authority on whether it still opens anything, so a removed
// device's token is refused at once, by every endpoint, on every node that
// shares the store.
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request) (Claims, bool) {
	c, ok := g.verifyToken(w, r)
	if !ok || !g.deviceExists(w, r, c) {
		return Claims{}, false
	}
	return c, true
}

// deviceExists refuses a token whose device was removed since it was
// issued.
func (g *Gateway) deviceExists(w http.ResponseWriter, r *http.Request, c Claims) bool {
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	_, err := g.cfg.Store.GetDevice(ctx, c.UserID, c.DeviceID)
	switch {
	case errors.Is(err, persistence.ErrNotFound):
		writeError(w, http.StatusUnauthorized, courierpb.ErrorCode_UNAUTHENTICATED, "this device was unlinked")
		return false
	case err != nil:
		g.storeFailed(w, "authenticate device", err)
		return false
	}
	return true
}

// verifyToken checks the bearer token's signature and expiry only.
func (g *Gateway) verifyToken(w http.ResponseWriter, r *http.Request) (Claims, bool) {
	tok := r.URL.Query().Get("token")
	if h := r.Header.Get("Authorization"); h != "" {
		var ok bool
		tok, ok = strings.CutPrefix(h, "Bearer ")
		if !ok {
			writeError(w, http.StatusUnauthorized, courierpb.ErrorCode_UNAUTHENTICATED, "Authorization must be 'Bearer <token>'")
			return Claims{}, false
		}
	}
	c, err := g.cfg.Tokens.Verify(tok)
	switch {
	case errors.Is(err, ErrTokenExpired):
		writeError(w, http.StatusUnauthorized, courierpb.ErrorCode_TOKEN_EXPIRED, "access token expired: get a new one at /v1/token")
		return Claims{}, false
	case err != nil:
		writeError(w, http.StatusUnauthorized, courierpb.ErrorCode_UNAUTHENTICATED, err.Error())
		return Claims{}, false
	}
	return c, true
}

func (g *Gateway) storeFailed(w http.ResponseWriter, op string, err error) {
	g.log.Warn("store call failed", "op", op, "err", err)
	writeError(w, http.StatusServiceUnavailable, courierpb.ErrorCode_UNAVAILABLE, "storage unavailable, retry later")
}
