package node_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// Tests of what one hostile client can make the HTTP listener and API
// spend (issue #20): descriptors, registrations, tokens, prekeys.

// from returns an HTTP client whose connections come from local address
// ip (any 127.0.0.x reaches a loopback listener), so a test can be several
// clients. Each test gets its own transport: connections are not shared.
func from(t testing.TB, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// rawFrom opens a plain TCP connection to n from local address ip.
func rawFrom(t testing.TB, n *node.Node, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatalf("dial from %s: %v", ip, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// healthz sends one keep-alive request on c and reads its answer; an
// error means the server closed (or reset) the connection.
func healthz(c net.Conn, br *bufio.Reader) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: courier\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// closedWithin waits for the server to close c and says how long it took.
func closedWithin(t *testing.T, c net.Conn, br *bufio.Reader, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := br.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v of silence", limit)
	}
	if err == nil {
		t.Fatal("the server sent bytes nobody asked for")
	}
	return time.Since(start)
}

func TestSilentKeepAliveIsClosedButAWebSocketOutlivesTheHTTPIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	n := startNode(t, func(c *node.Config) {
		c.HTTPIdleTimeout = idle
		c.HTTPHeaderTimeout = idle
		c.IdleTimeout = time.Minute // the socket's own idle rule, far away
	})
	acc := register(t, n.URL(), fmt.Sprintf("idle-%d", time.Now().UnixNano()))
	ws := dial(t, n.URL(), acc.Token, 0)
	ws.attached()
	opened := time.Now()

	// A keep-alive connection that goes silent after a request.
	keep := rawFrom(t, n, "127.0.0.1")
	keepR := bufio.NewReader(keep)
	if err := healthz(keep, keepR); err != nil {
		t.Fatal(err)
	}
	// One that never finishes its headers (slowloris).
	slow := rawFrom(t, n, "127.0.0.1")
	if _, err := io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: courier\r\n"); err != nil {
		t.Fatal(err)
	}
	// One that never says anything.
	mute := rawFrom(t, n, "127.0.0.1")

	for name, c := range map[string]net.Conn{"keep-alive": keep, "slow headers": slow, "mute": mute} {
		br := keepR
		if c != keep {
			br = bufio.NewReader(c)
		}
		if took := closedWithin(t, c, br, 10*idle); took > 5*idle {
			t.Errorf("%s connection closed after %v, want about %v", name, took, idle)
		}
	}

	// The WebSocket has been silent longer than the HTTP idle timeout
	// (and long enough to park its reader); it still answers.
	time.Sleep(time.Until(opened.Add(4 * idle)))
	ws.write(&courierpb.ClientFrame{ReqId: 7, Body: &courierpb.ClientFrame_Ping{Ping: &courierpb.Ping{}}})
	for {
		f := ws.mustRead()
		if f.ReqId == 7 {
			if f.GetPong() == nil {
				t.Fatalf("ping answered %v, want pong", f)
			}
			break
		}
	}
	if silent := time.Since(opened); silent < 3*idle {
		t.Fatalf("test bug: the socket was silent only %v", silent)
	}
}

func TestConnectionsPerAddressAreCappedWithoutStarvingOthers(t *testing.T) {
	const max = 4
	n := startNode(t, func(c *node.Config) { c.MaxConnsPerIP, c.Limits.LimitLoopback = max, true })
	// The hostile address holds its cap: two WebSockets (two devices: a
	// device has one) and two idle keep-alive connections.
	d := websocket.Dialer{NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}
	for i := range 2 {
		acc := register(t, n.URL(), fmt.Sprintf("cap-%d-%d", time.Now().UnixNano(), i))
		c, _, err := d.Dial(wsURL(n.URL(), acc.Token, 0), nil)
		if err != nil {
			t.Fatalf("websocket within the cap: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	held := make([]net.Conn, 2)
	for i := range held {
		held[i] = rawFrom(t, n, "127.0.0.2")
		if err := healthz(held[i], bufio.NewReader(held[i])); err != nil {
			t.Fatalf("connection %d within the cap: %v", i, err)
		}
	}
	// Over the cap: closed unread (reset, maybe before the dial returns),
	// again and again.
	served := func(ip string) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", n.Addr())
		if err != nil {
			return err
		}
		defer c.Close()
		return healthz(c, bufio.NewReader(c))
	}
	for i := range 3 {
		if err := served("127.0.0.2"); err == nil {
			t.Fatalf("connection %d over the cap was served", max+1+i)
		}
	}
	// Another address is served meanwhile.
	other := from(t, "127.0.0.3")
	for range max + 2 {
		resp, err := other.Get(n.URL() + "/healthz")
		if err != nil {
			t.Fatalf("another address was refused: %v", err)
		}
		_ = resp.Body.Close()
	}
	// A connection that closes gives its slot back.
	_ = held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := served("127.0.0.2")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed connection's slot never came back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// decodeLimited checks a 429 answer: RATE_LIMITED in the API's JSON error
// shape and a Retry-After of whole seconds.
func decodeLimited(t *testing.T, resp *http.Response) {
	t.Helper()
	var ge gatewayError
	if err := json.NewDecoder(resp.Body).Decode(&ge); err != nil || ge.Code != "RATE_LIMITED" {
		t.Errorf("429 body: %+v (%v), want code RATE_LIMITED", ge, err)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("429 Retry-After = %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
	}
}

func post(t *testing.T, hc *http.Client, url string, body any) *http.Response {
	t.Helper()
	resp, err := hc.Post(url, "application/json", strings.NewReader(string(mustJSON(t, body))))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestRegistrationBurstFromOneAddressIsRefusedAndOthersAreNot(t *testing.T) {
	def := gateway.Limits{}.WithDefaults()
	n := startNode(t, func(c *node.Config) {
		c.Limits.RegisterPerIP = def.RegisterPerIP
		c.Limits.TokenPerIP = def.TokenPerIP
		c.Limits.LimitLoopback = true // the test's addresses are 127.0.0.x
	})
	stamp := time.Now().UnixNano()
	hostile := from(t, "127.0.0.2")
	const burst = 200
	var created, refused atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range burst {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp := post(t, hostile, n.URL()+"/v1/register", gateway.RegisterRequest{Handle: fmt.Sprintf("bot%d-%d", stamp, i)})
			switch resp.StatusCode {
			case http.StatusCreated:
				created.Add(1)
			case http.StatusTooManyRequests:
				refused.Add(1)
				decodeLimited(t, resp)
			default:
				t.Errorf("registration %d: %s", i, resp.Status)
			}
		}()
	}
	wg.Wait()
	if c := created.Load(); c > int64(def.RegisterPerIP.N)+1 || refused.Load() < burst-int64(def.RegisterPerIP.N)-1 {
		t.Fatalf("a burst of %d registrations from one address: %d created, %d refused; want at most %d created", burst, c, refused.Load(), def.RegisterPerIP.N)
	}
	// Another address registers and gets its token at once.
	registerWith(t, from(t, "127.0.0.3"), n.URL(), fmt.Sprintf("human-%d", stamp))

	// One handle cannot be tried again and again, however spelt.
	other := from(t, "127.0.0.4")
	codes := []int{}
	for i := range def.RegisterPerHandle.N + 2 {
		h := fmt.Sprintf("Taken-%d", stamp)
		if i%2 == 1 {
			h = strings.ToLower(h)
		}
		resp := post(t, other, n.URL()+"/v1/register", gateway.RegisterRequest{Handle: h})
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			decodeLimited(t, resp)
		}
	}
	if codes[0] != http.StatusCreated || codes[1] != http.StatusConflict || codes[len(codes)-1] != http.StatusTooManyRequests {
		t.Fatalf("registering one handle %d times answered %v: want 201, then 409s, then 429", len(codes), codes)
	}
}

func TestTokenGuessingIsLimitedPerAddressAndPerAccount(t *testing.T) {
	// The defaults' sizes, refilled over a day instead of a minute: at the
	// defaults' rates a bucket refills a token every 0.1–0.5 s, which a
	// loaded machine's slower loop would see as an off-by-one.
	def := gateway.Limits{
		TokenPerIP:      gateway.Rate{N: gateway.Limits{}.WithDefaults().TokenPerIP.N, Per: 24 * time.Hour},
		TokenPerAccount: gateway.Rate{N: gateway.Limits{}.WithDefaults().TokenPerAccount.N, Per: 24 * time.Hour},
	}
	n := startNode(t, func(c *node.Config) {
		c.Limits.TokenPerIP = def.TokenPerIP
		c.Limits.TokenPerAccount = def.TokenPerAccount
		c.Limits.LimitLoopback = true // the test's addresses are 127.0.0.x
	})
	stamp := time.Now().UnixNano()
	victim := register(t, n.URL(), fmt.Sprintf("victim-%d", stamp))
	bystander := register(t, n.URL(), fmt.Sprintf("bystander-%d", stamp))

	// Wrong secrets for the victim from many addresses: the account's
	// bucket runs out, whatever the address.
	limitedAt := -1
	for i := range def.TokenPerAccount.N + 5 {
		hc := from(t, fmt.Sprintf("127.0.1.%d", 1+i))
		resp := post(t, hc, n.URL()+"/v1/token", gateway.TokenRequest{Handle: fmt.Sprintf("VICTIM-%d", stamp), DeviceSecret: "guess"})
		if resp.StatusCode == http.StatusTooManyRequests {
			decodeLimited(t, resp)
			limitedAt = i
			break
		}
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("guess %d: %s", i, resp.Status)
		}
	}
	// register took the victim's first token.
	if limitedAt != def.TokenPerAccount.N-1 {
		t.Fatalf("token guesses for one account were refused from guess %d, want %d", limitedAt, def.TokenPerAccount.N-1)
	}
	// Another account is served; the right secret is refused too while
	// the bucket is empty (the limit cannot tell the owner from a guesser;
	// a device renews its token minutes before it expires).
	if code, _ := postJSON(t, from(t, "127.0.2.1"), n.URL()+"/v1/token", gateway.TokenRequest{UserID: bystander.UserID, DeviceSecret: bystander.Secret}, nil); code != http.StatusOK {
		t.Fatalf("another account's token: %d", code)
	}
	if code, _ := postJSON(t, from(t, "127.0.2.2"), n.URL()+"/v1/token", gateway.TokenRequest{UserID: victim.UserID, DeviceSecret: victim.Secret}, nil); code != http.StatusTooManyRequests {
		t.Fatalf("the victim's own token while its bucket is empty: %d, want 429", code)
	}

	// One address asking for many accounts' tokens runs out too.
	hostile := from(t, "127.0.3.1")
	answered := 0
	for i := range 2 * def.TokenPerIP.N {
		resp := post(t, hostile, n.URL()+"/v1/token", gateway.TokenRequest{UserID: fmt.Sprintf("nobody-%d", i), DeviceSecret: "x"})
		if resp.StatusCode == http.StatusTooManyRequests {
			decodeLimited(t, resp)
			break
		}
		answered++
	}
	if answered != def.TokenPerIP.N {
		t.Fatalf("one address got %d token answers before a 429, want about %d", answered, def.TokenPerIP.N)
	}
}

func TestAStrangerCannotDrainAPrekeyPoolAndTheOwnerIsStillServed(t *testing.T) {
	def := gateway.Limits{}.WithDefaults()
	n := startNode(t, func(c *node.Config) { c.Limits = def })
	stamp := time.Now().UnixNano()
	owner := register(t, n.URL(), fmt.Sprintf("owner-%d", stamp))
	stranger := register(t, n.URL(), fmt.Sprintf("stranger-%d", stamp))
	const pool = 100
	putKeys(t, n, owner.Token, keyUpload(t, 1, pool))

	ok, refused := 0, 0
	url := n.URL() + "/v1/keys/" + owner.UserID
	start := time.Now()
	for range 120 {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+stranger.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			refused++
			decodeLimited(t, resp)
		default:
			t.Fatalf("fetch: %s", resp.Status)
		}
		_ = resp.Body.Close()
	}
	took := time.Since(start)
	t.Logf("120 fetches in %v: %d served, %d refused", took, ok, refused)
	// The bucket refills while the loop runs (a token every 6 s by
	// default), which a loaded machine's slow loop can see.
	refilled := int(took * time.Duration(def.BundlesPerPair.N) / def.BundlesPerPair.Per)
	if ok > def.BundlesPerPair.N+refilled+1 {
		t.Fatalf("a stranger got %d bundles of one user in a burst of %v, want at most %d", ok, took, def.BundlesPerPair.N+refilled)
	}
	code, raw := api(t, http.MethodGet, n.URL()+"/v1/keys", owner.Token, nil)
	if code != http.StatusOK || !strings.Contains(string(raw), fmt.Sprintf(`"one_time_prekeys":%d`, pool-ok)) {
		t.Fatalf("the pool after the drain: %d %s, want %d left", code, raw, pool-ok)
	}

	// The owner's new device still gets the first device's bundle, with a
	// one-time prekey, and so does someone else.
	second, _, _ := linkDevice(t, n, owner)
	if b := fetchBundles(t, n, second.Token, owner.UserID); len(b.Devices) != 1 || len(b.Devices[0].OneTimePrekey) == 0 {
		t.Fatalf("the owner's second device got %v, want device 1's bundle with a one-time prekey", b)
	}
	friend := register(t, n.URL(), fmt.Sprintf("friend-%d", stamp))
	if b := fetchBundles(t, n, friend.Token, owner.UserID); len(b.Devices) != 1 || len(b.Devices[0].OneTimePrekey) == 0 {
		t.Fatalf("another user got %v, want a bundle with a one-time prekey", b)
	}
}

func TestManyRequestersGetLastResortBundlesOnceATargetsBudgetIsSpent(t *testing.T) {
	const budget = 3
	n := startNode(t, func(c *node.Config) { c.Limits.BundlesPerTarget = gateway.Rate{N: budget, Per: time.Hour} })
	stamp := time.Now().UnixNano()
	owner := register(t, n.URL(), fmt.Sprintf("owner-%d", stamp))
	putKeys(t, n, owner.Token, keyUpload(t, 1, 50))
	withPrekey := 0
	for i := range budget + 4 {
		sybil := register(t, n.URL(), fmt.Sprintf("sybil-%d-%d", stamp, i))
		b := fetchBundles(t, n, sybil.Token, owner.UserID)
		if len(b.Devices) != 1 || len(b.Devices[0].SignedPrekey) == 0 || len(b.Devices[0].SignedPrekeySignature) == 0 {
			t.Fatalf("fetch %d: %v, want a bundle with the signed prekey", i, b)
		}
		if len(b.Devices[0].OneTimePrekey) > 0 {
			withPrekey++
		}
	}
	if withPrekey != budget {
		t.Fatalf("%d bundles carried a one-time prekey, want the target's budget of %d", withPrekey, budget)
	}
	code, raw := api(t, http.MethodGet, n.URL()+"/v1/keys", owner.Token, nil)
	if code != http.StatusOK || !strings.Contains(string(raw), fmt.Sprintf(`"one_time_prekeys":%d`, 50-budget)) {
		t.Fatalf("GET /v1/keys = %d %s, want %d left", code, raw, 50-budget)
	}
}

func TestAConcurrentDrainTellsTheOwnerToReplenish(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Limits.BundlesPerTarget = gateway.Off })
	stamp := time.Now().UnixNano()
	owner := register(t, n.URL(), fmt.Sprintf("owner-%d", stamp))
	const pool = gateway.PrekeysLowWatermark + 6
	putKeys(t, n, owner.Token, keyUpload(t, 1, pool))
	fetchers := make([]account, pool+2)
	for i := range fetchers {
		fetchers[i] = register(t, n.URL(), fmt.Sprintf("drainer-%d-%d", stamp, i))
	}
	var wg sync.WaitGroup
	for _, f := range fetchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, raw := api(t, http.MethodGet, n.URL()+"/v1/keys/"+owner.UserID, f.Token, nil)
			if code != http.StatusOK {
				t.Errorf("fetch: %d %s", code, raw)
				return
			}
			var b courierpb.UserBundles
			if err := protojson.Unmarshal(raw, &b); err != nil || len(b.Devices) != 1 {
				t.Errorf("fetch: %v %v", &b, err)
			}
		}()
	}
	wg.Wait()
	ws := dial(t, n.URL(), owner.Token, 0)
	ws.attached()
	lows := 0
	for {
		e, err := ws.nextEntry(500 * time.Millisecond)
		if err != nil {
			break
		}
		if e.Kind != courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW {
			t.Fatalf("owner got %v, want only PREKEYS_LOW", e.Kind)
		}
		lows++
	}
	if lows != 1 {
		t.Fatalf("a drained pool told its device %d times, want once", lows)
	}
}

func TestHandlesThatDifferOnlyInCaseOrLookAlikesAreOneHandle(t *testing.T) {
	n := startNode(t, nil)
	stamp := time.Now().UnixNano()
	casey := register(t, n.URL(), fmt.Sprintf("casey-%d", stamp))
	for _, h := range []string{fmt.Sprintf("Casey-%d", stamp), fmt.Sprintf("CASEY-%d", stamp), fmt.Sprintf("CaSeY-%d", stamp)} {
		code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/register", gateway.RegisterRequest{Handle: h}, nil)
		if code != http.StatusConflict || ge.Code != "HANDLE_TAKEN" {
			t.Errorf("registering %q beside casey: %d %+v, want 409 HANDLE_TAKEN", h, code, ge)
		}
	}
	// Look-alikes: I, l and 1 are one letter, as are O and 0.
	register(t, n.URL(), fmt.Sprintf("al-%d", stamp))
	for _, h := range []string{fmt.Sprintf("aI-%d", stamp), fmt.Sprintf("a1-%d", stamp), fmt.Sprintf("AL-%d", stamp)} {
		if code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/register", gateway.RegisterRequest{Handle: h}, nil); code != http.StatusConflict {
			t.Errorf("registering %q beside %q: %d %+v, want 409", h, fmt.Sprintf("al-%d", stamp), code, ge)
		}
	}
	// Lookup and sign-in by any spelling find casey, as she registered.
	code, raw := api(t, http.MethodGet, n.URL()+fmt.Sprintf("/v1/users/by-handle/CaSeY-%d", stamp), casey.Token, nil)
	var u gateway.UserInfo
	if code != http.StatusOK || json.Unmarshal(raw, &u) != nil || u.UserID != casey.UserID || u.Handle != fmt.Sprintf("casey-%d", stamp) {
		t.Fatalf("lookup by another case: %d %s", code, raw)
	}
	if code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/token", gateway.TokenRequest{Handle: fmt.Sprintf("CASEY-%d", stamp), DeviceSecret: casey.Secret}, nil); code != http.StatusOK {
		t.Fatalf("token by handle in another case: %d %+v", code, ge)
	}
}

// A limiter remembers up to MaxKeys keys; ids too long to name anybody
// are refused before they can become one.
func TestOversizedIdsAreRefusedBeforeTheLimiters(t *testing.T) {
	n := startNode(t, nil)
	acc := register(t, n.URL(), fmt.Sprintf("sizes-%d", time.Now().UnixNano()))
	long := strings.Repeat("x", 8<<10)
	if code, raw := api(t, http.MethodGet, n.URL()+"/v1/keys/"+long, acc.Token, nil); code != http.StatusNotFound {
		t.Fatalf("bundle of an 8 KiB user id: %d %s, want 404", code, raw)
	}
	for _, req := range []gateway.TokenRequest{{UserID: long, DeviceSecret: "x"}, {Handle: long, DeviceSecret: "x"}} {
		if code, ge := postJSON(t, http.DefaultClient, n.URL()+"/v1/token", req, nil); code != http.StatusUnauthorized {
			t.Fatalf("token for an 8 KiB id: %d %+v, want 401", code, ge)
		}
	}
}

// TestLoopbackPeersAreExemptFromPerAddressLimitsByDefault: on one machine
// a TLS-terminating proxy or a bench is many clients behind 127.0.0.1, so
// the per-address limits leave loopback alone unless told otherwise.
func TestLoopbackPeersAreExemptFromPerAddressLimitsByDefault(t *testing.T) {
	const max = 2
	n := startNode(t, func(c *node.Config) {
		c.MaxConnsPerIP = max
		c.Limits = gateway.Limits{}.WithDefaults()
		c.Limits.RegisterPerIP = gateway.Rate{N: max, Per: time.Hour}
	})
	stamp := time.Now().UnixNano()
	var d websocket.Dialer
	for i := range 2 * max {
		acc := register(t, n.URL(), fmt.Sprintf("local-%d-%d", stamp, i))
		c, _, err := d.Dial(wsURL(n.URL(), acc.Token, 0), nil)
		if err != nil {
			t.Fatalf("websocket %d from loopback over a cap of %d: %v", i+1, max, err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
}
