package actors

import (
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// maxUnackedIndexed caps one device's index; an offline device's backlog
// beyond it is found by reading the store when the device finally acks.
const maxUnackedIndexed = 1024

// unackedMessage is what a delivered receipt needs to know of a message.
type unackedMessage struct {
	seq         uint64
	from        string
	clientMsgID string
	// For group messages: the member's receipt goes to the group.
	groupID  string
	groupSeq uint64
}

// unackedOf returns what an ack of e must report, if anything: messages
// get receipts, receipts and events do not.
func unackedOf(e *courierpb.InboxEntry) (unackedMessage, bool) {
	switch e.Kind {
	case courierpb.EntryKind_ENTRY_KIND_MESSAGE:
		return unackedMessage{seq: e.InboxSeq, from: e.FromUserId, clientMsgID: e.ClientMsgId}, true
	case courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE:
		return unackedMessage{seq: e.InboxSeq, from: e.FromUserId, clientMsgID: e.ClientMsgId, groupID: e.GroupId, groupSeq: e.GroupSeq}, true
	}
	return unackedMessage{}, false
}

// unackedIndex lists one device's stored, unacked messages in inbox_seq
// order. It is complete for inbox_seq > from: every message above that is
// in items.
type unackedIndex struct {
	from  uint64
	items []unackedMessage
}

// index records newly stored messages. Entries arrive in inbox_seq order
// because flushes are sequential and numbers increase.
func (g *userGrain) index(appends []persistence.InboxAppend) {
	if !g.bounded {
		return
	}
	for _, a := range appends {
		m, ok := unackedOf(a.Entry)
		if !ok {
			continue
		}
		ix := g.unacked[a.DeviceID]
		if ix == nil {
			ix = &unackedIndex{from: g.indexFrom}
			if g.unacked == nil {
				g.unacked = make(map[uint32]*unackedIndex)
			}
			g.unacked[a.DeviceID] = ix
		}
		if len(ix.items) == maxUnackedIndexed {
			ix.from = ix.items[0].seq
			ix.items = append(ix.items[:0], ix.items[1:]...)
		}
		ix.items = append(ix.items, m)
	}
}

// through returns the messages in (from, to] and drops them from the index.
// complete is false when the index does not cover (from, to]: the caller
// must read the store instead.
func (ix *unackedIndex) through(from, to uint64) (msgs []unackedMessage, complete bool) {
	if ix == nil {
		return nil, false
	}
	n := 0
	for n < len(ix.items) && ix.items[n].seq <= to {
		n++
	}
	for _, m := range ix.items[:n] {
		if m.seq > from {
			msgs = append(msgs, m)
		}
	}
	complete = from >= ix.from
	ix.items = append(ix.items[:0], ix.items[n:]...)
	ix.from = max(ix.from, to)
	return msgs, complete
}
