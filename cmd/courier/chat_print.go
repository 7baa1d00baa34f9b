package main

// How entries, receipts and connection changes read at a terminal.

import (
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

// printConnState tells the person at a listener that the server went away
// and came back.
func printConnState(w io.Writer, st client.ConnEvent) {
	at := st.At.Format(time.TimeOnly)
	if st.State == client.Reconnected {
		fmt.Fprintf(w, "[%s] connected again; anything that arrived meanwhile follows\n", at)
		return
	}
	reason := "the connection was lost"
	if st.Err != nil {
		reason += ": " + userMessage(st.Err)
	}
	fmt.Fprintf(w, "[%s] %s; reconnecting (messages wait in your inbox meanwhile)\n", at, reason)
}

// printer shows entries as a person reads them. Receipts are shown in the
// order ticks make sense: a read receipt that overtakes its delivered one
// (they travel separately) shows "delivered" first, and the late delivered
// receipt is not shown again.
type printer struct {
	w     io.Writer
	names *names
	// receipted: client_msg_ids whose delivered tick was shown; bounded
	// by forgetting all of them now and then (a repeat tick is harmless).
	receipted map[string]bool
}

const maxRememberedReceipts = 10000

func newPrinter(w io.Writer, n *names) *printer {
	return &printer{w: w, names: n, receipted: make(map[string]bool)}
}

func (p *printer) print(e client.Entry) {
	switch e.Kind {
	case courierpb.EntryKind_ENTRY_KIND_DELIVERED:
		for _, id := range e.ReceiptFor {
			if p.tick(id) {
				fmt.Fprintf(p.w, "✓✓ delivered %s (to %s)\n", id, p.names.name(e.FromUserID))
			}
		}
	case courierpb.EntryKind_ENTRY_KIND_READ:
		for _, id := range e.ReceiptFor {
			if p.tick(id) {
				fmt.Fprintf(p.w, "✓✓ delivered %s (to %s)\n", id, p.names.name(e.FromUserID))
			}
			fmt.Fprintf(p.w, "✓✓ read %s (by %s)\n", id, p.names.name(e.FromUserID))
		}
	default:
		printEntry(p.w, e, p.names)
	}
}

// tick records that id's delivered tick is shown; false if it was before.
func (p *printer) tick(id string) bool {
	if p.receipted[id] {
		return false
	}
	if len(p.receipted) >= maxRememberedReceipts {
		clear(p.receipted)
	}
	p.receipted[id] = true
	return true
}

// printEntry prints one entry other than a 1:1 receipt (see printer).
func printEntry(w io.Writer, e client.Entry, n *names) {
	at := e.SentAt.Local().Format(time.TimeOnly)
	switch e.Kind {
	case courierpb.EntryKind_ENTRY_KIND_MESSAGE:
		fmt.Fprintf(w, "[%s] %s: %s\n", at, n.name(e.FromUserID), body(e))
	case courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT:
		fmt.Fprintf(w, "[%s] you → %s: %s\n", at, n.name(e.ToUserID), body(e))
	case courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED:
		fmt.Fprintf(w, "[%s] ⚠ %s's safety number changed (device %d has a new identity key)\n", at, n.name(e.FromUserID), e.FromDeviceID)
	case courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW:
		// The client uploads more keys by itself.
	case courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE, courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT,
		courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED, courierpb.EntryKind_ENTRY_KIND_GROUP_READ:
		printGroupEntry(w, e, n)
	default:
		fmt.Fprintf(w, "[%s] entry %d of kind %v from %s\n", at, e.Seq, e.Kind, n.name(e.FromUserID))
	}
}

// body is what a message says: its decrypted text, or why it has none.
func body(e client.Entry) string {
	if ref, ok := client.MediaOf(e); ok {
		return describeMedia(ref)
	}
	switch {
	case e.DecryptErr != nil:
		return "⚠ cannot decrypt: " + e.DecryptErr.Error()
	case e.Plaintext != nil:
		return text(e.Plaintext)
	default:
		return text(e.Ciphertext)
	}
}

// text shows a payload as text, or says what it is when it is not UTF-8.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("<%d bytes, not text>", len(b))
}
