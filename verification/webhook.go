package verification

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/courier-im/courier/webhook"
)

// WebhookPayload is the JSON body the webhook receives: deliver Code to
// Address (by SMS, by mail) before ExpiresAt. It is signed as every
// Courier webhook is (package webhook: X-Courier-Signature over
// X-Courier-Timestamp and the body).
type WebhookPayload struct {
	Type      string    `json:"type"` // always "registration_code"
	Handle    string    `json:"handle"`
	Address   string    `json:"address"`
	Code      string    `json:"code"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Webhook is a Sender that POSTs each code to the operator's endpoint,
// which delivers it. 2xx is delivered; 4xx other than 408 and 429 is a
// refusal and is not retried; anything else is tried again after a
// backoff, while the caller's context lasts.
type Webhook struct {
	URL    string
	Secret []byte
	// Client sends the requests and bounds each one (default: a
	// webhook.DefaultTimeout timeout).
	Client *http.Client
	// Attempts is how many times one code is tried (default 3); Backoff
	// the wait after the first failure, doubled after each (default 250ms).
	// The person is waiting, so both are short next to push's.
	Attempts int
	Backoff  time.Duration
}

// Send implements Sender.
func (w *Webhook) Send(ctx context.Context, v Verification) error {
	body, err := json.Marshal(WebhookPayload{Type: "registration_code", Handle: v.Handle, Address: v.Address, Code: v.Code, ExpiresAt: v.ExpiresAt.UTC()})
	if err != nil {
		return fmt.Errorf("verification webhook: encode: %w", err)
	}
	attempts, backoff := w.Attempts, w.Backoff
	if attempts <= 0 {
		attempts = 3
	}
	if backoff <= 0 {
		backoff = 250 * time.Millisecond
	}
	ep := webhook.Endpoint{URL: w.URL, Secret: w.Secret, Client: w.Client}
	for attempt := 1; ; attempt++ {
		err := ep.Post(ctx, body)
		if err == nil {
			return nil
		}
		if errors.Is(err, webhook.ErrPermanent) || attempt == attempts {
			return fmt.Errorf("%w (attempt %d of %d)", err, attempt, attempts)
		}
		t := time.NewTimer(webhook.Backoff(backoff, 8*backoff, attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (attempt %d of %d; gave up: %w)", err, attempt, attempts, context.Cause(ctx))
		case <-t.C:
		}
	}
}
