package gateway

import (
	"errors"
	"net/http"
	"time"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/courier-im/courier/verification"
)

// Verified registration (Config.Verification, package verification):
//
//	POST /v1/register/code {"handle","address"} → 200 {"challenge","expires_at"}
//	POST /v1/register {"handle","challenge","code"} → 201 as in open mode
//
// The code goes to the address through the configured Sender; the
// challenge carries the server's signed record of it, so any node checks
// it and nothing is stored until the user is created.

// CodeRequest is the body of POST /v1/register/code.
type CodeRequest struct {
	Handle string `json:"handle"`
	// Address is where the code goes: a phone number or e-mail address,
	// opaque to Courier (at most verification.MaxAddressLen bytes).
	Address string `json:"address"`
}

// CodeResponse is the challenge to send back with the code.
type CodeResponse struct {
	Challenge string    `json:"challenge"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (g *Gateway) handleRegisterCode(w http.ResponseWriter, r *http.Request) {
	v := g.cfg.Verification
	if v == nil {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "this server has open registration: POST /v1/register with a handle, no code needed")
		return
	}
	var req CodeRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !handlePattern.MatchString(req.Handle) {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "handle must be 1-64 of A-Z a-z 0-9 . _ + -")
		return
	}
	if err := verification.CheckAddress(req.Address); err != nil {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, err.Error())
		return
	}
	// Every code may cost the operator a text message: the address, the
	// handle and the client are each limited, so none of them can be
	// made to spend without bound by rotating the others.
	now := time.Now()
	if key, ok := clientKey(r, g.cfg.Limits.LimitLoopback); ok {
		if ok, wait := g.limits.codeIP.allow(key, now); g.limited(w, r, ok, wait, "verification codes requested from this address") {
			return
		}
	}
	if ok, wait := g.limits.codeHandle.allow(persistence.HandleKey(req.Handle), now); g.limited(w, r, ok, wait, "verification codes for this handle") {
		return
	}
	if ok, wait := g.limits.codeAddress.allow(verification.AddressKey(req.Address), now); g.limited(w, r, ok, wait, "verification codes sent to this address") {
		return
	}
	ctx, cancel := g.storeCtx(r)
	_, err := g.cfg.Store.GetUserByHandle(ctx, req.Handle)
	cancel()
	switch {
	case err == nil:
		// A code for a taken handle could never be used: send none.
		writeError(w, http.StatusConflict, courierpb.ErrorCode_HANDLE_TAKEN, "handle "+req.Handle+" is taken")
		return
	case !errors.Is(err, persistence.ErrNotFound):
		g.storeFailed(w, "register code", err)
		return
	}
	ch, err := v.Request(r.Context(), req.Handle, req.Address)
	if err != nil {
		// The cause names the sender and its answer, never the code.
		g.log.Warn("verification code not delivered", "err", err)
		writeError(w, http.StatusBadGateway, courierpb.ErrorCode_UNAVAILABLE, "the verification code could not be delivered to that address: retry later")
		return
	}
	writeJSON(w, http.StatusOK, CodeResponse{Challenge: ch.Token, ExpiresAt: ch.ExpiresAt.UTC()})
}

// verified tells whether a registration may go ahead: always in open
// mode; in verified mode only with the right code for its challenge. On
// refusal it has answered.
func (g *Gateway) verified(w http.ResponseWriter, req RegisterRequest) bool {
	v := g.cfg.Verification
	if v == nil {
		return true
	}
	if req.Challenge == "" || req.Code == "" {
		writeError(w, http.StatusForbidden, courierpb.ErrorCode_VERIFICATION_FAILED, "this server verifies registrations: request a code with POST /v1/register/code, then register with its challenge and the code")
		return false
	}
	err := v.Check(req.Challenge, req.Handle, req.Code)
	switch {
	case err == nil:
		return true
	case errors.Is(err, verification.ErrBusy):
		writeError(w, http.StatusServiceUnavailable, courierpb.ErrorCode_UNAVAILABLE, err.Error())
	default:
		writeError(w, http.StatusForbidden, courierpb.ErrorCode_VERIFICATION_FAILED, err.Error())
	}
	return false
}
