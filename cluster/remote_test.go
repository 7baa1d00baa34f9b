package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/courier-im/courier/protos/clusterpb"
	"github.com/courier-im/courier/protos/courierpb"
)

// Two-node tests: why the peer is a child process.
//
// Proto.Actor's remote is not race-clean when two remotes share a process:
// every remote.Start rewrites grpc's global logger (grpclog.SetLoggerV2)
// while the other node's grpc goroutines read it, and a node that stops
// after its peer disconnected races its own endpoint-event handler
// (endpointManager.stop vs removeEndpoint). Neither can be fixed from here.
// So each test process runs exactly one remote node (sharedNode, started
// once, never stopped), and each test gets a fresh peer node: this test
// binary re-executed as TestPeerProcess, driven over stdin/stdout. The peer
// always shuts down first (the safe order), so Shutdown with remote is
// still exercised, and both processes run under -race when the tests do.

const peerEnv = "COURIER_CLUSTER_TEST_PEER"

var shared struct {
	once  sync.Once
	node  *Cluster
	ms    *StaticMembership
	stats *grainStats
	err   error
}

// sharedNode is this process's one remote-enabled node.
func sharedNode(t testing.TB) (*Cluster, *StaticMembership, *grainStats) {
	t.Helper()
	shared.once.Do(func() {
		shared.ms = Static()
		shared.stats = &grainStats{}
		cfg := Config{NodeAddress: "127.0.0.1:0", Membership: shared.ms, RequestTimeout: 2 * time.Second, Logger: testLogger()}
		c, err := New(NewActorSystem(cfg.Logger), cfg, echoKind(shared.stats, 0))
		if err == nil {
			err = c.Start(context.Background())
		}
		shared.node, shared.err = c, err
	})
	if shared.err != nil {
		t.Fatalf("shared node: %v", shared.err)
	}
	return shared.node, shared.ms, shared.stats
}

// peerCommand / peerReply are the child's stdin/stdout protocol, one JSON
// object a line (replies are prefixed so test output cannot be mistaken
// for them).
type peerCommand struct {
	Op         string     `json:"op"`
	Members    []Member   `json:"members,omitempty"`
	Identity   string     `json:"identity,omitempty"`
	Identities []string   `json:"identities,omitempty"`
	ReplyTo    *actor.PID `json:"reply_to,omitempty"`
}

type peerReply struct {
	Self        *Member        `json:"self,omitempty"`
	Activations map[string]int `json:"activations,omitempty"`
	Started     int64          `json:"started"`
	Stopped     int64          `json:"stopped"`
	Members     int            `json:"members"`
	Owners      []string       `json:"owners,omitempty"`
	Session     *actor.PID     `json:"session,omitempty"`
	Error       string         `json:"error,omitempty"`
}

const peerReplyPrefix = "PEER-REPLY "

// TestPeerProcess is not a test of its own: it is the peer node of the
// two-node tests, run in a child process.
func TestPeerProcess(t *testing.T) {
	seed := os.Getenv(peerEnv)
	if seed == "" {
		t.Skip("helper process for the two-node tests")
	}
	var members []Member
	if err := json.Unmarshal([]byte(seed), &members); err != nil {
		t.Fatalf("peer seed: %v", err)
	}
	ms := Static(members...)
	stats := &grainStats{}
	cfg := Config{NodeAddress: "127.0.0.1:0", Membership: ms, RequestTimeout: 2 * time.Second, Logger: testLogger()}
	c, err := New(NewActorSystem(cfg.Logger), cfg, echoKind(stats, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	reply := func(r peerReply) {
		b, _ := json.Marshal(r)
		fmt.Fprintf(out, "%s%s\n", peerReplyPrefix, b)
		out.Flush()
	}
	self := c.Self()
	reply(peerReply{Self: &self})

	var sessions []*actor.PID
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var cmd peerCommand
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			reply(peerReply{Error: err.Error()})
			continue
		}
		switch cmd.Op {
		case "set":
			ms.Set(cmd.Members)
			reply(peerReply{})
		case "stats":
			st := stats.of(cmd.Identity)
			reply(peerReply{Activations: c.Activations(), Started: st.started.Load(), Stopped: st.stopped.Load(), Members: len(c.Members())})
		case "owners":
			var owners []string
			for _, identity := range cmd.Identities {
				m, err := c.Owner(GrainID{Kind: "echo", Identity: identity})
				if err != nil {
					owners = append(owners, "error: "+err.Error())
					continue
				}
				owners = append(owners, m.Address)
			}
			reply(peerReply{Owners: owners})
		case "session":
			// A session-like plain actor: decodes Tells with UnwrapReceiver and
			// answers each Ping with a Tell of Pong to reply_to.
			replyTo := cmd.ReplyTo
			pid := c.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
				switch m := ctx.Message().(type) {
				case *courierpb.Ping:
					c.Tell(replyTo, &courierpb.Pong{ClientTimeMs: m.ClientTimeMs})
				case *clusterpb.Envelope:
					c.Tell(replyTo, &courierpb.Error{Message: "session saw a raw envelope " + m.TypeName})
				}
			}, actor.WithReceiverMiddleware(UnwrapReceiver)))
			sessions = append(sessions, pid)
			reply(peerReply{Session: pid})
		case "quit":
			// Stopping sessions first orders their sends before Shutdown.
			for _, pid := range sessions {
				_ = c.System().Root.StopFuture(pid).Wait()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := c.Shutdown(ctx)
			cancel()
			r := peerReply{}
			if err != nil {
				r.Error = err.Error()
			}
			reply(r)
			return
		default:
			reply(peerReply{Error: "unknown op " + cmd.Op})
		}
	}
	t.Error("parent closed stdin without quit")
}

// peer is the parent's handle on a child-process node.
type peer struct {
	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan peerReply
	self    Member
}

// startPeer starts a peer node and makes both views {parent, peer}.
func startPeer(t testing.TB, parent *Cluster, ms *StaticMembership) *peer {
	t.Helper()
	seed, _ := json.Marshal([]Member{parent.Self()})
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeerProcess$", "-test.count=1")
	// The race runtime sleeps 1 s at exit by default; the peer has nothing
	// left to report by then.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), peerEnv+"="+string(seed), "GORACE="+gorace)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, cmd: cmd, stdin: stdin, replies: make(chan peerReply, 1)}
	// The reader ends when the child closes stdout (it exits); cleanup waits
	// for that through cmd.Wait.
	go func() {
		defer close(p.replies)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), peerReplyPrefix)
			if !ok {
				continue // the child's own test output
			}
			var r peerReply
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				r.Error = "bad reply: " + err.Error()
			}
			p.replies <- r
		}
	}()
	first := p.next()
	if first.Self == nil {
		t.Fatalf("peer did not start: %+v", first)
	}
	p.self = *first.Self
	t.Cleanup(func() { p.quit(parent, ms) })

	both := []Member{parent.Self(), p.self}
	ms.Set(both)
	p.call(peerCommand{Op: "set", Members: both})
	eventually(t, 5*time.Second, "both nodes to see each other", func() bool {
		return len(parent.Members()) == 2 && p.stats("").Members == 2
	})
	return p
}

func (p *peer) next() peerReply {
	p.t.Helper()
	select {
	case r, ok := <-p.replies:
		if !ok {
			p.t.Fatal("peer process exited")
		}
		return r
	case <-time.After(20 * time.Second):
		p.t.Fatal("peer did not answer in 20s")
	}
	return peerReply{}
}

func (p *peer) call(cmd peerCommand) peerReply {
	p.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := fmt.Fprintf(p.stdin, "%s\n", b); err != nil {
		p.t.Fatalf("peer %s: %v", cmd.Op, err)
	}
	r := p.next()
	if r.Error != "" {
		p.t.Fatalf("peer %s: %s", cmd.Op, r.Error)
	}
	return r
}

func (p *peer) stats(identity string) peerReply {
	p.t.Helper()
	return p.call(peerCommand{Op: "stats", Identity: identity})
}

// quit shuts the peer down (Shutdown with remote, race-checked in the
// child), checks that it exited cleanly and restores the parent's view.
func (p *peer) quit(parent *Cluster, ms *StaticMembership) {
	t := p.t
	ms.Set([]Member{parent.Self()})
	b, _ := json.Marshal(peerCommand{Op: "quit"})
	fmt.Fprintf(p.stdin, "%s\n", b)
	select {
	case r, ok := <-p.replies:
		if ok && r.Error != "" {
			t.Errorf("peer Shutdown: %s", r.Error)
		}
	case <-time.After(30 * time.Second):
		t.Error("peer did not shut down in 30s")
		_ = p.cmd.Process.Kill()
	}
	p.stdin.Close()
	for range p.replies { // drain until the child closes stdout
	}
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("peer process: %v (a race or failure in the peer is reported on stderr)", err)
	}
}

var runSeq atomic.Int64

// unique is an identity prefix no other test (or -count repetition) uses on
// the shared node.
func unique(t testing.TB) string { return fmt.Sprintf("%s-%d", t.Name(), runSeq.Add(1)) }

// identityOwnedBy finds an echo identity that c places on owner.
func identityOwnedBy(t testing.TB, c *Cluster, owner Member, prefix string) GrainID {
	t.Helper()
	for i := range 1000 {
		id := GrainID{Kind: "echo", Identity: fmt.Sprintf("%s-%d", prefix, i)}
		m, err := c.Owner(id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Address == owner.Address {
			return id
		}
	}
	t.Fatalf("no identity placed on %s", owner.Address)
	return GrainID{}
}

func TestRequestToGrainOwnedByPeerNode(t *testing.T) {
	a, ms, statsA := sharedNode(t)
	p := startPeer(t, a, ms)

	// Both nodes agree on every owner.
	var identities []string
	prefix := unique(t)
	for i := range 200 {
		identities = append(identities, fmt.Sprintf("%s-%d", prefix, i))
	}
	peerOwners := p.call(peerCommand{Op: "owners", Identities: identities}).Owners
	onA, onB := 0, 0
	for i, identity := range identities {
		m, err := a.Owner(GrainID{Kind: "echo", Identity: identity})
		if err != nil || m.Address != peerOwners[i] {
			t.Fatalf("%s: owner here %s (%v), on the peer %s", identity, m.Address, err, peerOwners[i])
		}
		if m.Address == a.Self().Address {
			onA++
		} else {
			onB++
		}
	}
	if onA < 60 || onB < 60 {
		t.Errorf("placement is lopsided: %d here, %d on the peer", onA, onB)
	}

	id := identityOwnedBy(t, a, p.self, unique(t))
	for i := range 3 {
		if got := ping(t, a, id, 1).ClientTimeMs; got != int64(i+1) {
			t.Fatalf("call %d: grain handled %d, want %d", i+1, got, i+1)
		}
	}
	reply, err := a.Request(context.Background(), id, &courierpb.Send{}, "key-over-the-wire")
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.(*courierpb.SendAck).ClientMsgId; got != "key-over-the-wire" {
		t.Errorf("idempotency key across nodes = %q", got)
	}
	if st := p.stats(id.Identity); statsA.of(id.Identity).started.Load() != 0 || st.Started != 1 || st.Activations["echo"] != 1 {
		t.Errorf("started here %d, on the peer %d (activations %v); want 0, 1, 1",
			statsA.of(id.Identity).started.Load(), st.Started, st.Activations)
	}

	t.Run("RequestAsync", func(t *testing.T) {
		reply, err := requestAsync(t, a, id, &courierpb.Ping{ClientTimeMs: 1}, "", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if pong := reply.(*courierpb.Pong); pong.ClientTimeMs != 4 {
			t.Errorf("handled = %d, want 4", pong.ClientTimeMs)
		}
	})
	t.Run("Notify", func(t *testing.T) {
		for range 2 {
			if err := a.Notify(id, &courierpb.Ping{ClientTimeMs: 1}, "", 0); err != nil {
				t.Fatal(err)
			}
		}
		// The peer handled both, and their replies went to the discard
		// process, not back into anyone's request.
		reply, err := requestAsync(t, a, id, &courierpb.Ping{ClientTimeMs: 1}, "", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if pong := reply.(*courierpb.Pong); pong.ClientTimeMs != 7 {
			t.Errorf("handled = %d, want 7", pong.ClientTimeMs)
		}
	})
	t.Run("a silent remote grain is ErrUnavailable", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		_, err := a.Request(ctx, id, &courierpb.Ping{ClientTimeMs: pingIgnore}, "")
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want ErrUnavailable", err)
		}
	})
}

func TestTellToRemotePIDIsUnwrapped(t *testing.T) {
	a, ms, _ := sharedNode(t)
	p := startPeer(t, a, ms)

	got := make(chan interface{}, 8)
	collector := a.System().Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *courierpb.Ping, *courierpb.Pong, *courierpb.Error, *clusterpb.Envelope:
			got <- m
		}
	}, actor.WithReceiverMiddleware(UnwrapReceiver)))
	t.Cleanup(func() { _ = a.System().Root.StopFuture(collector).Wait() })
	session := p.call(peerCommand{Op: "session", ReplyTo: collector}).Session

	// An undecodable envelope first: the peer's session drops it (Warn) and
	// keeps going. Then a real Tell: the session must see a *Ping (not an
	// Envelope) and Tells a *Pong back, which must arrive here decoded too.
	a.System().Root.Send(session, &clusterpb.Envelope{TypeName: "courier.v1.DoesNotExist", Payload: []byte{1, 2, 3}})
	a.Tell(session, &courierpb.Ping{ClientTimeMs: 7})
	select {
	case m := <-got:
		if pong, ok := m.(*courierpb.Pong); !ok || pong.ClientTimeMs != 7 {
			t.Fatalf("got %T %v, want the decoded *courierpb.Pong{7} from the peer's session", m, m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer from the peer's session")
	}

	t.Run("local PID gets the plain message", func(t *testing.T) {
		a.Tell(collector, &courierpb.Ping{ClientTimeMs: 8})
		select {
		case m := <-got:
			if ping, ok := m.(*courierpb.Ping); !ok || ping.ClientTimeMs != 8 {
				t.Fatalf("got %T %v", m, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("local Tell never arrived")
		}
	})
}

func TestUnknownMessageTypeFromPeerIsRefusedWithoutCrash(t *testing.T) {
	a, ms, _ := sharedNode(t)
	p := startPeer(t, a, ms)
	id := identityOwnedBy(t, a, p.self, unique(t))
	peerRouter := actor.NewPID(p.self.Address, routerName)

	cases := []struct {
		name string
		msg  proto.Message
		want clusterpb.StatusCode
	}{
		{"unregistered type", &clusterpb.Envelope{Kind: id.Kind, Identity: id.Identity,
			TypeName: "courier.v1.DoesNotExist", Payload: []byte("\x0a\x03abc")}, clusterpb.StatusCode_STATUS_UNKNOWN_TYPE},
		{"garbage payload", &clusterpb.Envelope{Kind: id.Kind, Identity: id.Identity,
			TypeName: "courier.v1.Ping", Payload: []byte{0xff, 0xff, 0xff}}, clusterpb.StatusCode_STATUS_BAD_ENVELOPE},
		{"no grain named", &clusterpb.Envelope{TypeName: "courier.v1.Ping"}, clusterpb.StatusCode_STATUS_BAD_ENVELOPE},
		{"kind not hosted", &clusterpb.Envelope{Kind: "nope", Identity: "x", TypeName: "courier.v1.Ping"}, clusterpb.StatusCode_STATUS_UNKNOWN_KIND},
		{"not an envelope", &courierpb.Ping{}, clusterpb.StatusCode_STATUS_BAD_ENVELOPE},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.System().Root.RequestFuture(peerRouter, tc.msg, 10*time.Second).Result()
			if err != nil {
				t.Fatalf("no answer from the peer: %v", err)
			}
			env, ok := res.(*clusterpb.Envelope)
			if !ok {
				t.Fatalf("reply is %T, want *clusterpb.Envelope", res)
			}
			if env.GetStatus().GetCode() != tc.want {
				t.Errorf("status = %v (%s), want %v", env.GetStatus().GetCode(), env.GetStatus().GetMessage(), tc.want)
			}
		})
	}

	// The peer process is alive and serving, and the refusals started nothing.
	if got := ping(t, a, id, 1).ClientTimeMs; got != 1 {
		t.Errorf("after refusals the grain handled %d, want 1", got)
	}
	if st := p.stats(id.Identity); st.Started != 1 {
		t.Errorf("peer started the grain %d times, want 1", st.Started)
	}

	t.Run("reply of an unregistered type is ErrUnknownType", func(t *testing.T) {
		_, err := decodeReply(&clusterpb.Envelope{TypeName: "courier.v1.DoesNotExist"}, true)
		if !errors.Is(err, ErrUnknownType) {
			t.Errorf("err = %v, want ErrUnknownType", err)
		}
		_, err = decodeReply(&clusterpb.Envelope{Status: &clusterpb.Status{Code: clusterpb.StatusCode_STATUS_UNKNOWN_TYPE}}, true)
		if !errors.Is(err, ErrUnknownType) {
			t.Errorf("status err = %v, want ErrUnknownType", err)
		}
	})
}

func TestMembershipChangeMovesGrains(t *testing.T) {
	a, ms, statsA := sharedNode(t)
	p := startPeer(t, a, ms)
	both := []Member{a.Self(), p.self}
	id := identityOwnedBy(t, a, p.self, unique(t))

	// The peer leaves the view: this node owns everything and activates it.
	alone := []Member{a.Self()}
	ms.Set(alone)
	p.call(peerCommand{Op: "set", Members: alone})
	eventually(t, 5*time.Second, "both views to drop the peer", func() bool {
		return len(a.Members()) == 1 && p.stats("").Members == 1
	})
	ping(t, a, id, 1)
	ping(t, a, id, 1)
	if got := statsA.of(id.Identity).started.Load(); got != 1 {
		t.Fatalf("grain started %d times here, want 1", got)
	}

	// The peer rejoins and wins the grain: this node passivates its copy and
	// the next request activates it on the peer, with fresh state.
	ms.Set(both)
	p.call(peerCommand{Op: "set", Members: both})
	eventually(t, 5*time.Second, "this node to hand the grain over", func() bool {
		return statsA.of(id.Identity).stopped.Load() == 1
	})
	eventually(t, 5*time.Second, "the peer to see the new view", func() bool { return p.stats("").Members == 2 })
	if pong := ping(t, a, id, 1); pong.ClientTimeMs != 1 {
		t.Errorf("moved grain handled %d messages, want 1 (re-activated from the store)", pong.ClientTimeMs)
	}
	if st := p.stats(id.Identity); st.Started != 1 {
		t.Errorf("grain started %d times on the peer, want 1", st.Started)
	}
	if got := statsA.of(id.Identity).started.Load(); got != 1 {
		t.Errorf("grain re-activated here (%d starts)", got)
	}
}

func TestStaleOwnerAnswersWrongOwnerAndCallerRetries(t *testing.T) {
	a, ms, _ := sharedNode(t)
	p := startPeer(t, a, ms)
	id := identityOwnedBy(t, a, p.self, unique(t))

	// Only the peer learns that it left; this node still routes the grain
	// there, and the peer must refuse to activate it (wrong owner).
	p.call(peerCommand{Op: "set", Members: []Member{a.Self()}})
	eventually(t, 5*time.Second, "the peer to drop itself", func() bool { return p.stats("").Members == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := a.Request(ctx, id, &courierpb.Ping{ClientTimeMs: 1}, "k")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errWrongOwner) {
		t.Fatalf("err = %v, want retryable ErrUnavailable (wrong owner)", err)
	}
	if st := p.stats(id.Identity); st.Started != 0 {
		t.Errorf("the peer activated a grain it does not own")
	}
}
