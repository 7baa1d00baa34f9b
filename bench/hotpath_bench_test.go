package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	gw "github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/node"
)

// Benchmarks of the hot path (issue #18, docs/HOTPATH.md): one 1:1 message
// through its whole lifecycle, and one group message fanned out to 1,000
// members. The node runs in a child process (this test binary re-run with
// hotpathServerEnv), so the server's CPU time and allocations are measured
// apart from the clients':
//
//	server-µs/msg, server-allocs/msg   the node's CPU time (getrusage) and
//	                                   heap allocations (MemStats.Mallocs)
//	                                   per message (per delivery for fan-out)
//	ns/op, allocs/op (-benchmem)       wall time per op, and the SDK clients'
//	                                   allocations in this process
//
// Run them with
//
//	go test -run '^$' -bench 'DirectMessage|GroupFanout' -benchtime 2000x -benchmem ./bench/
//
// They are benchmarks only: the normal test suite does not run them.

// hotpathServerEnv makes the test binary a node for these benchmarks: the
// value is its data directory. It prints its URL, then answers every line
// on standard input with "<cpu ns> <mallocs>", and stops at end of input.
const hotpathServerEnv = "COURIER_BENCH_HOTPATH_SERVER"

// hotpathProfileEnv names a file for a CPU profile of the node (the child
// process) during the measured part of the last benchmark run.
const hotpathProfileEnv = "COURIER_BENCH_HOTPATH_CPUPROFILE"

// hotpathServe is the child process's whole life.
func hotpathServe(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	n, err := node.Start(ctx, node.Config{Listen: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler),
		// One sender sends thousands of messages a second here; the per-user
		// limits would measure the policy, not the message.
		Limits: gw.Limits{}.WithoutActionLimits()})
	cancel()
	if err != nil {
		return err
	}
	var prof *os.File
	defer func() {
		if prof != nil {
			pprof.StopCPUProfile()
			_ = prof.Close()
		}
	}()
	fmt.Println(n.URL())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "profile":
			// The measured part of one benchmark run (the last one wins).
			if prof != nil {
				pprof.StopCPUProfile()
				_ = prof.Close()
			}
			if prof, err = os.Create(os.Getenv(hotpathProfileEnv)); err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(prof); err != nil {
				return err
			}
			continue
		case "stop":
			if prof != nil {
				pprof.StopCPUProfile()
				_ = prof.Close()
				prof = nil
			}
			continue
		}
		cpu, err := selfCPU()
		if err != nil {
			return err
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Printf("%d %d\n", cpu.Nanoseconds(), ms.Mallocs)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return n.Close(ctx)
}

// hotpathServer is a node in a child process.
type hotpathServer struct {
	url string
	in  io.WriteCloser
	out *bufio.Scanner
}

// serverUsage is a reading of the child's counters.
type serverUsage struct {
	cpu     time.Duration
	mallocs uint64
}

func startHotpathServer(b *testing.B) *hotpathServer {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), hotpathServerEnv+"="+b.TempDir())
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &hotpathServer{in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() {
		_ = in.Close()
		_ = cmd.Wait()
	})
	if !s.out.Scan() {
		b.Fatalf("hotpath server did not start: %v", s.out.Err())
	}
	s.url = strings.TrimSpace(s.out.Text())
	return s
}

func (s *hotpathServer) usage(b *testing.B) serverUsage {
	b.Helper()
	if _, err := io.WriteString(s.in, "stats\n"); err != nil {
		b.Fatal(err)
	}
	if !s.out.Scan() {
		b.Fatalf("hotpath server: no stats: %v", s.out.Err())
	}
	var cpu int64
	var u serverUsage
	if _, err := fmt.Sscanf(s.out.Text(), "%d %d", &cpu, &u.mallocs); err != nil {
		b.Fatalf("hotpath server stats %q: %v", s.out.Text(), err)
	}
	u.cpu = time.Duration(cpu)
	return u
}

// quiesce waits until the server is nearly idle (under 5 % of a core over
// 200 ms), so what setup left running is not charged to the ops, and
// returns the reading to measure from.
func (s *hotpathServer) quiesce(b *testing.B) serverUsage {
	b.Helper()
	const every = 200 * time.Millisecond
	last := s.usage(b)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		time.Sleep(every)
		u := s.usage(b)
		if u.cpu-last.cpu < every/20 {
			return u
		}
		last = u
	}
	return last
}

// profile starts the node's CPU profile when hotpathProfileEnv asks for
// one; the returned func stops it.
func (s *hotpathServer) profile(b *testing.B) func() {
	if os.Getenv(hotpathProfileEnv) == "" {
		return func() {}
	}
	if _, err := io.WriteString(s.in, "profile\n"); err != nil {
		b.Fatal(err)
	}
	return func() { _, _ = io.WriteString(s.in, "stop\n") }
}

// report adds the server's cost per unit (message or delivery) between two
// readings.
func (u serverUsage) report(b *testing.B, since serverUsage, units int, unit string) {
	if units <= 0 {
		return
	}
	b.ReportMetric(float64((u.cpu-since.cpu).Nanoseconds())/1e3/float64(units), "server-µs/"+unit)
	b.ReportMetric(float64(u.mallocs-since.mallocs)/float64(units), "server-allocs/"+unit)
}

// hotpathClients registers and connects n users. The SDK acks every 1 ms
// (default 30): each message still gets its own ack, as in bench direct at
// window 1, but an op does not wait 30 ms for it.
func hotpathClients(b *testing.B, url, prefix string, n int, ackInterval time.Duration) []*client.Client {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := []client.Option{client.WithLogger(slog.New(slog.DiscardHandler)), client.WithAckInterval(ackInterval)}
	clients := make([]*client.Client, n)
	err := forEach(ctx, n, 32, func(ctx context.Context, i int) error {
		cr, err := client.Register(ctx, url, fmt.Sprintf("%s-%d", prefix, i), opts...)
		if err != nil {
			return err
		}
		clients[i], err = client.Dial(ctx, cr, opts...)
		return err
	})
	b.Cleanup(func() { closeAll(clients, 32) })
	if err != nil {
		b.Fatal(err)
	}
	return clients
}

// BenchmarkDirectMessage is one 1:1 message end to end: Send → SendAck
// (stored), Deliver to the receiver, its ack and delete, the DELIVERED
// receipt stored in the sender's inbox and delivered to it, the sender's
// ack of the receipt and its delete. pairs senders run at once.
//
//   - window=1: as bench direct --window 1, a sender sends its next message
//     when the last one is acknowledged (SendAck); receipts and acks of
//     consecutive messages may share frames, batches and commits. The run
//     ends when every receipt has arrived.
//   - serial: a sender sends its next message only when the receipt of the
//     last one has arrived, so nothing is shared between messages: the
//     whole unamortised lifecycle per op.
func BenchmarkDirectMessage(b *testing.B) {
	srv := startHotpathServer(b)
	for _, mode := range []string{"window=1", "serial"} {
		b.Run(mode, func(b *testing.B) {
			for _, pairs := range []int{1, 32} {
				b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) {
					benchDirect(b, srv, pairs, mode == "serial")
				})
			}
		})
	}
}

var hotpathRun atomic.Int64

func benchDirect(b *testing.B, srv *hotpathServer, pairs int, serial bool) {
	prefix := fmt.Sprintf("hp-%d-%d", time.Now().UnixNano(), hotpathRun.Add(1))
	clients := hotpathClients(b, srv.url, prefix, 2*pairs, time.Millisecond)
	payload := make([]byte, 64)
	ctx := context.Background()
	// Receivers only read; the SDK acks what they read.
	for p := range pairs {
		rc := clients[2*p+1]
		go func() {
			for range rc.Entries() {
			}
		}()
	}
	// Per pair: how many ops it does.
	share := make([]int, pairs)
	for i := range b.N {
		share[i%pairs]++
	}
	before := srv.quiesce(b)
	defer srv.profile(b)()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, 2*pairs)
	for p := range pairs {
		sc, rc := clients[2*p], clients[2*p+1]
		ids := make(chan string, share[p])
		wg.Go(func() {
			defer close(ids)
			for range share[p] {
				res, err := sc.Send(ctx, rc.UserID(), payload)
				if err != nil {
					errs <- err
					return
				}
				if serial {
					if err := awaitReceipts(sc, map[string]bool{res.ClientMsgID: true}, 1); err != nil {
						errs <- err
						return
					}
					continue
				}
				ids <- res.ClientMsgID
			}
		})
		if !serial {
			wg.Go(func() {
				want := make(map[string]bool, share[p])
				for id := range ids {
					want[id] = true
				}
				if err := awaitReceipts(sc, want, len(want)); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	after := srv.usage(b)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	after.report(b, before, b.N, "msg")
}

// awaitReceipts reads the sender's inbox until DELIVERED receipts for n of
// the ids in want have arrived.
func awaitReceipts(c *client.Client, want map[string]bool, n int) error {
	return awaitReceiptsOf(c, want, n, client.Entry.IsDelivered, "delivered", time.Minute)
}

// awaitReceiptsOf waits until receipts of the kind is picks name n of the
// ids in want, for at most d.
func awaitReceiptsOf(c *client.Client, want map[string]bool, n int, is func(client.Entry) bool, what string, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for n > 0 {
		select {
		case e, ok := <-c.Entries():
			if !ok {
				return fmt.Errorf("client closed: %v", c.Err())
			}
			if !is(e) {
				continue
			}
			for _, id := range e.ReceiptFor {
				if want[id] {
					delete(want, id)
					n--
				}
			}
		case <-t.C:
			return fmt.Errorf("%d %s receipts missing after %v", n, what, d)
		}
	}
	return nil
}

// BenchmarkGroupFanout is a group message to 1,000 members, all connected
// (as in bench fanout); one op is one delivery: ceil(N/999) messages are
// sent, stored, fanned out, delivered to 999 members each, acknowledged by
// them, and answered with GROUP_DELIVERED to the sender once all have it.
//
//   - window=1: as bench fanout --window 1, the next message is sent when
//     the last one is stored (SendAck), so fan-outs overlap and members get
//     several entries per batch; the run ends when every message's
//     GROUP_DELIVERED has arrived.
//   - serial: the next message is sent only after the last one's
//     GROUP_DELIVERED: one fan-out at a time, nothing shared.
func BenchmarkGroupFanout(b *testing.B) {
	const members = 1000
	srv := startHotpathServer(b)
	clients := hotpathClients(b, srv.url, fmt.Sprintf("fan-%d", time.Now().UnixNano()), members, client.DefaultAckInterval)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	others := make([]string, 0, members-1)
	for _, c := range clients[1:] {
		others = append(others, c.UserID())
	}
	info, err := clients[0].CreateGroup(ctx, "hotpath", others)
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	var got, events atomic.Int64
	for _, c := range clients[1:] {
		go func() {
			for e := range c.Entries() {
				switch {
				case e.IsGroupMessage():
					got.Add(1)
				case e.IsGroupEvent():
					events.Add(1)
				}
			}
		}()
	}
	sender := clients[0]
	// The group-created event reaches everyone before the measurement.
	for deadline := time.Now().Add(time.Minute); events.Load() < members-1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	drain(sender)
	b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
		for _, mode := range []string{"window=1", "serial"} {
			b.Run(mode, func(b *testing.B) {
				serial := mode == "serial"
				msgs := (b.N + members - 2) / (members - 1)
				payload := make([]byte, 64)
				ctx := context.Background()
				before := srv.quiesce(b)
				defer srv.profile(b)()
				b.ReportAllocs()
				b.ResetTimer()
				want := make(map[string]bool, msgs)
				for range msgs {
					res, err := sender.SendGroup(ctx, info.ID, payload)
					if err != nil {
						b.Fatal(err)
					}
					want[res.ClientMsgID] = true
					if serial {
						if err := awaitGroupDelivered(sender, want, 1); err != nil {
							b.Fatalf("%v (%d group deliveries seen)", err, got.Load())
						}
					}
				}
				if !serial {
					if err := awaitGroupDelivered(sender, want, len(want)); err != nil {
						b.Fatalf("%v (%d group deliveries seen)", err, got.Load())
					}
				}
				after := srv.usage(b)
				b.StopTimer()
				after.report(b, before, msgs*(members-1), "delivery")
			})
		}
	})
}

// drain drops what c's inbox holds now.
func drain(c *client.Client) {
	for {
		select {
		case <-c.Entries():
		default:
			return
		}
	}
}

// awaitGroupDelivered reads the sender's inbox until GROUP_DELIVERED
// receipts for n of the ids in want have arrived.
func awaitGroupDelivered(c *client.Client, want map[string]bool, n int) error {
	return awaitReceiptsOf(c, want, n, client.Entry.IsGroupDelivered, "group delivered", 2*time.Minute)
}
