package gateway

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/protos/courierpb"
)

// Multi-device endpoints. Linking is approved by the primary device: it
// asks for a one-time link code (shown as a QR code in an app) and the new
// device redeems it for its own device id and secret.

// LinkCodeResponse answers POST /v1/devices/link-code.
type LinkCodeResponse struct {
	Code      string    `json:"code"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LinkRequest is POST /v1/devices/link.
type LinkRequest struct {
	Code string `json:"code"`
}

// DeviceInfo is one device in GET /v1/devices.
type DeviceInfo struct {
	DeviceID  uint32    `json:"device_id"`
	CreatedAt time.Time `json:"created_at"`
	Primary   bool      `json:"primary,omitempty"`
}

// grainCall asks the user's grain and writes the failure itself; errOf
// extracts the grain's own error from the reply.
func (g *Gateway) grainCall(w http.ResponseWriter, r *http.Request, userID string, msg proto.Message, errOf func(proto.Message) *courierpb.Error) (proto.Message, bool) {
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	reply, err := g.cfg.Cluster.Request(ctx, actors.UserGrainID(userID), msg, "")
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, cluster.ErrUnknownType) || errors.Is(err, cluster.ErrBadEnvelope) {
			status = http.StatusInternalServerError
		}
		writeError(w, status, courierpb.ErrorCode_UNAVAILABLE, "try again: "+err.Error())
		return nil, false
	}
	if e := errOf(reply); e != nil {
		status := http.StatusBadRequest
		switch e.Code {
		case courierpb.ErrorCode_FORBIDDEN:
			status = http.StatusForbidden
		case courierpb.ErrorCode_NOT_FOUND:
			status = http.StatusNotFound
		case courierpb.ErrorCode_UNAVAILABLE:
			status = http.StatusServiceUnavailable
		}
		writeError(w, status, e.Code, e.Message)
		return nil, false
	}
	return reply, true
}

// handleLinkCode is POST /v1/devices/link-code (primary device only).
func (g *Gateway) handleLinkCode(w http.ResponseWriter, r *http.Request) {
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	reply, ok := g.grainCall(w, r, c.UserID, &courierpb.CreateLinkCode{DeviceId: c.DeviceID},
		func(m proto.Message) *courierpb.Error { return m.(*courierpb.CreateLinkCodeReply).GetError() })
	if !ok {
		return
	}
	lc := reply.(*courierpb.CreateLinkCodeReply)
	writeJSON(w, http.StatusCreated, LinkCodeResponse{Code: lc.Code, ExpiresAt: time.UnixMilli(lc.ExpiresAtMs).UTC()})
}

// handleLink is POST /v1/devices/link: redeem a link code (no token: the
// code is the credential). Answers like /v1/register.
func (g *Gateway) handleLink(w http.ResponseWriter, r *http.Request) {
	var req LinkRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	userID, ok := actors.LinkCodeUser(req.Code)
	if !ok {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "malformed link code")
		return
	}
	secret, hash, err := NewDeviceSecret()
	if err != nil {
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, err.Error())
		return
	}
	reply, ok := g.grainCall(w, r, userID, &courierpb.RedeemLinkCode{Code: req.Code, SecretHash: hash},
		func(m proto.Message) *courierpb.Error { return m.(*courierpb.RedeemLinkCodeReply).GetError() })
	if !ok {
		return
	}
	writeJSON(w, http.StatusCreated, RegisterResponse{UserID: userID, DeviceID: reply.(*courierpb.RedeemLinkCodeReply).DeviceId, DeviceSecret: secret})
}

// handleListDevices is GET /v1/devices.
func (g *Gateway) handleListDevices(w http.ResponseWriter, r *http.Request) {
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	devs, err := g.cfg.Store.ListDevices(ctx, c.UserID)
	if err != nil {
		g.storeFailed(w, "list devices", err)
		return
	}
	out := make([]DeviceInfo, len(devs))
	for i, d := range devs {
		out[i] = DeviceInfo{DeviceID: d.DeviceID, CreatedAt: d.CreatedAt, Primary: d.DeviceID == actors.PrimaryDevice}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleUnlink is DELETE /v1/devices/{device_id}: the primary unlinks any
// other device, a device unlinks itself. The device's inbox and keys are
// deleted and its session closed (4010); its token stops working.
func (g *Gateway) handleUnlink(w http.ResponseWriter, r *http.Request) {
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	id, err := strconv.ParseUint(r.PathValue("device_id"), 10, 32)
	if err != nil {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "device id must be a number")
		return
	}
	if _, ok := g.grainCall(w, r, c.UserID, &courierpb.UnlinkDevice{RequesterDeviceId: c.DeviceID, DeviceId: uint32(id)},
		func(m proto.Message) *courierpb.Error { return m.(*courierpb.UnlinkDeviceReply).GetError() }); !ok {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
