package actors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/internal/recent"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Consent. What one user can cause to be stored in another's inbox is
// bounded by what that other user allowed:
//
//   - R1: a user's read receipt reaches a peer only through the reader's
//     own grain (sendReadReceipt), which forwards it only when every id
//     names a message that peer sent to the reader: its dedupe record,
//     kept for the inbox TTL by (recipient, sender, client_msg_id) and
//     not deleted by acks, proves the delivery. Delivered receipts are
//     derived by the server from acked entries (ackThrough), group
//     receipts by the group from its log: no client names their ids.
//   - R2: a grain stores nothing from a user it blocked, whatever the kind
//     (acceptsFrom): messages, receipts, identity notices.
//   - R3: an identity notice is stored only when the recipient has the
//     sender among its contacts (acceptsFrom): a user who put someone in
//     its contacts without their consent cannot write into their inbox.
//     The check is the recipient's own profile, in memory.
//   - R4: a user's identity notices go out at most once per
//     IdentityNoticeInterval; changes in between are coalesced into one
//     notice per device at the end of the interval (announceIdentity).
//   - R5: a user's grain passes on a read receipt for a message at most
//     once while it remembers having done so (the last DedupeWindow, at
//     least MaxReceiptIDs, ids of this activation),
//     so a reader repeating its receipts does not fill the peer's inbox.

// ErrReceiptNotDelivered refuses a read receipt naming a message the peer
// never sent to the reader (R1).
var ErrReceiptNotDelivered = errors.New("read receipt names a message the peer never sent to this user")

// acceptsFrom reports whether this user lets a receipt or notice of kind
// from another user be stored in its inboxes (R2, R3). Notices from the
// user itself (PREKEYS_LOW) always pass.
func (g *userGrain) acceptsFrom(from string, kind courierpb.EntryKind) bool {
	if from == g.id {
		return true
	}
	if g.profile.blocked[from] {
		return false
	}
	if kind == courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED {
		_, contact := g.profile.contacts[from]
		return contact
	}
	return true
}

// checkReceiptIDs validates the ids a client names in a receipt: 1 to
// MaxReceiptIDs of them, each a possible client_msg_id. Repeats are
// dropped, so they cost neither a lookup nor bytes in the peer's inbox.
func checkReceiptIDs(ids []string) ([]string, *courierpb.Error) {
	if len(ids) == 0 || len(ids) > MaxReceiptIDs {
		return nil, codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("a receipt names 1..%d messages", MaxReceiptIDs), false)
	}
	seen := make(map[string]struct{}, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if id == "" || len(id) > MaxClientMsgIDLen {
			return nil, codeError(courierpb.ErrorCode_INVALID_ARGUMENT, fmt.Sprintf("client_msg_id must be 1..%d bytes", MaxClientMsgIDLen), false)
		}
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		out = append(out, id)
	}
	return out, nil
}

// sendReadReceipt serves a read receipt from one of this user's devices
// (R1): it checks that the peer sent every named message to this user,
// then asks the peer's grain to store the receipt, and answers the session
// with the peer's reply. The check reads this activation's memory first
// (recent deliveries) and the store's dedupe records for the rest, off the
// mailbox.
func (g *userGrain) sendReadReceipt(ctx actor.Context, msg *courierpb.SendReadReceipt) {
	reply := func(e *courierpb.Error) *courierpb.DeliverReceiptReply {
		return &courierpb.DeliverReceiptReply{Error: e}
	}
	if e := g.ready(); e != nil {
		ctx.Respond(reply(e))
		return
	}
	peer := msg.PeerUserId
	if peer == "" {
		ctx.Respond(reply(codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "a read receipt names a peer", false)))
		return
	}
	ids, e := checkReceiptIDs(msg.ClientMsgIds)
	if e != nil {
		ctx.Respond(reply(e))
		return
	}
	// Ids an earlier receipt of this activation carried are not sent
	// again: read once is read (R5).
	if g.readSent != nil {
		ids = slices.DeleteFunc(ids, func(id string) bool {
			_, sent := g.readSent.Get(peer + "\x00" + id)
			return sent
		})
		if len(ids) == 0 {
			ctx.Respond(reply(nil))
			return
		}
	}
	var unknown []string
	for _, id := range ids {
		// A write still in flight was not delivered yet, so its id cannot
		// have been read: ask the store, which will not have it either.
		if g.dedupe != nil {
			if st, ok := g.dedupe.Get(peer + "\x00" + id); ok && st.inflight == nil {
				continue
			}
		}
		unknown = append(unknown, id)
	}
	to, key := ctx.Sender(), cluster.IdempotencyKey(ctx)
	answer := func(r *courierpb.DeliverReceiptReply) {
		if to != nil {
			ctx.Send(to, r)
		}
	}
	forward := func() {
		if key != "" {
			key = "read/" + g.id + "/" + key
		}
		g.deps.Cluster.RequestAsync(ctx, UserGrainID(peer), &courierpb.DeliverReceipt{
			FromUserId: g.id, FromDeviceId: msg.FromDeviceId, Kind: courierpb.EntryKind_ENTRY_KIND_READ, ClientMsgIds: ids,
		}, key, g.deps.Config.RequestTimeout, func(r proto.Message, err error) {
			rr, ok := r.(*courierpb.DeliverReceiptReply)
			if err != nil || !ok {
				answer(reply(codeError(courierpb.ErrorCode_UNAVAILABLE, "receipt not stored, send it again", true)))
				return
			}
			if rr.Error == nil {
				if g.readSent == nil {
					// At least one whole receipt's worth, so a repeated
					// receipt is recognised however small the window.
					g.readSent = recent.New[string, struct{}](max(g.deps.Config.DedupeWindow, MaxReceiptIDs))
				}
				for _, id := range ids {
					g.readSent.Put(peer+"\x00"+id, struct{}{})
				}
			}
			answer(rr)
		})
	}
	if len(unknown) == 0 {
		forward()
		return
	}
	store, devices, self := g.deps.Store, append([]uint32(nil), g.devices...), g.id
	cluster.RunAsync(ctx, g.stopCtx(), g.deps.Config.StoreTimeout, func(c context.Context) (any, error) {
		return nil, checkDelivered(c, store, self, devices, peer, unknown)
	}, func(_ any, err error) {
		switch {
		case errors.Is(err, ErrReceiptNotDelivered):
			answer(reply(codeError(courierpb.ErrorCode_FORBIDDEN, err.Error(), false)))
		case err != nil:
			answer(reply(storeError(err)))
		default:
			forward()
		}
	})
}

// checkDelivered returns nil when the store holds a dedupe record of every
// id from peer to userID, ErrReceiptNotDelivered when one is missing, and
// the store's error when it cannot tell. It stops at the first miss.
func checkDelivered(parent context.Context, store persistence.Store, userID string, devices []uint32, peer string, ids []string) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, dedupeLookups)
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if first == nil {
			first = err
			cancel()
		}
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, err := store.GetDedupe(ctx, userID, devices, peer, id)
			switch {
			case errors.Is(err, persistence.ErrNotFound):
				fail(fmt.Errorf("%w (%d ids checked)", ErrReceiptNotDelivered, len(ids)))
			case err != nil && ctx.Err() == nil:
				fail(fmt.Errorf("check read receipt: %w", err))
			}
		})
	}
	wg.Wait()
	if first == nil && parent.Err() != nil {
		// Lookups cut short by the deadline proved nothing.
		return fmt.Errorf("check read receipt: %w", parent.Err())
	}
	return first
}
