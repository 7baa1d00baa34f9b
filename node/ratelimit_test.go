package node_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
	"github.com/gorilla/websocket"
)

// Tests of the per-user and per-address limits on costly actions (issue
// #20 item 6): every action is limited, by what a request asks for, with
// an answer that says when to retry, and operators can see who hit what.

// limitedOnly starts a node whose limit of act per user is n per hour, the
// others left at their defaults.
func limitedOnly(t *testing.T, act gateway.Action, n int, perIP bool) *node.Node {
	return startNode(t, func(c *node.Config) {
		c.Limits = gateway.Limits{}.WithDefaults()
		if perIP {
			c.Limits.LimitLoopback = true
			c.Limits.Actions[act].PerIP = gateway.Rate{N: n, Per: time.Hour}
		} else {
			c.Limits.Actions[act].PerUser = gateway.Rate{N: n, Per: time.Hour}
		}
		// LimitLoopback would also apply these to the test's own
		// registrations and connections.
		c.Limits.RegisterPerIP, c.Limits.TokenPerIP = gateway.Off, gateway.Off
		c.MaxConnsPerIP = -1
	})
}

// answerTo reads frames until the answer to reqID.
func (w *wsConn) answerTo(reqID uint64) *courierpb.ServerFrame {
	w.t.Helper()
	for {
		if f := w.mustRead(); f.ReqId == reqID {
			return f
		}
	}
}

// wantRateLimited checks f is a retryable RATE_LIMITED saying when to retry.
func wantRateLimited(t *testing.T, what string, f *courierpb.ServerFrame, within time.Duration) {
	t.Helper()
	e := f.GetError()
	if e.GetCode() != courierpb.ErrorCode_RATE_LIMITED {
		t.Fatalf("%s over the limit: %v, want RATE_LIMITED", what, f)
	}
	if !e.Retryable || e.RetryAfterMs == 0 || time.Duration(e.RetryAfterMs)*time.Millisecond > within {
		t.Fatalf("%s: retryable %v, retry_after_ms %d; want retryable with a wait in (0, %v]", what, e.Retryable, e.RetryAfterMs, within)
	}
	if !strings.Contains(e.Message, "retry in") {
		t.Errorf("%s: message %q does not say when to retry", what, e.Message)
	}
}

// TestEveryCostlyActionIsLimitedPerUserByWhatItAsksFor: for each action,
// a user gets its budget, counted by the users, members or messages a
// request names, then RATE_LIMITED with a retry_after; another user is not
// affected, and the node counts the refusal under the limit's name.
func TestEveryCostlyActionIsLimitedPerUserByWhatItAsksFor(t *testing.T) {
	stamp := time.Now().UnixNano()
	type env struct {
		n     *node.Node
		peers []account // users the frames may name
		uniq  func() string
	}
	cases := []struct {
		act gateway.Action
		n   int
		// setup runs once per user before the budget is spent (e.g. a group
		// to send into); it may spend nothing of act.
		setup func(t *testing.T, e env, w *wsConn) string
		// frame is one request costing cost; group is what setup returned.
		frame func(e env, reqID uint64, group string) *courierpb.ClientFrame
		cost  int
	}{
		{act: gateway.ActionSend, n: 3, cost: 1, frame: func(e env, reqID uint64, _ string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_Send{Send: &courierpb.Send{
				ClientMsgId: e.uniq(), ToUserId: e.peers[0].UserID, Ciphertext: []byte("x")}}}
		}},
		{act: gateway.ActionSend, n: 3, cost: 1,
			setup: func(t *testing.T, e env, w *wsConn) string { return createGroup(t, w, e.uniq(), e.peers[0].UserID) },
			frame: func(e env, reqID uint64, group string) *courierpb.ClientFrame {
				return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_GroupSend{GroupSend: &courierpb.GroupSend{
					ClientMsgId: e.uniq(), GroupId: group, Ciphertext: []byte("x")}}}
			}},
		{act: gateway.ActionGroupCreate, n: 2, cost: 1, frame: func(e env, reqID uint64, _ string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{CreateId: e.uniq()}}}
		}},
		{act: gateway.ActionGroupAdd, n: 5, cost: 2, frame: func(e env, reqID uint64, _ string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{
				CreateId: e.uniq(), MemberUserIds: []string{e.peers[0].UserID, e.peers[1].UserID}}}}
		}},
		{act: gateway.ActionGroupAdd, n: 5, cost: 2,
			setup: func(t *testing.T, e env, w *wsConn) string { return createGroup(t, w, e.uniq()) },
			frame: func(e env, reqID uint64, group string) *courierpb.ClientFrame {
				return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_GroupUpdate{GroupUpdate: &courierpb.GroupUpdate{
					GroupId: group, Change: &courierpb.GroupUpdate_AddMembers{AddMembers: &courierpb.GroupUserIds{
						UserIds: []string{e.peers[0].UserID, e.peers[1].UserID}}}}}}
			}},
		{act: gateway.ActionContactAdd, n: 5, cost: 2, frame: func(e env, reqID uint64, _ string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{
				AddUserIds: []string{e.peers[0].UserID, e.peers[1].UserID}}}}
		}},
		{act: gateway.ActionCallOffer, n: 2, cost: 1, frame: func(e env, reqID uint64, _ string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_CallSignal{CallSignal: &courierpb.CallSignal{
				CallId: e.uniq(), PeerUserId: e.peers[0].UserID, Type: courierpb.CallSignalType_CALL_SIGNAL_OFFER, Media: courierpb.CallMedia_CALL_MEDIA_AUDIO}}}
		}},
		{act: gateway.ActionPresenceWatch, n: 5, cost: 2, frame: func(e env, reqID uint64, _ string) *courierpb.ClientFrame {
			return &courierpb.ClientFrame{ReqId: reqID, Body: &courierpb.ClientFrame_PresenceSubscribe{PresenceSubscribe: &courierpb.PresenceSubscribe{
				UserIds: []string{e.peers[0].UserID, e.peers[1].UserID}}}}
		}},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%s-%d", tc.act, i), func(t *testing.T) {
			n := limitedOnly(t, tc.act, tc.n, false)
			seq := 0
			e := env{n: n, uniq: func() string { seq++; return fmt.Sprintf("u-%d-%d", stamp, seq) }}
			for j := range 2 {
				e.peers = append(e.peers, register(t, n.URL(), fmt.Sprintf("peer%d-%d-%d", j, i, stamp)))
			}
			spend := func(who string, acc account) {
				w := dial(t, n.URL(), acc.Token, 0)
				w.attached()
				var group string
				if tc.setup != nil {
					group = tc.setup(t, e, w)
				}
				reqID := uint64(100)
				for range tc.n / tc.cost {
					reqID++
					w.write(tc.frame(e, reqID, group))
					if f := w.answerTo(reqID); f.GetError() != nil {
						t.Fatalf("%s within its budget of %d: %v", who, tc.n, f)
					}
				}
				reqID++
				w.write(tc.frame(e, reqID, group))
				wantRateLimited(t, who+" "+tc.act.String(), w.answerTo(reqID), time.Hour)
			}
			spend("alice", register(t, n.URL(), fmt.Sprintf("alice-%d-%d", i, stamp)))
			// Bob's budget is his own: alice spending hers took none of it.
			spend("bob", register(t, n.URL(), fmt.Sprintf("bob-%d-%d", i, stamp)))
			if got := n.Gateway().RateLimited()[tc.act.String()+"/user"]; got != 2 {
				t.Errorf("rate_limited[%s/user] = %d, want 2 (one refusal each)", tc.act, got)
			}
		})
	}
}

// createGroup creates a group with members and returns its id.
func createGroup(t *testing.T, w *wsConn, createID string, members ...string) string {
	t.Helper()
	w.write(&courierpb.ClientFrame{ReqId: 1, Body: &courierpb.ClientFrame_GroupCreate{GroupCreate: &courierpb.GroupCreate{
		CreateId: createID, MemberUserIds: members}}})
	f := w.answerTo(1)
	if f.GetGroupInfo() == nil {
		t.Fatalf("create group: %v", f)
	}
	return f.GetGroupInfo().GroupId
}

// TestKeyUploadsAreLimitedPerUserWithRetryAfter: PUT /v1/keys over the
// limit is a 429 with Retry-After and the API's RATE_LIMITED body.
func TestKeyUploadsAreLimitedPerUserWithRetryAfter(t *testing.T) {
	const budget = 2
	n := limitedOnly(t, gateway.ActionKeyUpload, budget, false)
	a := register(t, n.URL(), fmt.Sprintf("uploader-%d", time.Now().UnixNano()))
	u := keyUpload(t, 1, 1)
	for range budget {
		putKeys(t, n, a.Token, u)
	}
	req, _ := http.NewRequest(http.MethodPut, n.URL()+"/v1/keys", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+a.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("upload %d: %s, want 429", budget+1, resp.Status)
	}
	decodeLimited(t, resp)
	if got := n.Gateway().RateLimited()["key-upload/user"]; got != 1 {
		t.Errorf("rate_limited[key-upload/user] = %d, want 1", got)
	}
}

// TestOneAddressHoldingManyAccountsSharesOneBudget: accounts made to
// spread a flood over many users still meet the per-address limit, and
// the answer says which limit it was.
func TestOneAddressHoldingManyAccountsSharesOneBudget(t *testing.T) {
	const budget = 4
	n := limitedOnly(t, gateway.ActionSend, budget, true)
	stamp := time.Now().UnixNano()
	target := register(t, n.URL(), fmt.Sprintf("target-%d", stamp))
	reqID := uint64(0)
	for i := range budget + 1 {
		acc := register(t, n.URL(), fmt.Sprintf("sock-%d-%d", i, stamp))
		w := dial(t, n.URL(), acc.Token, 0)
		w.attached()
		reqID++
		w.send(reqID, target.UserID, fmt.Sprintf("m-%d", i), []byte("x"))
		f := w.answerTo(reqID)
		if i < budget {
			if f.GetSendAck() == nil {
				t.Fatalf("send %d of %d from one address: %v", i+1, budget, f)
			}
			continue
		}
		wantRateLimited(t, "send from a fresh account on a spent address", f, time.Hour)
		if !strings.Contains(f.GetError().Message, "address") {
			t.Errorf("refusal %q does not say the address is limited", f.GetError().Message)
		}
	}
	if got := n.Gateway().RateLimited()["send/ip"]; got != 1 {
		t.Errorf("rate_limited[send/ip] = %d, want 1", got)
	}
}

// TestARequestLargerThanAnyBudgetIsRefusedForGood: a request asking for
// more than a limit's whole burst can never pass, so it is not retryable
// and names the most it may ask for.
func TestARequestLargerThanAnyBudgetIsRefusedForGood(t *testing.T) {
	n := limitedOnly(t, gateway.ActionContactAdd, 2, false)
	stamp := time.Now().UnixNano()
	a := register(t, n.URL(), fmt.Sprintf("syncer-%d", stamp))
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	w.write(&courierpb.ClientFrame{ReqId: 7, Body: &courierpb.ClientFrame_ContactsUpdate{ContactsUpdate: &courierpb.ContactsUpdate{
		AddHandles: []string{"a", "b", "c"}}}})
	e := w.answerTo(7).GetError()
	if e.GetCode() != courierpb.ErrorCode_RATE_LIMITED || e.Retryable || e.RetryAfterMs != 0 || !strings.Contains(e.Message, "at most 2") {
		t.Fatalf("3 contacts against a burst of 2: %+v; want RATE_LIMITED, not retryable, naming the most (2)", e)
	}
}

// TestReconnectingInALoopIsLimited: every socket opened costs a store read
// and a grain attach, so opening them is limited per user like any costly
// action: past the budget the upgrade is a 429 with Retry-After.
func TestReconnectingInALoopIsLimited(t *testing.T) {
	const budget = 3
	n := limitedOnly(t, gateway.ActionConnect, budget, false)
	a := register(t, n.URL(), fmt.Sprintf("looper-%d", time.Now().UnixNano()))
	for range budget {
		w := dial(t, n.URL(), a.Token, 0)
		w.attached()
		_ = w.c.Close()
	}
	_, resp, err := websocket.DefaultDialer.Dial(wsURL(n.URL(), a.Token, 0), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("connect %d over a budget of %d: err %v, response %v; want 429", budget+1, budget, err, resp)
	}
	decodeLimited(t, resp)
	if got := n.Gateway().RateLimited()["connect/user"]; got != 1 {
		t.Errorf("rate_limited[connect/user] = %d, want 1", got)
	}
}

// TestAFrameFloodIsReadNoFasterThanTwiceTheFrameRate: a client writing
// frames as fast as it can gets at most its frame rate served and one
// RATE_LIMITED per refused token interval; the rest wait in its socket
// instead of each costing the server an answer.
func TestAFrameFloodIsReadNoFasterThanTwiceTheFrameRate(t *testing.T) {
	const rate, window = 50, time.Second
	n := startNode(t, func(c *node.Config) { c.RatePerSec, c.RateBurst = rate, rate })
	a := register(t, n.URL(), fmt.Sprintf("flooder-%d", time.Now().UnixNano()))
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	go func() {
		for i := range 5000 {
			b := mustMarshal(&courierpb.ClientFrame{ReqId: uint64(i + 1), Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
			if w.c.WriteMessage(websocket.BinaryMessage, b) != nil {
				return
			}
		}
	}()
	answered := 0
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		_ = w.c.SetReadDeadline(deadline)
		if _, _, err := w.c.ReadMessage(); err != nil {
			break
		}
		answered++
	}
	// The burst, then at most one pong and one refusal per 1/rate.
	if most := rate + 2*rate*int(window/time.Second) + 10; answered > most || answered < rate {
		t.Fatalf("%d frames answered in %v at %d/s (burst %d); want between %d and %d", answered, window, rate, rate, rate, most)
	}
}

// TestRefusalsAreHeldSoALoopingClientSlowsDown: with a refusal delay, a
// 429 comes only after it (never longer than its Retry-After), so a client
// looping on refused requests makes a few a second, not thousands.
func TestRefusalsAreHeldSoALoopingClientSlowsDown(t *testing.T) {
	const delay = 300 * time.Millisecond
	n := startNode(t, func(c *node.Config) {
		c.Limits = gateway.Limits{}.WithDefaults()
		c.Limits.RefusalDelay = delay
		c.Limits.Actions[gateway.ActionKeyUpload].PerUser = gateway.Rate{N: 1, Per: time.Hour}
	})
	a := register(t, n.URL(), fmt.Sprintf("looper-%d", time.Now().UnixNano()))
	putKeys(t, n, a.Token, keyUpload(t, 1, 1))
	for range 3 {
		start := time.Now()
		code, _ := api(t, http.MethodPut, n.URL()+"/v1/keys", a.Token, keyUpload(t, 1, 1))
		if took := time.Since(start); code != http.StatusTooManyRequests || took < delay {
			t.Fatalf("refused upload: %d after %v, want 429 after at least %v", code, took, delay)
		}
	}
}

// TestLargeFramesFromOneAddressAreBoundByBytes: frames are read and
// decoded before any send limit can refuse them, so an address's sockets
// together read no more bytes than --frame-bytes-limit-ip allows.
func TestLargeFramesFromOneAddressAreBoundByBytes(t *testing.T) {
	const frame = 100 << 10
	n := startNode(t, func(c *node.Config) {
		c.Limits = gateway.Limits{}.WithDefaults()
		c.Limits.LimitLoopback = true
		c.Limits.RegisterPerIP, c.Limits.TokenPerIP = gateway.Off, gateway.Off
		c.Limits.BytesPerIP = gateway.Rate{N: 2*frame + 1024, Per: 500 * time.Millisecond}
		c.MaxConnsPerIP = -1
	})
	stamp := time.Now().UnixNano()
	a, b := register(t, n.URL(), fmt.Sprintf("big-a-%d", stamp)), register(t, n.URL(), fmt.Sprintf("big-b-%d", stamp))
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	start := time.Now()
	for i := range 4 {
		w.send(uint64(i+1), b.UserID, fmt.Sprintf("big-%d", i), make([]byte, frame))
	}
	acks, limited := 0, 0
	for acks+limited < 4 {
		f := w.mustRead()
		switch {
		case f.GetSendAck() != nil:
			acks++
		case f.GetError().GetCode() == courierpb.ErrorCode_RATE_LIMITED && strings.Contains(f.GetError().Message, "bytes from this address"):
			limited++
		}
	}
	// Two fit the burst; the third waits for ~100 KiB of refill (~250 ms).
	if took := time.Since(start); limited == 0 || took < 150*time.Millisecond {
		t.Fatalf("4 frames of 100 KiB against 200 KiB per 500ms: %d acked, %d limited in %v; want a refusal and a wait", acks, limited, took)
	}
	if got := n.Gateway().RateLimited()["frame-bytes/ip"]; got == 0 {
		t.Error("rate_limited[frame-bytes/ip] is 0")
	}
}
