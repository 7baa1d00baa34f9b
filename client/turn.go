package client

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// TURNCredentials are short-lived credentials for the TURN relays a call
// uses when no direct path exists (GET /v1/calls/turn). In WebRTC they are
// one ICE server: {URLs: URIs, Username: Username, Credential: Password}.
type TURNCredentials struct {
	// Username is "<unix expiry>:<user id>".
	Username string `json:"username"`
	// Password is the ICE server's credential.
	Password string `json:"password"`
	// TTL is how many seconds the pair was valid for when it was issued.
	TTL int64 `json:"ttl"`
	// URIs are the TURN servers, e.g. "turn:203.0.113.7:8080?transport=udp".
	URIs []string `json:"uris"`
	// Expires is when the pair stops working (local clock: the answer's
	// arrival plus TTL). A relayed call lasts at most until then; fetch a
	// fresh pair for each call.
	Expires time.Time `json:"-"`
}

// TURNCredentials fetches TURN credentials for this user. A server that
// runs no TURN (courier serve --turn-listen off) answers 404, an *Error.
func (c *Client) TURNCredentials(ctx context.Context) (TURNCredentials, error) {
	var out TURNCredentials
	if err := c.api(ctx, http.MethodGet, "/v1/calls/turn", nil, &out); err != nil {
		return TURNCredentials{}, fmt.Errorf("get TURN credentials: %w", err)
	}
	out.Expires = time.Now().Add(time.Duration(out.TTL) * time.Second)
	return out, nil
}
