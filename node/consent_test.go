package node_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// Tests that what one user can cause to be stored in another's inbox is
// bounded by what that other user allowed (issue #20, item 1): receipts
// name messages their sender was delivered, blocked users reach nothing,
// identity notices go to consenting contacts only and are paced.

// reply sends f and reads until the frame answering it.
func (w *wsConn) reply(f *courierpb.ClientFrame) *courierpb.ServerFrame {
	w.t.Helper()
	w.write(f)
	for {
		r := w.mustRead()
		if r.ReqId == f.ReqId && r.GetDeliver() == nil {
			return r
		}
		w.entries = append(w.entries, r.GetDeliver().GetEntries()...)
	}
}

// entriesUntilQuiet returns every entry delivered until quiet passes
// without one.
func (w *wsConn) entriesUntilQuiet(quiet time.Duration) []*courierpb.InboxEntry {
	var got []*courierpb.InboxEntry
	for {
		e, err := w.nextEntry(quiet)
		if err != nil {
			return got
		}
		got = append(got, e)
	}
}

func readFrame(reqID uint64, peer string, ids ...string) *courierpb.ClientFrame {
	return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Read{Read: &courierpb.ReadReceipt{PeerUserId: peer, ClientMsgIds: ids}}}
}

func contactsFrame(reqID uint64, ids ...string) *courierpb.ClientFrame {
	return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: ids}}}
}

func blockFrame(reqID uint64, id string) *courierpb.ClientFrame {
	return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Block{Block: &courierpb.BlockUpdate{UserId: id, Blocked: true}}}
}

func TestReadReceiptsNameOnlyMessagesTheReaderWasDelivered(t *testing.T) {
	n := startNode(t, nil)
	suffix := time.Now().UnixNano()
	alice := register(t, n.URL(), fmt.Sprintf("alice-%d", suffix))
	bob := register(t, n.URL(), fmt.Sprintf("bob-%d", suffix))
	eve := register(t, n.URL(), fmt.Sprintf("eve-%d", suffix))
	mallory := register(t, n.URL(), fmt.Sprintf("mallory-%d", suffix))
	aw, bw, ew, mw := dial(t, n.URL(), alice.Token, 0), dial(t, n.URL(), bob.Token, 0), dial(t, n.URL(), eve.Token, 0), dial(t, n.URL(), mallory.Token, 0)
	for _, w := range []*wsConn{aw, bw, ew, mw} {
		w.attached()
	}
	aw.sendAcked(1, bob.UserID, "m1", []byte("hi bob"))
	aw.sendAcked(2, mallory.UserID, "x1", []byte("hi mallory"))
	if e := bw.mustEntry(); e.ClientMsgId != "m1" {
		t.Fatalf("bob got %v", e)
	}
	if f := aw.reply(blockFrame(3, mallory.UserID)); f.GetContactList() == nil {
		t.Fatalf("block answered %v", f)
	}

	// A stranger's receipts: made-up ids, and a real id of a message she
	// never got. Refused, and nothing reaches alice.
	for i, ids := range [][]string{{"visit example.com for cheap watches"}, {"m1"}, {"m1", "x1"}} {
		f := ew.reply(readFrame(uint64(10+i), alice.UserID, ids...))
		if e := f.GetError(); e == nil || e.Code != courierpb.ErrorCode_FORBIDDEN {
			t.Fatalf("eve's read receipt for %q answered %v, want FORBIDDEN", ids, f)
		}
	}
	// bob mixing a made-up id into a genuine receipt: refused whole.
	if e := bw.reply(readFrame(20, alice.UserID, "m1", "spam")).GetError(); e == nil || e.Code != courierpb.ErrorCode_FORBIDDEN {
		t.Fatalf("bob's receipt with a made-up id answered %v, want FORBIDDEN", e)
	}
	// mallory was delivered x1, but alice blocked her since: answered as
	// if stored, so she cannot tell, and nothing is.
	if f := mw.reply(readFrame(30, alice.UserID, "x1")); f.GetReadOk() == nil {
		t.Fatalf("a blocked reader's receipt answered %v; it must look stored", f)
	}
	// The genuine receipt goes through.
	if f := bw.reply(readFrame(21, alice.UserID, "m1")); f.GetReadOk() == nil {
		t.Fatalf("bob's genuine read receipt answered %v", f)
	}

	var reads []*courierpb.InboxEntry
	for _, e := range aw.entriesUntilQuiet(500 * time.Millisecond) {
		if e.Kind == courierpb.EntryKind_ENTRY_KIND_READ {
			reads = append(reads, e)
		}
		if e.FromUserId == eve.UserID || e.FromUserId == mallory.UserID {
			t.Errorf("alice got %v from %s", e.Kind, e.FromUserId)
		}
	}
	if len(reads) != 1 || reads[0].FromUserId != bob.UserID || len(reads[0].ReceiptFor) != 1 || reads[0].ReceiptFor[0] != "m1" {
		t.Fatalf("alice's read receipts: %v; want bob's for m1 only", reads)
	}
}

func TestIdentityKeyUploadsReachOnlyConsentingContactsAndArePaced(t *testing.T) {
	n := startNode(t, nil)
	suffix := time.Now().UnixNano()
	alice := register(t, n.URL(), fmt.Sprintf("alice-%d", suffix))
	bob := register(t, n.URL(), fmt.Sprintf("bob-%d", suffix))
	eve := register(t, n.URL(), fmt.Sprintf("eve-%d", suffix))
	mallory := register(t, n.URL(), fmt.Sprintf("mallory-%d", suffix))
	aw := dial(t, n.URL(), alice.Token, 0)
	aw.attached()
	// eve adds alice without her consent; alice has mallory as a contact
	// but blocked her; alice and bob have each other.
	if f := aw.reply(contactsFrame(1, bob.UserID, mallory.UserID)); f.GetContactList() == nil {
		t.Fatalf("contacts update answered %v", f)
	}
	if f := aw.reply(blockFrame(2, mallory.UserID)); f.GetContactList() == nil {
		t.Fatalf("block answered %v", f)
	}
	for _, u := range []account{bob, eve, mallory} {
		w := dial(t, n.URL(), u.Token, 0)
		w.attached()
		if f := w.reply(contactsFrame(1, alice.UserID)); f.GetContactList() == nil {
			t.Fatalf("contacts update answered %v", f)
		}
	}

	// Each upload is a new identity key, each one a key change.
	const uploads = 6
	for i := range uploads {
		putKeys(t, n, eve.Token, keyUpload(t, uint32(1+i*10), 1))
		putKeys(t, n, mallory.Token, keyUpload(t, uint32(1+i*10), 1))
	}
	for i := range uploads {
		putKeys(t, n, bob.Token, keyUpload(t, uint32(1+i*10), 1))
	}

	got := aw.entriesUntilQuiet(time.Second)
	var fromBob int
	for _, e := range got {
		switch {
		case e.FromUserId == bob.UserID && e.Kind == courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED:
			fromBob++
		default:
			t.Errorf("alice got %v from %s", e.Kind, e.FromUserId)
		}
	}
	// bob's first change is announced at once; the later ones wait for the
	// end of the interval (minutes), coalesced into one notice.
	if fromBob != 1 {
		t.Fatalf("alice got %d identity notices from bob after %d key changes, want 1", fromBob, uploads-1)
	}
}
