package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.mau.fi/libsignal/ecc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// The key directory: devices upload public keys, senders fetch bundles.
// Bodies are the protobuf messages of wire.proto as JSON (protojson), or
// binary protobuf with Content-Type application/x-protobuf.

// Limits of the key directory.
const (
	MaxPrekeysPerUpload = 200
	// PrekeysLowWatermark: a device whose pool falls below this gets a
	// PREKEYS_LOW entry telling it to upload more.
	PrekeysLowWatermark = 10
	publicKeyLen        = 33
	signatureLen        = 64
)

func readProto(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		if r.Header.Get("Content-Type") == "application/x-protobuf" {
			err = proto.Unmarshal(b, m)
		} else {
			err = protojson.Unmarshal(b, m)
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, "body: "+err.Error())
		return false
	}
	return true
}

func writeProto(w http.ResponseWriter, status int, m proto.Message) {
	b, err := protojson.Marshal(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// VerifyKeys checks a key upload: well-formed public keys, and a signed
// prekey really signed by the identity key (XEdDSA). A forged signed prekey
// would let a server-side attacker sit in the middle of every new session.
func VerifyKeys(u *courierpb.KeyUpload) error {
	if len(u.IdentityKey) != publicKeyLen || u.IdentityKey[0] != ecc.DjbType {
		return fmt.Errorf("identity_key must be a %d-byte Curve25519 public key (type 0x05)", publicKeyLen)
	}
	if len(u.SignedPrekey) != publicKeyLen || u.SignedPrekey[0] != ecc.DjbType {
		return fmt.Errorf("signed_prekey must be a %d-byte Curve25519 public key (type 0x05)", publicKeyLen)
	}
	if len(u.SignedPrekeySignature) != signatureLen {
		return fmt.Errorf("signed_prekey_signature must be %d bytes", signatureLen)
	}
	id, err := ecc.DecodePoint(u.IdentityKey, 0)
	if err != nil {
		return fmt.Errorf("identity_key: %w", err)
	}
	var sig [signatureLen]byte
	copy(sig[:], u.SignedPrekeySignature)
	if !ecc.VerifySignature(id, u.SignedPrekey, sig) {
		return errors.New("signed_prekey_signature does not verify against identity_key")
	}
	if len(u.OneTimePrekeys) > MaxPrekeysPerUpload {
		return fmt.Errorf("at most %d one-time prekeys per upload", MaxPrekeysPerUpload)
	}
	seen := make(map[uint32]bool, len(u.OneTimePrekeys))
	for _, k := range u.OneTimePrekeys {
		if len(k.PublicKey) != publicKeyLen || k.PublicKey[0] != ecc.DjbType {
			return fmt.Errorf("one-time prekey %d must be a %d-byte Curve25519 public key", k.Id, publicKeyLen)
		}
		if seen[k.Id] {
			return fmt.Errorf("one-time prekey id %d appears twice", k.Id)
		}
		seen[k.Id] = true
	}
	return nil
}

// handlePutKeys is PUT /v1/keys: replace the device's identity key and
// signed prekey, add one-time prekeys. A changed identity key is announced
// to the user's contacts.
func (g *Gateway) handlePutKeys(w http.ResponseWriter, r *http.Request) {
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	if !g.allowHTTPAction(w, r, ActionKeyUpload, c.UserID) {
		return
	}
	var u courierpb.KeyUpload
	if !readProto(w, r, &u) {
		return
	}
	if err := VerifyKeys(&u); err != nil {
		writeError(w, http.StatusBadRequest, courierpb.ErrorCode_INVALID_ARGUMENT, err.Error())
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	prev, err := g.cfg.Store.PutDeviceKeys(ctx, c.UserID, c.DeviceID, persistence.DeviceKeys{
		RegistrationID: u.RegistrationId, IdentityKey: u.IdentityKey,
		SignedPrekeyID: u.SignedPrekeyId, SignedPrekey: u.SignedPrekey, SignedPrekeySignature: u.SignedPrekeySignature,
	})
	if err != nil {
		g.storeFailed(w, "put keys", err)
		return
	}
	if len(u.OneTimePrekeys) > 0 {
		keys := make([]persistence.OneTimePrekey, len(u.OneTimePrekeys))
		for i, k := range u.OneTimePrekeys {
			keys[i] = persistence.OneTimePrekey{ID: k.Id, PublicKey: k.PublicKey}
		}
		if err := g.cfg.Store.AddOneTimePrekeys(ctx, c.UserID, c.DeviceID, keys); err != nil {
			g.storeFailed(w, "add prekeys", err)
			return
		}
	}
	if prev != nil && !bytes.Equal(prev, u.IdentityKey) {
		g.log.Info("identity key changed", "user_id", c.UserID, "device_id", c.DeviceID)
		_ = g.cfg.Cluster.Notify(actors.UserGrainID(c.UserID), &courierpb.IdentityChanged{DeviceId: c.DeviceID}, "", 0)
	}
	n, err := g.cfg.Store.CountOneTimePrekeys(ctx, c.UserID, c.DeviceID)
	if err != nil {
		g.storeFailed(w, "count prekeys", err)
		return
	}
	writeJSON(w, http.StatusOK, PrekeyCount{OneTimePrekeys: n})
}

// PrekeyCount answers PUT and GET /v1/keys.
type PrekeyCount struct {
	OneTimePrekeys int `json:"one_time_prekeys"`
}

// handleCountKeys is GET /v1/keys: how many one-time prekeys this device
// has left on the server.
func (g *Gateway) handleCountKeys(w http.ResponseWriter, r *http.Request) {
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	n, err := g.cfg.Store.CountOneTimePrekeys(ctx, c.UserID, c.DeviceID)
	if err != nil {
		g.storeFailed(w, "count prekeys", err)
		return
	}
	writeJSON(w, http.StatusOK, PrekeyCount{OneTimePrekeys: n})
}

// handleBundles is GET /v1/keys/{user_id}: a bundle for every device of the
// user that uploaded keys, each with one one-time prekey consumed (none when
// the pool is empty). A device of the caller itself is left out.
func (g *Gateway) handleBundles(w http.ResponseWriter, r *http.Request) {
	c, ok := g.authenticate(w, r)
	if !ok {
		return
	}
	target := r.PathValue("user_id")
	if len(target) > maxLimitKey {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such user")
		return
	}
	// A stranger fetching one user's bundle over and over is refused per
	// requester and per (requester, target). The target's own budget of
	// one-time prekeys, spent by everyone else together, never refuses:
	// past it bundles carry the signed prekey only (X3DH's last resort,
	// as with an empty pool), so nobody can drain a pool, nor stop others
	// from starting sessions by trying.
	now := time.Now()
	if ok, wait := g.limits.bundlesRequester.allow(c.UserID, now); g.limited(w, r, ok, wait, "key bundle fetches") {
		return
	}
	if ok, wait := g.limits.bundlesPair.allow(c.UserID+"\x00"+target, now); g.limited(w, r, ok, wait, "key bundle fetches for this user") {
		return
	}
	takePrekeys := true
	if target != c.UserID {
		takePrekeys, _ = g.limits.bundlesTarget.allow(target, now)
	}
	ctx, cancel := g.storeCtx(r)
	defer cancel()
	devs, err := g.cfg.Store.ListDevices(ctx, target)
	if err != nil {
		g.storeFailed(w, "list devices", err)
		return
	}
	if len(devs) == 0 {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such user")
		return
	}
	out := &courierpb.UserBundles{UserId: target}
	for _, d := range devs {
		if target == c.UserID && d.DeviceID == c.DeviceID {
			continue
		}
		b, err := g.bundle(ctx, target, d.DeviceID, takePrekeys)
		if errors.Is(err, persistence.ErrNotFound) {
			continue // no keys uploaded yet
		}
		if err != nil {
			g.storeFailed(w, "bundle", err)
			return
		}
		out.Devices = append(out.Devices, b)
	}
	writeProto(w, http.StatusOK, out)
}

// bundle is a device's bundle, with one of its one-time prekeys taken
// when takePrekey is set and its pool is not empty.
func (g *Gateway) bundle(ctx context.Context, userID string, deviceID uint32, takePrekey bool) (*courierpb.DeviceBundle, error) {
	k, err := g.cfg.Store.GetDeviceKeys(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	b := &courierpb.DeviceBundle{
		DeviceId: deviceID, RegistrationId: k.RegistrationID, IdentityKey: k.IdentityKey,
		SignedPrekeyId: k.SignedPrekeyID, SignedPrekey: k.SignedPrekey, SignedPrekeySignature: k.SignedPrekeySignature,
	}
	if !takePrekey {
		return b, nil
	}
	otpk, ok, err := g.cfg.Store.TakeOneTimePrekey(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if ok {
		b.OneTimePrekeyId, b.OneTimePrekey = otpk.ID, otpk.PublicKey
		// Tell the device while its pool is below the watermark, at most
		// prekeysLowNotices per device. Not "when the count is exactly
		// 9": concurrent takes step over counts (two takes, then two
		// counts of 8), so a fast drain could go untold; and not on every
		// take below it, which would write an entry per fetch into the
		// owner's inbox.
		if n, err := g.cfg.Store.CountOneTimePrekeys(ctx, userID, deviceID); err == nil && n < PrekeysLowWatermark {
			if tell, _ := g.limits.prekeysLow.allow(userID+"\x00"+strconv.FormatUint(uint64(deviceID), 10), time.Now()); tell {
				_ = g.cfg.Cluster.Notify(actors.UserGrainID(userID), &courierpb.DeliverReceipt{
					FromUserId: userID, FromDeviceId: deviceID, Kind: courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW, OnlyDeviceId: deviceID,
				}, "", 0)
			}
		}
	}
	return b, nil
}
