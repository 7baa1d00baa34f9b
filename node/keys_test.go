package node_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"go.mau.fi/libsignal/ecc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/internal/storematrix"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// keyUpload makes real Curve25519 keys with a valid XEdDSA signature, as a
// device would, with prekey ids first..first+n-1.
func keyUpload(t testing.TB, first uint32, n int) *courierpb.KeyUpload {
	t.Helper()
	id, err := ecc.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	spk, err := ecc.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	sig := ecc.CalculateSignature(id.PrivateKey(), spk.PublicKey().Serialize())
	u := &courierpb.KeyUpload{RegistrationId: 42, IdentityKey: id.PublicKey().Serialize(),
		SignedPrekeyId: 1, SignedPrekey: spk.PublicKey().Serialize(), SignedPrekeySignature: sig[:]}
	for i := range n {
		k, err := ecc.GenerateKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		u.OneTimePrekeys = append(u.OneTimePrekeys, &courierpb.OneTimePrekey{Id: first + uint32(i), PublicKey: k.PublicKey().Serialize()})
	}
	return u
}

// api calls the HTTP API with a bearer token; body is a proto (protojson)
// or any JSON value.
func api(t testing.TB, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case proto.Message:
		raw, err := protojson.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	default:
		rd = bytes.NewReader(mustJSON(t, b))
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func putKeys(t testing.TB, n *node.Node, token string, u *courierpb.KeyUpload) {
	t.Helper()
	if code, raw := api(t, http.MethodPut, n.URL()+"/v1/keys", token, u); code != http.StatusOK {
		t.Fatalf("PUT /v1/keys: %d %s", code, raw)
	}
}

func fetchBundles(t *testing.T, n *node.Node, token, userID string) *courierpb.UserBundles {
	t.Helper()
	code, raw := api(t, http.MethodGet, n.URL()+"/v1/keys/"+userID, token, nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/keys/%s: %d %s", userID, code, raw)
	}
	var b courierpb.UserBundles
	if err := protojson.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

func TestForgedSignedPrekeyIsRefused(t *testing.T) {
	n := startNode(t, nil)
	a := register(t, n.URL(), fmt.Sprintf("forger-%d", time.Now().UnixNano()))
	other := keyUpload(t, 1, 0)
	cases := []struct {
		name   string
		mutate func(u *courierpb.KeyUpload)
	}{
		{"signature by another identity", func(u *courierpb.KeyUpload) { u.SignedPrekeySignature = other.SignedPrekeySignature }},
		{"signed prekey swapped", func(u *courierpb.KeyUpload) { u.SignedPrekey = other.SignedPrekey }},
		{"signature bit flipped", func(u *courierpb.KeyUpload) { u.SignedPrekeySignature[10] ^= 1 }},
		{"identity key truncated", func(u *courierpb.KeyUpload) { u.IdentityKey = u.IdentityKey[:20] }},
		{"identity key of unknown type", func(u *courierpb.KeyUpload) { u.IdentityKey[0] = 0x07 }},
		{"empty keys", func(u *courierpb.KeyUpload) { u.IdentityKey, u.SignedPrekey = nil, nil }},
		{"duplicate prekey ids", func(u *courierpb.KeyUpload) { u.OneTimePrekeys[1].Id = u.OneTimePrekeys[0].Id }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := keyUpload(t, 1, 2)
			tc.mutate(u)
			code, raw := api(t, http.MethodPut, n.URL()+"/v1/keys", a.Token, u)
			if code != http.StatusBadRequest || !bytes.Contains(raw, []byte("INVALID_ARGUMENT")) {
				t.Fatalf("forged upload answered %d %s, want 400 INVALID_ARGUMENT", code, raw)
			}
		})
	}
	// Nothing of it was stored.
	b := fetchBundles(t, n, a.Token, a.UserID)
	if len(b.Devices) != 0 {
		t.Fatalf("a refused upload left a bundle: %v", b)
	}
}

func TestConcurrentBundleFetchesNeverShareAOneTimePrekey(t *testing.T) {
	storematrix.Run(t, func(t *testing.T, store storematrix.Store) {
		n := startNode(t, func(c *node.Config) { store.Configure(c) })
		owner := register(t, n.URL(), fmt.Sprintf("owner-%d", time.Now().UnixNano()))
		const pool, fetchers = 30, 40
		putKeys(t, n, owner.Token, keyUpload(t, 1, pool))
		var mu sync.Mutex
		seen := map[uint32]int{}
		empty := 0
		var wg sync.WaitGroup
		for i := range fetchers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := register(t, n.URL(), fmt.Sprintf("fetcher-%d-%d", time.Now().UnixNano(), i))
				b := fetchBundles(t, n, f.Token, owner.UserID)
				if len(b.Devices) != 1 {
					t.Errorf("fetch %d: %d bundles, want 1", i, len(b.Devices))
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if d := b.Devices[0]; len(d.OneTimePrekey) == 0 {
					empty++
				} else {
					seen[d.OneTimePrekeyId]++
				}
			}()
		}
		wg.Wait()
		for id, times := range seen {
			if times > 1 {
				t.Errorf("one-time prekey %d handed out %d times", id, times)
			}
		}
		if len(seen) != pool || empty != fetchers-pool {
			t.Fatalf("%d distinct prekeys handed out and %d bundles without one; want %d and %d", len(seen), empty, pool, fetchers-pool)
		}
	})
}

func TestLowPrekeyPoolNotifiesTheDevice(t *testing.T) {
	n := startNode(t, nil)
	owner := register(t, n.URL(), fmt.Sprintf("owner-%d", time.Now().UnixNano()))
	fetcher := register(t, n.URL(), fmt.Sprintf("fetcher-%d", time.Now().UnixNano()))
	putKeys(t, n, owner.Token, keyUpload(t, 1, gateway.PrekeysLowWatermark+2))
	for range 3 {
		fetchBundles(t, n, fetcher.Token, owner.UserID)
	}
	ws := dial(t, n.URL(), owner.Token, 0)
	ws.attached()
	e := ws.mustEntry()
	if e.Kind != courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW {
		t.Fatalf("owner got %v, want PREKEYS_LOW", e.Kind)
	}
	code, raw := api(t, http.MethodGet, n.URL()+"/v1/keys", owner.Token, nil)
	if code != http.StatusOK || !bytes.Contains(raw, []byte(fmt.Sprintf(`"one_time_prekeys":%d`, gateway.PrekeysLowWatermark-1))) {
		t.Fatalf("GET /v1/keys = %d %s", code, raw)
	}
}

// linkDevice runs the provisioning flow: the primary asks for a code, the
// new device redeems it and gets a token.
func linkDevice(t *testing.T, n *node.Node, primary account) (account, uint32, int) {
	t.Helper()
	code, raw := api(t, http.MethodPost, n.URL()+"/v1/devices/link-code", primary.Token, nil)
	if code != http.StatusCreated {
		return account{}, 0, code
	}
	var lc gateway.LinkCodeResponse
	mustUnmarshal(t, raw, &lc)
	code, raw = api(t, http.MethodPost, n.URL()+"/v1/devices/link", "", gateway.LinkRequest{Code: lc.Code})
	if code != http.StatusCreated {
		return account{}, 0, code
	}
	var reg gateway.RegisterResponse
	mustUnmarshal(t, raw, &reg)
	var tok gateway.TokenResponse
	if c, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/token", gateway.TokenRequest{UserID: reg.UserID, DeviceID: reg.DeviceID, DeviceSecret: reg.DeviceSecret}, &tok); c != http.StatusOK {
		t.Fatalf("token of linked device: %d %+v", c, ge)
	}
	// A link code works once.
	if c, _ := api(t, http.MethodPost, n.URL()+"/v1/devices/link", "", gateway.LinkRequest{Code: lc.Code}); c != http.StatusForbidden {
		t.Fatalf("a used link code answered %d, want 403", c)
	}
	return account{UserID: reg.UserID, Secret: reg.DeviceSecret, Token: tok.AccessToken}, reg.DeviceID, http.StatusCreated
}

func TestLinkingIsCappedAtFiveDevicesAndUnlinkedDevicesAreLockedOut(t *testing.T) {
	n := startNode(t, nil)
	handle := fmt.Sprintf("multi-%d", time.Now().UnixNano())
	primary := register(t, n.URL(), handle)
	peer := register(t, n.URL(), fmt.Sprintf("peer-%d", time.Now().UnixNano()))
	var linked []account
	for want := uint32(2); want <= 5; want++ {
		acc, id, code := linkDevice(t, n, primary)
		if code != http.StatusCreated || id != want {
			t.Fatalf("linking device %d: HTTP %d, id %d", want, code, id)
		}
		linked = append(linked, acc)
	}
	if _, _, code := linkDevice(t, n, primary); code != http.StatusForbidden {
		t.Fatalf("linking a 6th device answered %d, want 403", code)
	}
	// Only the primary approves.
	if code, _ := api(t, http.MethodPost, n.URL()+"/v1/devices/link-code", linked[0].Token, nil); code != http.StatusForbidden {
		t.Fatalf("a secondary device got a link code (%d)", code)
	}

	// Device 3 is online, then unlinked by the primary.
	victim := linked[1]
	ws := dial(t, n.URL(), victim.Token, 0)
	ws.attached()
	if code, raw := api(t, http.MethodDelete, n.URL()+"/v1/devices/3", primary.Token, nil); code != http.StatusNoContent {
		t.Fatalf("unlink: %d %s", code, raw)
	}
	if code := ws.closeCode(5 * time.Second); code != gateway.CloseReplaced {
		t.Fatalf("the unlinked device's socket closed with %d, want %d", code, gateway.CloseReplaced)
	}
	// It can neither sign in, nor connect with its old token, nor use the API.
	if c, _ := postJSON(t, http.DefaultClient, n.URL()+"/v1/token", gateway.TokenRequest{UserID: victim.UserID, DeviceID: 3, DeviceSecret: victim.Secret}, nil); c != http.StatusUnauthorized {
		t.Fatalf("token for an unlinked device: %d", c)
	}
	// Every endpoint refuses its old token at once, the WebSocket upgrade
	// included: the device record, not the token's expiry, decides.
	if _, resp, err := websocket.DefaultDialer.Dial(wsURL(n.URL(), victim.Token, 0), nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("an unlinked device's old token opened a socket: %v (HTTP %d, want 401)", err, status)
	}
	for _, path := range []string{"/v1/devices", "/v1/keys", "/v1/users/by-handle/" + handle, "/v1/users/" + primary.UserID, "/v1/calls/turn"} {
		if code, _ := api(t, http.MethodGet, n.URL()+path, victim.Token, nil); code != http.StatusUnauthorized {
			t.Fatalf("an unlinked device's old token used GET %s (%d)", path, code)
		}
	}
	// It receives nothing: a message to the user now needs 4 ciphertexts.
	pw := dial(t, n.URL(), peer.Token, 0)
	pw.attached()
	pw.write(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
		ClientMsgId: "m1", ToUserId: primary.UserID, PerDevice: perDevice(1, 2, 3, 4, 5),
	}}})
	e := pw.expectError(1)
	if e.Code != courierpb.ErrorCode_MISMATCHED_DEVICES || fmt.Sprint(e.Mismatch.GetExtra()) != "[3]" || len(e.Mismatch.GetMissing()) != 0 {
		t.Fatalf("send naming the unlinked device: %+v", e)
	}
	code, raw := api(t, http.MethodGet, n.URL()+"/v1/devices", primary.Token, nil)
	if code != http.StatusOK || bytes.Contains(raw, []byte(`"device_id":3`)) {
		t.Fatalf("device list after unlink: %d %s", code, raw)
	}
}

func perDevice(ids ...uint32) []*courierpb.DeviceCiphertext {
	out := make([]*courierpb.DeviceCiphertext, len(ids))
	for i, id := range ids {
		ct := make([]byte, 16)
		_, _ = rand.Read(ct)
		out[i] = &courierpb.DeviceCiphertext{DeviceId: id, Ciphertext: ct}
	}
	return out
}

func TestStaleDeviceSetsAreRefusedWithTheDifference(t *testing.T) {
	n := startNode(t, nil)
	alice := register(t, n.URL(), fmt.Sprintf("alice-%d", time.Now().UnixNano()))
	bob := register(t, n.URL(), fmt.Sprintf("bob-%d", time.Now().UnixNano()))
	linkDevice(t, n, alice) // alice has devices 1, 2
	linkDevice(t, n, bob)   // bob has devices 1, 2
	ws := dial(t, n.URL(), alice.Token, 0)
	ws.attached()
	send := func(reqID uint64, id string, recipient, sender []*courierpb.DeviceCiphertext) {
		ws.write(&courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
			ClientMsgId: id, ToUserId: bob.UserID, PerDevice: recipient, SenderDevices: sender,
		}}})
	}
	cases := []struct {
		name              string
		recipient, sender []*courierpb.DeviceCiphertext
		user              string
		missing, extra    string
	}{
		{"recipient device missing", perDevice(1), perDevice(2), bob.UserID, "[2]", "[]"},
		{"recipient device unknown", perDevice(1, 2, 7), perDevice(2), bob.UserID, "[]", "[7]"},
		{"own other device missing", perDevice(1, 2), nil, alice.UserID, "[2]", "[]"},
		{"own sending device named", perDevice(1, 2), perDevice(1, 2), alice.UserID, "[]", "[1]"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			send(uint64(10+i), fmt.Sprintf("stale-%d", i), tc.recipient, tc.sender)
			e := ws.expectError(uint64(10 + i))
			m := e.GetMismatch()
			if e.Code != courierpb.ErrorCode_MISMATCHED_DEVICES || m.GetUserId() != tc.user ||
				fmt.Sprint(nonNil(m.GetMissing())) != tc.missing || fmt.Sprint(nonNil(m.GetExtra())) != tc.extra {
				t.Fatalf("got %+v, want MISMATCHED_DEVICES for %s missing %s extra %s", e, tc.user, tc.missing, tc.extra)
			}
		})
	}
	// A send refused for the recipient's devices stored nothing anywhere;
	// one refused for the sender's own devices reached the recipient (its
	// retry is a duplicate there) but left no transcript.
	for _, dev := range []uint32{1, 2} {
		es, err := n.Store().Range(t.Context(), bob.UserID, dev, 0, 10)
		if err != nil || len(es) != 2 || es[0].ClientMsgId != "stale-2" || es[1].ClientMsgId != "stale-3" {
			t.Fatalf("bob's device %d inbox after refused sends: %v (%v), want only the two with a good recipient set", dev, es, err)
		}
		if err := n.Store().DeleteRange(t.Context(), bob.UserID, dev, 0, es[1].InboxSeq); err != nil {
			t.Fatal(err)
		}
	}
	if es, _ := n.Store().Range(t.Context(), alice.UserID, 2, 0, 10); len(es) != 0 {
		t.Fatalf("refused sends left transcripts: %v", es)
	}
	// The right sets go through: bob's devices get their ciphertexts, and
	// alice's device 2 its transcript.
	rcp, snd := perDevice(1, 2), perDevice(2)
	send(20, "good", rcp, snd)
	if ack := ws.mustRead(); ack.GetSendAck() == nil || ack.ReqId != 20 {
		t.Fatalf("good send answered %v", ack)
	}
	for _, dev := range []uint32{1, 2} {
		es, err := n.Store().Range(t.Context(), bob.UserID, dev, 0, 10)
		if err != nil || len(es) != 1 || !bytes.Equal(es[0].Ciphertext, rcp[dev-1].Ciphertext) {
			t.Fatalf("bob's device %d: %v (%v)", dev, es, err)
		}
	}
	es, err := n.Store().Range(t.Context(), alice.UserID, 2, 0, 10)
	if err != nil || len(es) != 1 || es[0].Kind != courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT ||
		es[0].ToUserId != bob.UserID || !bytes.Equal(es[0].Ciphertext, snd[0].Ciphertext) {
		t.Fatalf("alice's device 2 transcript: %v (%v)", es, err)
	}
	if es, _ := n.Store().Range(t.Context(), alice.UserID, 1, 0, 10); len(es) != 0 {
		t.Fatalf("the sending device got its own transcript: %v", es)
	}
}

func nonNil(s []uint32) []uint32 {
	if s == nil {
		return []uint32{}
	}
	return s
}

func TestIdentityKeyChangeIsAnnouncedToContacts(t *testing.T) {
	n := startNode(t, nil)
	alice := register(t, n.URL(), fmt.Sprintf("alice-%d", time.Now().UnixNano()))
	bob := register(t, n.URL(), fmt.Sprintf("bob-%d", time.Now().UnixNano()))
	aw := dial(t, n.URL(), alice.Token, 0)
	aw.attached()
	aw.write(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: []string{bob.UserID}}}})
	if f := aw.mustRead(); f.GetContactList() == nil {
		t.Fatalf("contacts update answered %v", f)
	}
	// Notices go only to contacts that have alice among theirs too, so
	// that nobody can write into a stranger's inbox by adding them.
	bw := dial(t, n.URL(), bob.Token, 0)
	bw.attached()
	bw.write(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{AddUserIds: []string{alice.UserID}}}})
	if f := bw.mustRead(); f.GetContactList() == nil {
		t.Fatalf("contacts update answered %v", f)
	}
	putKeys(t, n, alice.Token, keyUpload(t, 1, 1))
	putKeys(t, n, alice.Token, keyUpload(t, 100, 1)) // a reinstall: new identity
	e := bw.mustEntry()
	if e.Kind != courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED || e.FromUserId != alice.UserID || e.FromDeviceId != 1 {
		t.Fatalf("bob got %v from %s/%d, want IDENTITY_CHANGED from alice/1", e.Kind, e.FromUserId, e.FromDeviceId)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustUnmarshal(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %q: %v", raw, err)
	}
}
