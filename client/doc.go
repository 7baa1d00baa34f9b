// Package client is the Go SDK of Courier: it registers devices, keeps one
// WebSocket session per device alive, and turns the wire protocol
// (protos/wire.proto) into a small API.
//
//	creds, _ := client.Register(ctx, "http://127.0.0.1:8080", "alice")
//	c, _ := client.Dial(ctx, creds)
//	defer c.Close()
//	res, err := c.Send(ctx, bobID, ciphertext) // returns on the single tick
//	for e := range c.Entries() { ... }           // messages and receipts, in order
//
// # Delivery guarantees
//
// The server stores every message before it answers a Send (SendAck, the
// single tick) and keeps it in the recipient's device inbox until that device
// acknowledges it. The SDK turns this at-least-once transport into an
// exactly-once effect for the application:
//
//   - Send picks a client_msg_id and re-sends with the same id after a
//     retryable error, a request timeout or a reconnect, until its context
//     ends; the server stores a given (sender, client_msg_id) once.
//   - Entries delivers inbox entries in inbox_seq order and suppresses
//     duplicates: entries at or below the last inbox_seq already handed out,
//     and messages whose (from_user_id, client_msg_id) was handed out
//     recently (a bounded window, WithDedupeWindow).
//   - Reconnects resume with after=<last inbox_seq handed to the application>,
//     so nothing handed out is replayed and nothing not handed out is skipped.
//
// # Acknowledgements
//
// An entry counts as consumed as soon as a receive from the Entries channel
// returns it: the SDK then acknowledges it to the server (cumulatively,
// batched every AckInterval), and the server deletes it and, for messages,
// sends the sender a delivered receipt. Persist or display an entry before
// receiving the next one if you must not lose it across a crash. Entries
// still buffered inside the SDK when the Client closes are not acknowledged
// and are delivered again next time.
//
// # Backpressure
//
// The SDK buffers a bounded number of received entries (WithEntryBuffer).
// When the application does not read Entries and the buffer is full, the
// SDK stops taking entries from the socket: it disconnects (once no request
// of yours is waiting for its answer on that socket, so a Send or MarkRead
// issued while you are not reading never deadlocks) and reconnects, resuming
// from the inbox, once you have drained half the buffer. The server
// likewise disconnects a session that does not read (close code 4008) and
// the SDK resumes the same way. Nothing is buffered without bound.
package client
