// Package bench loads a Courier server through the Go SDK (package client)
// and checks what it delivers: every scenario counts loss, duplicates and
// reordering as well as throughput and latency, so a fast but wrong server
// fails the run.
//
// Scenarios: Direct (1:1, closed or open loop), Fanout (groups), Mixed (1:1,
// groups, read receipts and reconnects at once), Storm (many clients
// resuming their inboxes at once) and Conns (idle connections, spread over
// worker processes running ConnsWorker). Each returns a Report, which
// prints as a table (WriteText), as JSON with the full latency histogram
// (WriteJSON) and as a PNG plot (WritePlot). Presence (presence fan-out
// while connections flap) checks final presence states instead and returns
// a PresenceReport of its own; Media (encrypted file uploads and downloads
// through the SDK, resumed after cut connections) checks that every file
// comes back with its SHA-256 and returns a MediaReport. See README.md.
package bench
