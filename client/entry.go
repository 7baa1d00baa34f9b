package client

import (
	"sync"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// Entry is one entry of this device's inbox: a message, a copy of a message
// sent from another device of this user, or a delivered/read receipt.
type Entry struct {
	// Seq is the entry's inbox_seq; entries arrive in Seq order.
	Seq  uint64
	Kind courierpb.EntryKind
	// FromUserID sent the message or the receipt.
	FromUserID   string
	FromDeviceID uint32
	// ToUserID is the conversation peer of a SENT_TRANSCRIPT.
	ToUserID    string
	ClientMsgID string
	Ciphertext  []byte
	// Plaintext is the decrypted message (WithE2EE; messages, transcripts
	// and group messages), or nil with DecryptErr saying why not (a
	// tampered or undecryptable message, an unknown sender key).
	Plaintext   []byte
	DecryptErr  error
	ContentType string
	// SentAt is when the server stored the entry.
	SentAt time.Time
	// ReceiptFor lists the client_msg_ids a receipt is about.
	ReceiptFor []string
	// GroupID and GroupSeq place a group entry (a group message, a group
	// event, or an aggregated group receipt) in its group's order.
	GroupID  string
	GroupSeq uint64
	// GroupEvent says what changed, for a group event.
	GroupEvent *courierpb.GroupEvent
	// SenderKeyEpoch is the sender-key epoch of a group message (the epoch
	// after the change, for a group event).
	SenderKeyEpoch uint64
	// Call is the call a missed-call entry is about (FromUserID called).
	Call *courierpb.CallRecord
}

// IsMessage reports whether e is a message from another user.
func (e Entry) IsMessage() bool { return e.Kind == courierpb.EntryKind_ENTRY_KIND_MESSAGE }

// IsDelivered reports whether e is a delivered receipt (double tick).
func (e Entry) IsDelivered() bool { return e.Kind == courierpb.EntryKind_ENTRY_KIND_DELIVERED }

// IsRead reports whether e is a read receipt (blue ticks).
func (e Entry) IsRead() bool { return e.Kind == courierpb.EntryKind_ENTRY_KIND_READ }

// IsGroupMessage reports whether e is a message to a group (GroupID).
func (e Entry) IsGroupMessage() bool { return e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE }

// IsGroupEvent reports whether e is a change of a group (GroupEvent).
func (e Entry) IsGroupEvent() bool { return e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT }

// IsGroupDelivered reports whether e says this user's group messages in
// ReceiptFor reached every member (double tick).
func (e Entry) IsGroupDelivered() bool {
	return e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED
}

// IsGroupRead reports whether e says every member read this user's group
// messages in ReceiptFor (blue ticks).
func (e Entry) IsGroupRead() bool { return e.Kind == courierpb.EntryKind_ENTRY_KIND_GROUP_READ }

func entryFromProto(p *courierpb.InboxEntry) Entry {
	return Entry{
		Seq:          p.InboxSeq,
		Kind:         p.Kind,
		FromUserID:   p.FromUserId,
		FromDeviceID: p.FromDeviceId,
		ToUserID:     p.ToUserId,
		ClientMsgID:  p.ClientMsgId,
		Ciphertext:   p.Ciphertext,
		ContentType:  p.ContentType,
		SentAt:       time.UnixMilli(p.SentAtMs),
		ReceiptFor:   p.ReceiptFor,

		GroupID:        p.GroupId,
		GroupSeq:       p.GroupSeq,
		GroupEvent:     p.GroupEvent,
		SenderKeyEpoch: p.SenderKeyEpoch,
		Call:           p.Call,
	}
}

// entryQueue is the bounded buffer between the socket reader and the
// goroutine that hands entries to the application. It only holds memory
// while entries wait.
type entryQueue struct {
	mu    sync.Mutex
	items []Entry
	head  int
	max   int
	// ready has a token when entries may be waiting.
	ready chan struct{}
	// space has a token when the queue fell to half of max.
	space chan struct{}
}

func newEntryQueue(max int) *entryQueue {
	if max < 2 {
		max = 2
	}
	return &entryQueue{max: max, ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// push appends e unless the queue is full.
func (q *entryQueue) push(e Entry) bool {
	q.mu.Lock()
	n := len(q.items) - q.head
	if n >= q.max {
		q.mu.Unlock()
		return false
	}
	if q.head > 0 && len(q.items) == cap(q.items) {
		copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, e)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop removes the oldest entry, if any.
func (q *entryQueue) pop() (Entry, bool) {
	q.mu.Lock()
	if q.head == len(q.items) {
		if cap(q.items) > 64 {
			q.items = nil // give a burst's memory back
		} else {
			q.items = q.items[:0]
		}
		q.head = 0
		q.mu.Unlock()
		return Entry{}, false
	}
	e := q.items[q.head]
	q.items[q.head] = Entry{}
	q.head++
	n := len(q.items) - q.head
	q.mu.Unlock()
	if n <= q.max/2 {
		select {
		case q.space <- struct{}{}:
		default:
		}
	}
	return e, true
}

func (q *entryQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}

// lowWater reports whether the queue holds at most half of max.
func (q *entryQueue) lowWater() bool { return q.len() <= q.max/2 }
