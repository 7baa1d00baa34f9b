// Package turn gives call participants a TURN relay: short-lived
// credentials in the TURN REST form, the HTTP endpoint that hands them out,
// and an embedded TURN server (github.com/pion/turn/v4) that accepts exactly
// those credentials. node/node.go wires it; `courier serve` runs it by
// default.
//
// # What it owns
//
//   - Credentials (credentials.go): username "<unix expiry>:<user id>",
//     password base64(HMAC-SHA1(secret, username)), the scheme of
//     draft-uberti-behave-turn-rest that coturn's use-auth-secret mode and
//     pion's LongTermTURNRESTAuthHandler speak. Whoever knows the shared
//     secret can check a credential without asking Courier.
//   - GET /v1/calls/turn (handler.go): credentials for the authenticated
//     user and the TURN URIs to use them on, as JSON (Response).
//   - The embedded server (server.go): one UDP socket next to the gateway,
//     relay sockets on RelayIP, a peer policy refusing relays to loopback,
//     link-local, multicast and (from a public relay) private addresses.
//   - The shared secret's file when none is configured (secret.go):
//     <data>/turn-secret, mode 0600, never in the message store.
//
// # What it never touches
//
//   - Media: bytes relayed are DTLS-SRTP or data-channel ciphertext between
//     the peers; the server neither decodes nor logs them.
//   - Access tokens: a request is authenticated by the function the node
//     passes in (the gateway's bearer-token check), as media does.
//   - Signaling: offers, answers and candidates travel through the grains.
//
// # Invariants
//
//   - T1: a credential is refused once its expiry (a whole unix second) has
//     passed, by every request that carries it, Refresh included: the TTL
//     bounds how long a relayed call can last (see DefaultTTL).
//   - T2: Service.Close returns after the server's socket and every relay
//     socket it opened are closed.
package turn
