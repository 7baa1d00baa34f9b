package actors

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// The member side of a group fan-out: Group(G) sends a member's User grain
// the group's entries in group_seq order (DeliverGroupEntries), and the
// User grain stores each in every device inbox with its own inbox_seq.
//
// Deliveries are idempotent per (group, group_seq): every stored entry
// leaves a dedupe record (sender "\x00group/G", client_msg_id "<group_seq>")
// in the same atomic append, and the grain remembers per group the highest
// group_seq stored. A fan-out retried after a timeout or a crash of either
// grain therefore never stores an entry twice. One delivery per group is in
// flight at a time; later ones wait behind it, so they are judged against
// what is stored, never against a write that may still fail.

// groupInbox is what a User grain knows of one group's entries.
type groupInbox struct {
	// through is the highest group_seq stored (valid when known; after an
	// activation the store's dedupe records are consulted first).
	through uint64
	known   bool
	busy    bool
	waiting []queuedDelivery
}

type queuedDelivery struct {
	msg *courierpb.DeliverGroupEntries
	pid *actor.PID
}

// groupDelivery is the group part of a pendingWrite: its entries grouped by
// group_seq, so the flush can drop those the store already holds.
type groupDelivery struct {
	groupID string
	seqs    []uint64
	appends [][]persistence.InboxAppend // per seq, one per device
	records []persistence.DedupeRecord  // per seq
	// check: consult the store's dedupe records before appending.
	check bool
}

// groupDedupeSender is the sender under which a member's dedupe records of
// a group's entries are kept. User ids never start with a NUL byte.
func groupDedupeSender(groupID string) string { return "\x00group/" + groupID }

// resolve returns what to append: everything, or (when checking) the
// entries whose group_seq has no dedupe record yet. It runs on a worker.
func (d *groupDelivery) resolve(ctx context.Context, store persistence.Store, devices []uint32) ([]persistence.InboxAppend, []persistence.DedupeRecord, error) {
	var entries []persistence.InboxAppend
	var records []persistence.DedupeRecord
	for i, rec := range d.records {
		if d.check {
			_, err := store.GetDedupe(ctx, rec.RecipientID, devices, rec.SenderID, rec.ClientMsgID)
			switch {
			case err == nil:
				continue // stored before this activation
			case !errors.Is(err, persistence.ErrNotFound):
				return nil, nil, fmt.Errorf("check group dedupe record: %w", err)
			}
		}
		entries = append(entries, d.appends[i]...)
		records = append(records, rec)
	}
	return entries, records, nil
}

func (g *userGrain) deliverGroupEntries(ctx actor.Context, msg *courierpb.DeliverGroupEntries, pid *actor.PID) {
	if e := g.ready(); e != nil {
		ctx.Send(pid, &courierpb.DeliverGroupEntriesReply{Error: e})
		return
	}
	if msg.GroupId == "" {
		ctx.Send(pid, &courierpb.DeliverGroupEntriesReply{Error: codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "group id missing", false)})
		return
	}
	gi := g.groups[msg.GroupId]
	if gi == nil {
		gi = &groupInbox{}
		if g.groups == nil {
			g.groups = make(map[string]*groupInbox)
		}
		g.groups[msg.GroupId] = gi
	}
	if gi.busy {
		gi.waiting = append(gi.waiting, queuedDelivery{msg: msg, pid: pid})
		return
	}
	g.storeGroupEntries(ctx, gi, msg, pid)
}

// storeGroupEntries numbers and queues the entries of msg the member does
// not have yet; gi is idle.
func (g *userGrain) storeGroupEntries(ctx actor.Context, gi *groupInbox, msg *courierpb.DeliverGroupEntries, pid *actor.PID) {
	d := &groupDelivery{groupID: msg.GroupId, check: !gi.known}
	var maxInbox uint64
	last := gi.through
	now := g.deps.Now().UnixMilli()
	for _, le := range msg.Entries {
		if le.GetEntry() == nil || le.GroupSeq <= last {
			continue // already stored, or out of order within the request
		}
		last = le.GroupSeq
		var appends []persistence.InboxAppend
		var shared *courierpb.InboxEntry
		for _, dev := range g.devices {
			src := le.Entry
			if src.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE && src.FromUserId == g.id && src.FromDeviceId == dev {
				continue // the sending device has its message
			}
			if len(appends) == 0 {
				seq, err := g.nextSeq()
				if err != nil {
					ctx.Send(pid, &courierpb.DeliverGroupEntriesReply{Error: storeError(err)})
					return
				}
				maxInbox = seq
			}
			var e *courierpb.InboxEntry
			if ct, ok := deviceCiphertext(le, g.id, dev); ok {
				e = groupInboxEntry(src, maxInbox, le.GroupSeq, msg.GroupId, now)
				e.Ciphertext = ct
			} else {
				if shared == nil {
					shared = groupInboxEntry(src, maxInbox, le.GroupSeq, msg.GroupId, now)
				}
				e = shared
			}
			appends = append(appends, persistence.InboxAppend{UserID: g.id, DeviceID: dev, Entry: e})
		}
		d.seqs = append(d.seqs, le.GroupSeq)
		d.appends = append(d.appends, appends)
		d.records = append(d.records, persistence.DedupeRecord{
			RecipientID: g.id, SenderID: groupDedupeSender(msg.GroupId), ClientMsgID: strconv.FormatUint(le.GroupSeq, 10), StoredAtMs: now,
		})
	}
	if len(d.seqs) == 0 {
		ctx.Send(pid, &courierpb.DeliverGroupEntriesReply{})
		return
	}
	gi.busy = true
	through := last
	w := &pendingWrite{
		replyTo: []*actor.PID{pid},
		reply: func(e *courierpb.Error, _ bool) proto.Message {
			return &courierpb.DeliverGroupEntriesReply{Error: e}
		},
		maxSeq: maxInbox,
		group:  d,
		after: func(ctx actor.Context, err error) {
			gi.busy = false
			if err != nil {
				gi.known = false // the store decides again next time
			} else {
				gi.through, gi.known = max(gi.through, through), true
			}
			g.nextGroupDelivery(ctx, gi)
		},
	}
	g.enqueue(ctx, w)
}

// nextGroupDelivery starts the delivery that waited behind the last one.
func (g *userGrain) nextGroupDelivery(ctx actor.Context, gi *groupInbox) {
	for !gi.busy && len(gi.waiting) > 0 {
		q := gi.waiting[0]
		gi.waiting = gi.waiting[1:]
		g.storeGroupEntries(ctx, gi, q.msg, q.pid)
	}
}

// deviceCiphertext returns the ciphertext the sender made for one device of
// this member, if it made one.
func deviceCiphertext(le *courierpb.GroupLogEntry, userID string, dev uint32) ([]byte, bool) {
	for _, dc := range le.PerDevice {
		if dc.DeviceId == dev && dc.UserId == userID {
			return dc.Ciphertext, true
		}
	}
	return nil, false
}

// groupInboxEntry makes a group log entry one inbox's entry. The
// ciphertext and the event are shared, not copied (1,024 members would
// otherwise hold 1,024 copies): nothing modifies them once stored.
func groupInboxEntry(src *courierpb.InboxEntry, inboxSeq, groupSeq uint64, groupID string, nowMs int64) *courierpb.InboxEntry {
	sentAt := src.SentAtMs
	if sentAt == 0 {
		sentAt = nowMs
	}
	return &courierpb.InboxEntry{
		InboxSeq:       inboxSeq,
		Kind:           src.Kind,
		FromUserId:     src.FromUserId,
		FromDeviceId:   src.FromDeviceId,
		ClientMsgId:    src.ClientMsgId,
		Ciphertext:     src.Ciphertext,
		ContentType:    src.ContentType,
		SentAtMs:       sentAt,
		GroupId:        groupID,
		GroupSeq:       groupSeq,
		GroupEvent:     src.GroupEvent,
		SenderKeyEpoch: src.SenderKeyEpoch,
	}
}

// groupDelivered tells each group that this member received its entries up
// to a group_seq. It does not wait: delivered receipts of groups are
// bookkeeping for the senders' ticks, and a lost one costs a tick, never a
// message, so an ack does not stall on a group that is slow to answer.
func groupDelivered(cl *cluster.Cluster, userID string, byGroup map[string]uint64) {
	for groupID, seq := range byGroup {
		key := fmt.Sprintf("group-delivered/%s/%s/%d", groupID, userID, seq)
		_ = cl.Notify(GroupGrainID(groupID), &courierpb.GroupReceipt{
			GroupId: groupID, UserId: userID, Kind: courierpb.EntryKind_ENTRY_KIND_DELIVERED, UpToGroupSeq: seq,
		}, key, 0)
	}
}
