package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Multi-device: a user has up to MaxDevices devices, device 1 being the
// primary. The primary approves a new device with a one-time link code;
// devices can be unlinked (which deletes their inbox and keys and closes
// their session). End-to-end encrypted sends name a ciphertext for every
// device, and the grain refuses a send whose device set is stale.

// MaxDevices is how many devices one user may link, the primary included.
const MaxDevices = 5

// linkCodeTTL is how long a link code works.
const linkCodeTTL = 10 * time.Minute

// PrimaryDevice is the device created with the account.
const PrimaryDevice uint32 = 1

// LinkCodeUser returns the user a link code belongs to (codes are
// "<user id>.<random>", so the gateway knows which grain to ask).
func LinkCodeUser(code string) (string, bool) {
	user, _, ok := strings.Cut(code, ".")
	return user, ok && user != ""
}

type linkCode struct{ expires time.Time }

func (g *userGrain) createLinkCode(ctx actor.Context, msg *courierpb.CreateLinkCode) {
	if e := g.ready(); e != nil {
		ctx.Respond(&courierpb.CreateLinkCodeReply{Error: e})
		return
	}
	if msg.DeviceId != PrimaryDevice {
		ctx.Respond(&courierpb.CreateLinkCodeReply{Error: codeError(courierpb.ErrorCode_FORBIDDEN, "only the primary device links devices", false)})
		return
	}
	if len(g.devices) >= MaxDevices {
		ctx.Respond(&courierpb.CreateLinkCodeReply{Error: deviceLimit()})
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	code := g.id + "." + hex.EncodeToString(b[:])
	now := g.deps.Now()
	if g.linkCodes == nil {
		g.linkCodes = make(map[string]linkCode)
	}
	for c, lc := range g.linkCodes {
		if now.After(lc.expires) {
			delete(g.linkCodes, c)
		}
	}
	g.linkCodes[code] = linkCode{expires: now.Add(linkCodeTTL)}
	ctx.Respond(&courierpb.CreateLinkCodeReply{Code: code, ExpiresAtMs: now.Add(linkCodeTTL).UnixMilli()})
}

func deviceLimit() *courierpb.Error {
	return codeError(courierpb.ErrorCode_FORBIDDEN, fmt.Sprintf("a user links at most %d devices; unlink one first", MaxDevices), false)
}

func (g *userGrain) redeemLinkCode(ctx actor.Context, msg *courierpb.RedeemLinkCode) {
	fail := func(e *courierpb.Error) { ctx.Respond(&courierpb.RedeemLinkCodeReply{Error: e}) }
	if e := g.ready(); e != nil {
		fail(e)
		return
	}
	lc, ok := g.linkCodes[msg.Code]
	if !ok || g.deps.Now().After(lc.expires) {
		delete(g.linkCodes, msg.Code)
		fail(codeError(courierpb.ErrorCode_FORBIDDEN, "link code unknown, used or expired; ask the primary device for a new one", false))
		return
	}
	if len(g.devices) >= MaxDevices {
		fail(deviceLimit())
		return
	}
	id := g.devices[len(g.devices)-1] + 1
	sctx, cancel := g.storeCtx()
	defer cancel()
	err := g.deps.Store.PutDevice(sctx, persistence.Device{UserID: g.id, DeviceID: id, SecretHash: msg.SecretHash, CreatedAt: g.deps.Now().UTC()})
	if err != nil {
		fail(storeError(err))
		return
	}
	delete(g.linkCodes, msg.Code)
	g.devices = append(g.devices, id)
	ctx.Respond(&courierpb.RedeemLinkCodeReply{DeviceId: id})
}

func (g *userGrain) unlinkDevice(ctx actor.Context, msg *courierpb.UnlinkDevice) {
	fail := func(e *courierpb.Error) { ctx.Respond(&courierpb.UnlinkDeviceReply{Error: e}) }
	if e := g.ready(); e != nil {
		fail(e)
		return
	}
	switch {
	case msg.DeviceId == PrimaryDevice:
		fail(codeError(courierpb.ErrorCode_FORBIDDEN, "the primary device cannot be unlinked", false))
		return
	case msg.RequesterDeviceId != PrimaryDevice && msg.RequesterDeviceId != msg.DeviceId:
		fail(codeError(courierpb.ErrorCode_FORBIDDEN, "only the primary device unlinks other devices", false))
		return
	case !g.hasDevice(msg.DeviceId):
		fail(codeError(courierpb.ErrorCode_NOT_FOUND, "no such device", false))
		return
	}
	sctx, cancel := g.storeCtx()
	defer cancel()
	// The device row goes first: once it is gone the device can neither
	// get a token nor attach, whatever happens to the rest.
	for _, step := range []func(context.Context) error{
		func(c context.Context) error { return g.deps.Store.DeleteDevice(c, g.id, msg.DeviceId) },
		func(c context.Context) error { return g.deps.Store.DeleteInbox(c, g.id, msg.DeviceId) },
		func(c context.Context) error { return g.deps.Store.DeleteDeviceKeys(c, g.id, msg.DeviceId) },
	} {
		if err := step(sctx); err != nil {
			fail(storeError(err))
			return
		}
	}
	if i, ok := slices.BinarySearch(g.devices, msg.DeviceId); ok {
		g.devices = slices.Delete(g.devices, i, i+1)
	}
	delete(g.acks, msg.DeviceId)
	delete(g.unacked, msg.DeviceId)
	if pid, ok := g.sessions.get(msg.DeviceId); ok {
		g.sessions.remove(msg.DeviceId)
		g.unwatchIfUnused(ctx, pid)
		g.deps.Cluster.Tell(pid, &courierpb.SessionReplaced{})
		g.deviceOffline(ctx)
	}
	if g.profile.pb.PushTokens != nil {
		delete(g.profile.pb.PushTokens, msg.DeviceId)
	}
	ctx.Respond(&courierpb.UnlinkDeviceReply{})
}

// announceIdentity tells the contacts that a device of this user has a new
// identity key. Each contact's grain stores an IDENTITY_CHANGED entry if it
// has this user among its contacts and has not blocked it (acceptsFrom); a
// contact that cannot be reached now misses the notice, and its client
// still notices the new key when the next session is set up.
//
// One round of notices goes to every contact, up to MaxContacts grains, so
// rounds are paced (R4 in user_receipts.go): at most one per
// IdentityNoticeInterval, and changes in between wait for the end of the
// interval, where they go out together, one notice per changed device. A
// user re-uploading keys in a loop thus writes at most one notice per
// device and interval into each consenting contact's inbox.
func (g *userGrain) announceIdentity(ctx actor.Context, msg *courierpb.IdentityChanged) {
	ctx.Respond(&courierpb.IdentityChangedReply{})
	if g.ready() != nil {
		return
	}
	if !slices.Contains(g.identity.pending, msg.DeviceId) {
		g.identity.pending = append(g.identity.pending, msg.DeviceId)
	}
	every := g.deps.Config.IdentityNoticeInterval
	now := g.deps.Now()
	if every < 0 || g.identity.last.IsZero() || now.Sub(g.identity.last) >= every {
		g.sendIdentityNotices()
		return
	}
	if !g.identity.armed {
		g.identity.armed = true
		self, root := ctx.Self(), ctx.ActorSystem().Root
		t := time.AfterFunc(g.identity.last.Add(every).Sub(now), func() { root.Send(self, identityTick{}) })
		context.AfterFunc(g.stopCtx(), func() { t.Stop() })
	}
}

// identityNotices paces a user's IDENTITY_CHANGED notices.
type identityNotices struct {
	last    time.Time // when the last round went out
	pending []uint32  // devices whose change is not announced yet
	armed   bool      // an identityTick is due
}

// identityTick fires when a held-back round of identity notices is due.
type identityTick struct{}

func (g *userGrain) onIdentityTick() {
	g.identity.armed = false
	if g.ready() == nil && len(g.identity.pending) > 0 {
		g.sendIdentityNotices()
	}
}

func (g *userGrain) sendIdentityNotices() {
	now := g.deps.Now()
	g.identity.last = now
	for _, dev := range g.identity.pending {
		key := fmt.Sprintf("identity/%s/%d/%d", g.id, dev, now.UnixNano())
		for id := range g.profile.contacts {
			_ = g.deps.Cluster.Notify(UserGrainID(id), &courierpb.DeliverReceipt{
				FromUserId: g.id, FromDeviceId: dev, Kind: courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED,
			}, key, 0)
		}
	}
	g.identity.pending = g.identity.pending[:0]
}

// checkDevices compares the devices a send names with the grain's (all of
// them, except the sending device for a transcript). The device list is
// reloaded once before refusing, in case a device was linked elsewhere.
func (g *userGrain) checkDevices(named []*courierpb.DeviceCiphertext, except uint32) *courierpb.Error {
	diff := func() (missing, extra []uint32) {
		seen := make(map[uint32]bool, len(named))
		for _, dc := range named {
			seen[dc.DeviceId] = true
			if !g.hasDevice(dc.DeviceId) || dc.DeviceId == except {
				extra = append(extra, dc.DeviceId)
			}
		}
		for _, d := range g.devices {
			if d != except && !seen[d] {
				missing = append(missing, d)
			}
		}
		return missing, extra
	}
	missing, extra := diff()
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	sctx, cancel := g.storeCtx()
	err := g.loadDevices(sctx)
	cancel()
	if err != nil {
		return storeError(err)
	}
	if missing, extra = diff(); len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	slices.Sort(extra)
	return &courierpb.Error{
		Code:     courierpb.ErrorCode_MISMATCHED_DEVICES,
		Message:  fmt.Sprintf("device list of %s is stale: missing %v, extra %v; fetch its bundles and resend with the same client_msg_id", g.id, missing, extra),
		Mismatch: &courierpb.MismatchedDevices{UserId: g.id, Missing: missing, Extra: extra},
	}
}

// storeTranscript stores a sent message for the sender's other devices.
func (g *userGrain) storeTranscript(ctx actor.Context, msg *courierpb.StoreTranscript) {
	reply := func(e *courierpb.Error, _ bool) proto.Message { return &courierpb.StoreTranscriptReply{Error: e} }
	if e := g.ready(); e != nil {
		ctx.Respond(reply(e, false))
		return
	}
	if msg.ClientMsgId == "" || len(msg.ClientMsgId) > MaxClientMsgIDLen || msg.ToUserId == "" {
		ctx.Respond(reply(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "a transcript names its message and peer", false), false))
		return
	}
	if e := g.checkDevices(msg.PerDevice, msg.FromDeviceId); e != nil {
		ctx.Respond(reply(e, false))
		return
	}
	if len(msg.PerDevice) == 0 {
		ctx.Respond(reply(nil, false)) // the user has no other device
		return
	}
	// Deduplicated like a message, under a sender id that cannot be a
	// user's: "sent to <peer>".
	sender := "\x00sent:" + msg.ToUserId
	key := sender + "\x00" + msg.ClientMsgId
	dup := func(int64) proto.Message { return &courierpb.StoreTranscriptReply{} }
	if g.answerDuplicateWith(ctx, key, dup) {
		return
	}
	seq, err := g.nextSeq()
	if err != nil {
		ctx.Respond(reply(storeError(err), false))
		return
	}
	now := g.deps.Now().UnixMilli()
	w := &pendingWrite{dedupeKey: key, replyTo: []*actor.PID{ctx.Sender()}, maxSeq: seq, reply: reply, dupReply: dup}
	for _, dc := range msg.PerDevice {
		w.entries = append(w.entries, persistence.InboxAppend{UserID: g.id, DeviceID: dc.DeviceId, Entry: &courierpb.InboxEntry{
			InboxSeq:     seq,
			Kind:         courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT,
			FromUserId:   g.id,
			FromDeviceId: msg.FromDeviceId,
			ToUserId:     msg.ToUserId,
			ClientMsgId:  msg.ClientMsgId,
			Ciphertext:   dc.Ciphertext,
			ContentType:  msg.ContentType,
			SentAtMs:     now,
		}})
	}
	w.dedupe = &persistence.DedupeRecord{RecipientID: g.id, SenderID: sender, ClientMsgID: msg.ClientMsgId, StoredAtMs: now}
	g.dedupe.Put(key, dedupeState{storedAtMs: now, inflight: w})
	g.enqueue(ctx, w)
}
