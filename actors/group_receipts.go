package actors

import (
	"context"
	"fmt"
	"log/slog"
	"math/bits"
	"slices"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/courier-im/courier/cluster"
	"github.com/courier-im/courier/protos/courierpb"
)

// Per-member receipts of a group's recent messages.
//
// Each active member has a small index (its bit); each of the last
// ReceiptWindow messages keeps two bitmaps over those indexes (delivered,
// read) and counts against the number of members it was sent to, so a
// 1,024-member group costs 256 bytes per message, not 1,024 rows. Members
// report cumulatively (every entry up to a group_seq), so a report touches
// only the messages since that member's previous one. When a message
// becomes delivered to all (or read by all), its sender's inbox gets one
// aggregated receipt entry. A member who leaves stops counting: its bits
// are cleared, and messages it held back may complete.
//
// The window lives in memory: a group that passivates or restarts starts
// with an empty one (receipts of older messages are then unknown).

// bitset is a growable set of small integers.
type bitset []uint64

func (b *bitset) set(i int) bool {
	w := i / 64
	for len(*b) <= w {
		*b = append(*b, 0)
	}
	mask := uint64(1) << (i % 64)
	if (*b)[w]&mask != 0 {
		return false
	}
	(*b)[w] |= mask
	return true
}

func (b bitset) has(i int) bool {
	w := i / 64
	return w < len(b) && b[w]&(uint64(1)<<(i%64)) != 0
}

func (b bitset) clear(i int) bool {
	w := i / 64
	mask := uint64(1) << (i % 64)
	if w >= len(b) || b[w]&mask == 0 {
		return false
	}
	b[w] &^= mask
	return true
}

// indexAlloc hands out the smallest free member index.
type indexAlloc struct{ used bitset }

func (a *indexAlloc) take() int {
	for w, word := range a.used {
		if word != ^uint64(0) {
			i := w*64 + bits.TrailingZeros64(^word)
			a.used.set(i)
			return i
		}
	}
	i := len(a.used) * 64
	a.used.set(i)
	return i
}

func (a *indexAlloc) free(i int) {
	if i >= 0 {
		a.used.clear(i)
	}
}

// receiptRec is the receipts of one message.
type receiptRec struct {
	seq         uint64
	sender      string
	clientMsgID string
	// expected is how many members it was sent to (the sender excluded)
	// that are still members.
	expected              int
	delivered, read       bitset
	nDelivered, nRead     int
	deliveredAll, readAll bool
}

type receiptWindow struct {
	max  int
	recs []*receiptRec // ascending seq
	// notices waiting to go to senders: delivered-to-all / read-by-all.
	notices []receiptNotice
}

type receiptNotice struct {
	sender      string
	read        bool
	seq         uint64
	clientMsgID string
}

func newReceiptWindow(n int) receiptWindow { return receiptWindow{max: n} }

// eligible reports whether m was sent the message rec describes.
func eligible(m *gmember, rec *receiptRec) bool {
	return m.active() && m.st.UserId != rec.sender && m.joinedAt() <= rec.seq
}

// add starts tracking a newly stored message.
func (w *receiptWindow) add(g *groupGrain, e *courierpb.GroupLogEntry) {
	rec := &receiptRec{seq: e.GroupSeq, sender: e.Entry.FromUserId, clientMsgID: e.Entry.ClientMsgId}
	for _, m := range g.members {
		if eligible(m, rec) {
			rec.expected++
		}
	}
	w.recs = append(w.recs, rec)
	if over := len(w.recs) - w.max; over > w.max/4 {
		clear(w.recs[:over])
		w.recs = w.recs[over:]
	}
}

func (w *receiptWindow) find(seq uint64) *receiptRec {
	i := sort.Search(len(w.recs), func(i int) bool { return w.recs[i].seq >= seq })
	if i < len(w.recs) && w.recs[i].seq == seq {
		return w.recs[i]
	}
	return nil
}

// mark records that m received (or read) everything up to upTo.
func (w *receiptWindow) mark(m *gmember, upTo uint64, read bool) {
	from := m.delivered
	if read {
		from = min(m.delivered, m.read)
		m.read = max(m.read, upTo)
	}
	m.delivered = max(m.delivered, upTo)
	if upTo <= from || m.index < 0 {
		return
	}
	i := sort.Search(len(w.recs), func(i int) bool { return w.recs[i].seq > from })
	for ; i < len(w.recs) && w.recs[i].seq <= upTo; i++ {
		rec := w.recs[i]
		if !eligible(m, rec) {
			continue
		}
		if rec.delivered.set(m.index) {
			rec.nDelivered++
		}
		if read && rec.read.set(m.index) {
			rec.nRead++
		}
		w.check(rec)
	}
}

// forget stops counting m (it is leaving).
func (w *receiptWindow) forget(g *groupGrain, m *gmember) {
	if m.index < 0 {
		return
	}
	for _, rec := range w.recs {
		if !eligible(m, rec) {
			continue
		}
		rec.expected--
		if rec.delivered.clear(m.index) {
			rec.nDelivered--
		}
		if rec.read.clear(m.index) {
			rec.nRead--
		}
		w.check(rec)
	}
}

func (w *receiptWindow) check(rec *receiptRec) {
	if rec.expected <= 0 {
		return
	}
	if !rec.deliveredAll && rec.nDelivered >= rec.expected {
		rec.deliveredAll = true
		w.notices = append(w.notices, receiptNotice{sender: rec.sender, seq: rec.seq, clientMsgID: rec.clientMsgID})
	}
	if !rec.readAll && rec.nRead >= rec.expected {
		rec.readAll = true
		w.notices = append(w.notices, receiptNotice{sender: rec.sender, read: true, seq: rec.seq, clientMsgID: rec.clientMsgID})
	}
}

// receipt takes a member's cumulative delivered or read report.
func (g *groupGrain) receipt(ctx actor.Context, msg *courierpb.GroupReceipt) {
	m, e := g.ready(ctx, msg.UserId)
	if e != nil {
		ctx.Respond(&courierpb.GroupReceiptReply{Error: e})
		return
	}
	switch msg.Kind {
	case courierpb.EntryKind_ENTRY_KIND_DELIVERED:
		g.rcpt.mark(m, msg.UpToGroupSeq, false)
	case courierpb.EntryKind_ENTRY_KIND_READ:
		g.rcpt.mark(m, msg.UpToGroupSeq, true)
	default:
		ctx.Respond(&courierpb.GroupReceiptReply{Error: codeError(courierpb.ErrorCode_INVALID_ARGUMENT, "receipt kind must be delivered or read", false)})
		return
	}
	ctx.Respond(&courierpb.GroupReceiptReply{})
	g.sendNotices()
}

// sendNotices stores the aggregated receipts in their senders' inboxes:
// one entry per sender and kind, naming every message that completed. The
// requests retry by themselves (cluster.Request) on a worker.
func (g *groupGrain) sendNotices() {
	if len(g.rcpt.notices) == 0 {
		return
	}
	type key struct {
		sender string
		read   bool
	}
	batches := map[key]*courierpb.DeliverReceipt{}
	var order []key
	for _, n := range g.rcpt.notices {
		k := key{n.sender, n.read}
		r := batches[k]
		if r == nil {
			kind := courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED
			if n.read {
				kind = courierpb.EntryKind_ENTRY_KIND_GROUP_READ
			}
			r = &courierpb.DeliverReceipt{Kind: kind, GroupId: g.id}
			batches[k] = r
			order = append(order, k)
		}
		r.ClientMsgIds = append(r.ClientMsgIds, n.clientMsgID)
		r.GroupSeq = max(r.GroupSeq, n.seq)
	}
	g.rcpt.notices = nil
	cl, log, timeout := g.deps.Cluster, g.log, 3*g.deps.Config.RequestTimeout
	for _, k := range order {
		r := batches[k]
		for ids := range slices.Chunk(r.ClientMsgIds, MaxReceiptIDs) {
			sendNotice(cl, log, k.sender, &courierpb.DeliverReceipt{Kind: r.Kind, GroupId: r.GroupId, GroupSeq: r.GroupSeq, ClientMsgIds: ids}, timeout)
		}
	}
}

func sendNotice(cl *cluster.Cluster, log *slog.Logger, sender string, r *courierpb.DeliverReceipt, timeout time.Duration) {
	key := fmt.Sprintf("group-receipt/%s/%d/%d/%s", r.GroupId, r.Kind, r.GroupSeq, r.ClientMsgIds[0])
	cluster.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		reply, err := cl.Request(ctx, UserGrainID(sender), r, key)
		if err == nil {
			if rr, ok := reply.(*courierpb.DeliverReceiptReply); ok && rr.Error != nil && rr.Error.Code != courierpb.ErrorCode_NOT_FOUND {
				err = fmt.Errorf("%s: %s", rr.Error.Code, rr.Error.Message)
			}
		}
		if err != nil {
			log.Warn("group receipt to its sender failed", "sender", sender, "kind", r.Kind, "err", err)
		}
	})
}

// receiptList answers a sender's question about one of its messages.
func (g *groupGrain) receiptList(ctx actor.Context, msg *courierpb.GetGroupReceipts) {
	if _, e := g.ready(ctx, msg.UserId); e != nil {
		ctx.Respond(&courierpb.GetGroupReceiptsReply{Error: e})
		return
	}
	rec := g.rcpt.find(msg.GroupSeq)
	if rec == nil {
		ctx.Respond(&courierpb.GetGroupReceiptsReply{Error: codeError(courierpb.ErrorCode_NOT_FOUND, "no receipts are kept for that message", false)})
		return
	}
	if rec.sender != msg.UserId {
		ctx.Respond(&courierpb.GetGroupReceiptsReply{Error: codeError(courierpb.ErrorCode_FORBIDDEN, "only its sender may see a message's receipts", false)})
		return
	}
	out := &courierpb.GroupReceipts{
		GroupId: g.id, GroupSeq: rec.seq, ClientMsgId: rec.clientMsgID, Recipients: uint32(max(rec.expected, 0)),
		DeliveredAll: rec.deliveredAll, ReadAll: rec.readAll,
	}
	for _, ms := range g.st.Members {
		m := g.members[ms.UserId]
		if m == nil || m.index < 0 {
			continue
		}
		if rec.delivered.has(m.index) {
			out.DeliveredUserIds = append(out.DeliveredUserIds, ms.UserId)
		}
		if rec.read.has(m.index) {
			out.ReadUserIds = append(out.ReadUserIds, ms.UserId)
		}
	}
	ctx.Respond(&courierpb.GetGroupReceiptsReply{Receipts: out})
}
