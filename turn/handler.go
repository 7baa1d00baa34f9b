package turn

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"
)

// Path is where the credentials endpoint is mounted on the gateway's
// listener (GET).
const Path = "/v1/calls/turn"

// Response is the answer of GET /v1/calls/turn, the shape of
// draft-uberti-behave-turn-rest. A WebRTC client turns it into one
// RTCIceServer: {urls: uris, username: username, credential: password}.
type Response struct {
	// Username is "<unix expiry>:<user id>".
	Username string `json:"username"`
	// Password is base64(HMAC-SHA1(secret, Username)): the RTCIceServer's
	// credential.
	Password string `json:"password"`
	// TTL is how many seconds from now the pair stays valid, at least.
	TTL int64 `json:"ttl"`
	// URIs are the TURN servers (turn:host:port?transport=udp) to use it on.
	URIs []string `json:"uris"`
}

// Authenticator checks a request's credentials and returns the user it
// is for; on failure it has answered the request itself. The node passes
// the gateway's bearer-token check, as for media.
type Authenticator func(w http.ResponseWriter, r *http.Request) (userID string, ok bool)

// Handler serves GET /v1/calls/turn for users auth accepts.
func (s *Service) Handler(auth Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		userID, ok := auth(w, r)
		if !ok {
			return
		}
		c, err := s.Issue(userID)
		if err != nil {
			// Only a broken configuration gets here; Start refuses one.
			s.cfg.Logger.Error("turn: issue credentials", "err", err)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"code": "INTERNAL", "message": "cannot issue TURN credentials"})
			return
		}
		// The pair is valid for at least the TTL (NewCredentials rounds
		// its expiry up to a whole second).
		ttl := int64(s.cfg.TTL / time.Second)
		w.Header().Set("Content-Type", "application/json")
		// A password for a day: no cache, shared or private, keeps it.
		w.Header().Set("Cache-Control", "no-store")
		if err := json.NewEncoder(w).Encode(Response{Username: c.Username, Password: c.Password, TTL: ttl, URIs: s.uris}); err != nil {
			s.cfg.Logger.Debug("turn: write credentials", "err", err, slog.String("user", userID))
		}
	})
}
