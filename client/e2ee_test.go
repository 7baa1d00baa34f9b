package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/client/e2ee"
	"github.com/courier-im/courier/internal/storematrix"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// e2eeDial connects a device with end-to-end encryption and its own key
// file.
func e2eeDial(t *testing.T, creds client.Credentials, dir string) *client.Client {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.keys", creds.UserID, creds.DeviceID))
	return dial(t, creds, client.WithE2EE(path))
}

// linkDevice links one more device to primary's user.
func linkDevice(t *testing.T, n *node.Node, primary *client.Client) client.Credentials {
	t.Helper()
	ctx := timeout(t, 10*time.Second)
	code, err := primary.CreateLinkCode(ctx)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Link(ctx, n.URL(), code)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// nextPlain returns the next entry of one of kinds, decrypted.
func nextPlain(t *testing.T, c *client.Client, d time.Duration, kinds ...courierpb.EntryKind) client.Entry {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		e := next(t, c, time.Until(deadline))
		for _, k := range kinds {
			if e.Kind == k {
				if e.DecryptErr != nil {
					t.Fatalf("%s/%d could not decrypt %v from %s/%d: %v", c.UserID(), c.DeviceID(), e.Kind, e.FromUserID, e.FromDeviceID, e.DecryptErr)
				}
				return e
			}
		}
	}
}

func TestEveryDeviceOfBothUsersDecryptsTheConversation(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	a1 := e2eeDial(t, register(t, n, "alice"), dir)
	b1 := e2eeDial(t, register(t, n, "bob"), dir)
	a2 := e2eeDial(t, linkDevice(t, n, a1), dir)
	b2 := e2eeDial(t, linkDevice(t, n, b1), dir)

	say := func(from *client.Client, to *client.Client, texts ...string) {
		t.Helper()
		for _, text := range texts {
			if _, err := from.Send(ctx, to.UserID(), []byte(text)); err != nil {
				t.Fatalf("send %q: %v", text, err)
			}
		}
	}
	expect := func(c *client.Client, kind courierpb.EntryKind, texts ...string) {
		t.Helper()
		for _, text := range texts {
			e := nextPlain(t, c, 10*time.Second, kind)
			if string(e.Plaintext) != text {
				t.Fatalf("%s/%d got %q, want %q", c.UserID(), c.DeviceID(), e.Plaintext, text)
			}
			if bytes.Contains(e.Ciphertext, []byte(text)) {
				t.Fatalf("the ciphertext of %q contains it", text)
			}
		}
	}
	// Several messages before any reply (prekey messages), then replies
	// from the other devices in both directions.
	say(a1, b1, "hi bob", "are you there?", "it's alice")
	for _, c := range []*client.Client{b1, b2} {
		expect(c, courierpb.EntryKind_ENTRY_KIND_MESSAGE, "hi bob", "are you there?", "it's alice")
	}
	expect(a2, courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT, "hi bob", "are you there?", "it's alice")
	say(b2, a1, "yes, on my laptop")
	for _, c := range []*client.Client{a1, a2} {
		expect(c, courierpb.EntryKind_ENTRY_KIND_MESSAGE, "yes, on my laptop")
	}
	expect(b1, courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT, "yes, on my laptop")
	say(a2, b1, "from my phone")
	for _, c := range []*client.Client{b1, b2} {
		expect(c, courierpb.EntryKind_ENTRY_KIND_MESSAGE, "from my phone")
	}
	expect(a1, courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT, "from my phone")
}

func TestStaleDeviceListIsRefreshedAndResentBySDK(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	a := e2eeDial(t, register(t, n, "alice"), dir)
	b1 := e2eeDial(t, register(t, n, "bob"), dir)
	if _, err := a.Send(ctx, b1.UserID(), []byte("one")); err != nil {
		t.Fatal(err)
	}
	nextPlain(t, b1, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE)

	// Bob links a device after alice learned his device list: her next send
	// names one device too few, the server refuses it, the SDK refetches and
	// resends with the same id.
	b2creds := linkDevice(t, n, b1)
	b2 := e2eeDial(t, b2creds, dir)
	res, err := a.Send(ctx, b1.UserID(), []byte("two"))
	if err != nil {
		t.Fatalf("send after bob linked a device: %v", err)
	}
	for _, c := range []*client.Client{b1, b2} {
		if e := nextPlain(t, c, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE); string(e.Plaintext) != "two" || e.ClientMsgID != res.ClientMsgID {
			t.Fatalf("bob/%d got %q", c.DeviceID(), e.Plaintext)
		}
	}

	// Bob unlinks it: alice's list has one device too many, same story.
	if err := b1.UnlinkDevice(ctx, b2creds.DeviceID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Send(ctx, b1.UserID(), []byte("three")); err != nil {
		t.Fatalf("send after bob unlinked a device: %v", err)
	}
	if e := nextPlain(t, b1, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE); string(e.Plaintext) != "three" {
		t.Fatalf("bob/1 got %q", e.Plaintext)
	}
	// The unlinked device was told to go and gets nothing more.
	eventuallyTrue(t, "the unlinked device to be closed", 10*time.Second, b2.Replaced)
	if _, err := client.Dial(timeout(t, 3*time.Second), b2creds); err == nil {
		t.Fatal("an unlinked device connected again")
	}
}

// storeBytes collects every byte the store holds: the embedded store's
// files (WAL and tables), or every row of every table of the CQL keyspace.
func storeBytes(t *testing.T, store storematrix.Store, dataDir string) [][]byte {
	t.Helper()
	var out [][]byte
	if store.Name != "scylla" {
		err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			out = append(out, b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cl := gocql.NewCluster(store.Hosts...)
	cl.Keyspace = store.Keyspace
	cl.Timeout = 10 * time.Second
	sess, err := cl.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var tables []string
	it := sess.Query("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?", store.Keyspace).Iter()
	var name string
	for it.Scan(&name) {
		tables = append(tables, name)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range tables {
		rows := sess.Query("SELECT * FROM " + tbl).Iter()
		for {
			row := map[string]any{}
			if !rows.MapScan(row) {
				break
			}
			for _, v := range row {
				switch x := v.(type) {
				case []byte:
					out = append(out, x)
				case string:
					out = append(out, []byte(x))
				}
			}
		}
		if err := rows.Close(); err != nil {
			t.Fatalf("read table %s: %v", tbl, err)
		}
	}
	return out
}

func TestPlaintextIsNowhereInTheStore(t *testing.T) {
	storematrix.Run(t, func(t *testing.T, store storematrix.Store) {
		dataDir, keysDir := t.TempDir(), t.TempDir()
		cfg := store.Apply(node.Config{DataDir: dataDir})
		n := startNode(t, cfg)
		ctx := timeout(t, 60*time.Second)
		aCreds, bCreds := register(t, n, "alice"), register(t, n, "bob")
		a := e2eeDial(t, aCreds, keysDir)
		b := e2eeDial(t, bCreds, keysDir)
		marker := make([]byte, 32)
		_, _ = rand.Read(marker)
		if _, err := a.Send(ctx, b.UserID(), marker); err != nil {
			t.Fatal(err)
		}
		// Stored for an offline third party too, then delivered to bob.
		if e := nextPlain(t, b, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE); !bytes.Equal(e.Plaintext, marker) {
			t.Fatal("bob did not get the marker")
		}
		check := func(when string) {
			t.Helper()
			for _, chunk := range storeBytes(t, store, dataDir) {
				if bytes.Contains(chunk, marker) {
					t.Fatalf("%s: the plaintext marker is in the store", when)
				}
			}
		}
		check("after delivery")
		a.Close()
		b.Close()
		// A restart flushes everything the store buffered.
		closeCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := n.Close(closeCtx); err != nil {
			t.Fatal(err)
		}
		n = startNode(t, cfg)
		check("after restart")
		// The device key files hold sessions, never plaintext.
		for _, chunk := range storeBytes(t, storematrix.Store{Name: "embedded"}, keysDir) {
			if bytes.Contains(chunk, marker) {
				t.Fatal("the plaintext marker is in a device key file")
			}
		}
	})
}

func TestGroupOfFiftyWithSenderKeysAndAutomaticRotation(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 3*time.Minute)
	const size = 50
	members := make([]*client.Client, size)
	var wg sync.WaitGroup
	errs := make(chan error, size)
	for i := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds, err := client.Register(ctx, n.URL(), fmt.Sprintf("g50-%d-%d", time.Now().UnixNano(), i))
			if err != nil {
				errs <- err
				return
			}
			c, err := client.Dial(ctx, creds, client.WithE2EE(filepath.Join(dir, creds.UserID+".keys")), client.WithLogger(testLogger(t)))
			if err != nil {
				errs <- err
				return
			}
			members[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range members {
		t.Cleanup(func() { c.Close() })
	}
	owner := members[0]
	var ids []string
	for _, c := range members[1:] {
		ids = append(ids, c.UserID())
	}
	info, err := owner.CreateGroup(ctx, "fifty", ids)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := owner.SendGroup(ctx, info.ID, []byte("hello fifty")); err != nil {
		t.Fatal(err)
	}
	groupMsg := func(c *client.Client) client.Entry {
		return nextPlain(t, c, 60*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE)
	}
	var mu sync.Mutex
	readAll := func(cs []*client.Client, want string) {
		t.Helper()
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e := groupMsg(c)
				if string(e.Plaintext) != want {
					mu.Lock()
					t.Errorf("%s got %q, want %q", c.UserID(), e.Plaintext, want)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	readAll(members[1:], "hello fifty")
	if t.Failed() {
		t.FailNow()
	}

	// Removing a member rotates the epoch; the owner's next message uses a
	// new sender key that the removed member never gets.
	gone := members[size-1]
	if _, err := owner.RemoveMembers(ctx, info.ID, gone.UserID()); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.SendGroup(ctx, info.ID, []byte("after the removal")); err != nil {
		t.Fatal(err)
	}
	stay := members[1 : size-1]
	e := groupMsg(stay[0])
	if string(e.Plaintext) != "after the removal" || e.SenderKeyEpoch <= 1 {
		t.Fatalf("member got %q at epoch %d", e.Plaintext, e.SenderKeyEpoch)
	}
	readAll(stay[1:], "after the removal")
	// Even holding the ciphertext, the removed member cannot read it.
	_, err = gone.Device().GroupDecrypt(info.ID, e.SenderKeyEpoch, e.FromUserID, e.FromDeviceID, e.Ciphertext)
	if !errors.Is(err, e2ee.ErrNoSenderKey) {
		t.Fatalf("the removed member decrypting the new epoch: err = %v, want ErrNoSenderKey", err)
	}
}

func TestTamperedCiphertextAndForgedBundleSurfaceAsErrors(t *testing.T) {
	n := startNode(t, node.Config{})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	a := e2eeDial(t, register(t, n, "alice"), dir)
	bCreds := register(t, n, "bob")
	b := e2eeDial(t, bCreds, dir)
	b.Close() // offline: the message waits in the store

	if _, err := a.Send(ctx, bCreds.UserID, []byte("the original")); err != nil {
		t.Fatal(err)
	}
	// A malicious server flips a byte of the stored ciphertext.
	st := n.Store()
	es, err := st.Range(ctx, bCreds.UserID, 1, 0, 10)
	if err != nil || len(es) != 1 {
		t.Fatalf("bob's inbox: %v (%v)", es, err)
	}
	bad := es[0]
	bad.Ciphertext[len(bad.Ciphertext)/2] ^= 0x40
	if err := st.DeleteRange(ctx, bCreds.UserID, 1, 0, bad.InboxSeq); err != nil {
		t.Fatal(err)
	}
	if err := st.Append(ctx, []persistence.InboxAppend{{UserID: bCreds.UserID, DeviceID: 1, Entry: bad}}, nil); err != nil {
		t.Fatal(err)
	}
	b = e2eeDial(t, bCreds, dir)
	e := nextOfKind(t, b, courierpb.EntryKind_ENTRY_KIND_MESSAGE, 10*time.Second)
	if e.DecryptErr == nil || e.Plaintext != nil {
		t.Fatalf("a tampered message decrypted to %q", e.Plaintext)
	}
	if !errors.Is(e.DecryptErr, e2ee.ErrInvalidMessage) {
		t.Fatalf("tampered message error %v, want ErrInvalidMessage", e.DecryptErr)
	}

	// The server swaps carol's signed prekey for one it made (bypassing its
	// own upload check): alice refuses to start a session from the bundle.
	cCreds := register(t, n, "carol")
	e2eeDial(t, cCreds, dir)
	keys, err := st.GetDeviceKeys(ctx, cCreds.UserID, 1)
	if err != nil {
		t.Fatal(err)
	}
	other, err := e2ee.Open(filepath.Join(t.TempDir(), "mallory.keys"), "mallory", 1)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.KeyUpload(0)
	if err != nil {
		t.Fatal(err)
	}
	keys.SignedPrekey = forged.SignedPrekey
	if _, err := st.PutDeviceKeys(ctx, cCreds.UserID, 1, keys); err != nil {
		t.Fatal(err)
	}
	_, err = a.Send(ctx, cCreds.UserID, []byte("to carol"))
	if !errors.Is(err, e2ee.ErrBadSignature) && !errors.Is(err, e2ee.ErrInvalidBundle) {
		t.Fatalf("send with a forged bundle: err = %v, want a bad-signature error", err)
	}
}

// TestRequireE2EEPassesSignalMessagesAndRefusesPlaintext: on a node that
// requires end-to-end encryption, the SDK's encrypted 1:1 and group
// messages go through and a plain ciphertext is refused, with nothing
// stored for its recipient.
func TestRequireE2EEPassesSignalMessagesAndRefusesPlaintext(t *testing.T) {
	n := startNode(t, node.Config{RequireE2EE: true})
	dir := t.TempDir()
	ctx := timeout(t, 60*time.Second)
	alice := e2eeDial(t, register(t, n, "alice"), dir)
	bob := e2eeDial(t, register(t, n, "bob"), dir)
	carol := e2eeDial(t, register(t, n, "carol"), dir)

	if _, err := alice.Send(ctx, bob.UserID(), []byte("hi bob")); err != nil {
		t.Fatalf("encrypted send: %v", err)
	}
	if e := nextPlain(t, bob, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_MESSAGE); string(e.Plaintext) != "hi bob" {
		t.Fatalf("bob got %q", e.Plaintext)
	}
	g, err := alice.CreateGroup(ctx, "e2ee only", []string{bob.UserID(), carol.UserID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendGroup(ctx, g.ID, []byte("hi all")); err != nil {
		t.Fatalf("encrypted group send: %v", err)
	}
	for _, c := range []*client.Client{bob, carol} {
		if e := nextPlain(t, c, 10*time.Second, courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE); string(e.Plaintext) != "hi all" {
			t.Fatalf("%s got %q", c.UserID(), e.Plaintext)
		}
	}

	plain := dial(t, register(t, n, "mallory"))
	_, err = plain.Send(ctx, bob.UserID(), []byte("plaintext through an e2ee server"))
	var e *client.Error
	if !errors.As(err, &e) || e.Code != courierpb.ErrorCode_INVALID_ARGUMENT {
		t.Fatalf("plain send: err = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := plain.SendGroup(ctx, g.ID, []byte("plaintext to a group")); !errors.As(err, &e) || e.Code != courierpb.ErrorCode_INVALID_ARGUMENT {
		t.Fatalf("plain group send: err = %v, want INVALID_ARGUMENT", err)
	}
	in, err := n.Store().Range(ctx, bob.UserID(), bob.DeviceID(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range in {
		if entry.FromUserId == plain.UserID() {
			t.Fatalf("a refused plaintext was stored for bob: %v", entry)
		}
	}
}
