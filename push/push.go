// Package push tells devices without an open session that their inbox has
// something new. Because messages are end-to-end encrypted, a push carries
// no content and no sender: only "there is something to fetch", and the
// app connects and reads its inbox.
//
// A Provider delivers one notification (the HTTP webhook here; FCM HTTP v1
// and APNs would be further providers of the same interface). The
// Dispatcher sits in front of it: one pending push per device (collapsed),
// retries with exponential backoff, a dead-letter log after the last
// attempt, and cancellation when the device connects first.
package push

import (
	"context"
	"time"

	"github.com/courier-im/courier/webhook"
)

// Notification is one push to one device.
type Notification struct {
	// Token is what the device registered (PushTokenUpdate).
	Token    string
	UserID   string
	DeviceID uint32
	// At is when the first entry of this offline period landed (for a
	// call: when the call was placed).
	At time.Time
	// Call marks a ringing call: providers deliver it at high priority (a
	// VoIP push) so the device wakes and connects, where it is rung. It
	// still carries no content and no caller; CallID only lets the device
	// tell a stale call push from a live one.
	Call   bool
	CallID string
}

// Key identifies the device a notification is for; the Dispatcher keeps at
// most one pending notification per key. A call push has a key of its own:
// a pending inbox push must not swallow it.
func (n Notification) Key() string {
	k := n.UserID + "/" + itoa(n.DeviceID)
	if n.Call {
		k += "/call"
	}
	return k
}

// Provider delivers notifications.
type Provider interface {
	// Send delivers n once. An error wrapping ErrPermanent is not retried.
	Send(ctx context.Context, n Notification) error
}

// ErrPermanent marks a failure that a retry cannot fix (the provider
// refused the request itself: a bad token, a bad signature). It is the
// webhook package's, so a webhook's refusal is one without wrapping.
var ErrPermanent = webhook.ErrPermanent

func itoa(v uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
