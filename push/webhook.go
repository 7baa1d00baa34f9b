package push

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/courier-im/courier/webhook"
)

// Headers of a webhook request: the signature is package webhook's, shared
// with every signed request the server sends.
const (
	HeaderSignature = webhook.HeaderSignature
	HeaderTimestamp = webhook.HeaderTimestamp
)

// WebhookPayload is the JSON body a webhook receives. It says which device
// has something to fetch, or is being called, and nothing else: no
// content, no sender, no caller.
type WebhookPayload struct {
	// "inbox", or "call" for a ringing call: deliver it at high priority
	// (APNs VoIP / FCM high priority), since the call rings for seconds.
	Type     string `json:"type"`
	Token    string `json:"token"`
	UserID   string `json:"user_id"`
	DeviceID uint32 `json:"device_id"`
	AtMs     int64  `json:"at_ms"`
	// Set for "call": the call's id, so the device can tell a stale push.
	CallID string `json:"call_id,omitempty"`
	// "high" for "call"; absent for "inbox" (normal priority).
	Priority string `json:"priority,omitempty"`
}

// Webhook posts notifications as JSON to a URL, HMAC-signed.
type Webhook struct {
	URL    string
	Secret []byte
	Client *http.Client // default: 10 s timeout
	Now    func() time.Time
}

// Send implements Provider. 2xx is success; 4xx other than 408 and 429 is
// permanent; anything else is retried by the Dispatcher.
func (w *Webhook) Send(ctx context.Context, n Notification) error {
	p := WebhookPayload{Type: "inbox", Token: n.Token, UserID: n.UserID, DeviceID: n.DeviceID, AtMs: n.At.UnixMilli()}
	if n.Call {
		p.Type, p.CallID, p.Priority = "call", n.CallID, "high"
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("webhook: encode: %w", err)
	}
	ep := webhook.Endpoint{URL: w.URL, Secret: w.Secret, Client: w.Client, Now: w.Now}
	return ep.Post(ctx, body)
}

// Sign is the webhook signature of body sent at timestamp ts (Unix
// seconds): webhook.Sign, kept here for receivers that import push.
func Sign(secret []byte, ts string, body []byte) string { return webhook.Sign(secret, ts, body) }

// Verify checks a webhook request's signature header against body:
// webhook.Verify, kept here for receivers that import push.
func Verify(secret []byte, ts, header string, body []byte) error {
	return webhook.Verify(secret, ts, header, body)
}
