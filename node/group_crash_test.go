package node_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/courier-im/courier/gateway"
	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/persistence/embedded"
	"github.com/courier-im/courier/protos/courierpb"
)

// TestGroupFanoutSurvivesSIGKILLAfterTheAck kills the server (SIGKILL, a
// separate process) as soon as the sender has the single tick for its last
// group message, while the fan-out to the members is still running. The
// restarted server resumes the fan-out from the group's log: every member
// gets every acknowledged message exactly once, in order.
func TestGroupFanoutSurvivesSIGKILLAfterTheAck(t *testing.T) {
	const members, messages = 300, 30
	dir := t.TempDir()
	secret := func(id string) string { return "secret-" + id }
	// Users go straight into the store before the server owns it.
	s, err := embedded.Open(filepath.Join(dir, "store"), embedded.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ids := createUsersWith(t, s, "crash", members, func(id string) []byte { return gateway.HashDeviceSecret(secret(id)) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	srv := startChild(t, dir, "127.0.0.1:0")
	base := "http://" + srv.addr
	token := func(id string) string {
		var tok gateway.TokenResponse
		if code, ge := postJSON(t, http.DefaultClient, base+"/v1/token", gateway.TokenRequest{UserID: id, DeviceID: 1, DeviceSecret: secret(id)}, &tok); code != http.StatusOK {
			t.Errorf("token for %s: %d %+v", id, code, ge)
		}
		return tok.AccessToken
	}
	sender := attach(t, base, ids[:1], token)[0]
	f := sender.call(createGroupFrame("crash", "crash test", ids[1:]))
	gid := f.GetGroupInfo().GetGroupId()
	if gid == "" {
		t.Fatalf("create: %v", f)
	}
	// Pipelined sends; SIGKILL the moment the last one is acknowledged.
	pending := make([]chan *courierpb.ServerFrame, messages)
	for i := range pending {
		pending[i] = sender.start(groupSendFrame(gid, fmt.Sprintf("m%02d", i), fmt.Appendf(nil, "message %d", i)))
	}
	acked := map[uint64]string{}
	for i, ch := range pending {
		select {
		case f := <-ch:
			if f.GetSendAck().GetGroupSeq() == 0 {
				t.Fatalf("message %d: %v", i, f)
			}
			acked[f.GetSendAck().GetGroupSeq()] = f.GetSendAck().GetClientMsgId()
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d not acknowledged", i)
		}
	}
	srv.kill(t)

	// What the crash left: how far the fan-out of the last message got.
	last := slices.Max(slices.Collect(mapKeys(acked)))
	s, err = embedded.Open(filepath.Join(dir, "store"), embedded.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	first := slices.Min(slices.Collect(mapKeys(acked)))
	reached, reachedFirst := 0, 0
	for _, id := range ids[1:] {
		es, err := s.Range(context.Background(), id, 1, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(es, func(e *courierpb.InboxEntry) bool { return e.GroupSeq == last }) {
			reached++
		}
		if slices.ContainsFunc(es, func(e *courierpb.InboxEntry) bool { return e.GroupSeq == first }) {
			reachedFirst++
		}
	}
	pendingGroups, _ := s.PendingFanout(context.Background(), 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("at SIGKILL the first acknowledged message had reached %d of %d members, the last %d; fan-out pending: %v",
		reachedFirst, members-1, reached, slices.Contains(pendingGroups, gid))

	restarted := startChild(t, dir, srv.addr)
	base = "http://" + restarted.addr
	// The sender was online (it may have had the creation event already);
	// the members were all offline.
	all := attach(t, base, ids[1:], token)
	waitEntries(t, all, 60*time.Second, func(*member) int { return 1 + messages })
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	want := slices.Sorted(mapKeys(acked))
	for _, m := range all {
		got := m.groupEntries()
		var seqs []uint64
		for _, e := range got[1:] {
			seqs = append(seqs, e.GroupSeq)
			if e.ClientMsgId != acked[e.GroupSeq] {
				t.Fatalf("%s: group_seq %d carries %q, acked as %q", m.id, e.GroupSeq, e.ClientMsgId, acked[e.GroupSeq])
			}
		}
		if got[0].GroupEvent.GetType() != courierpb.GroupEventType_GROUP_EVENT_CREATED || !slices.Equal(seqs, want) {
			t.Fatalf("%s got %v after the restart, want exactly once, in order: %v", m.id, seqs, want)
		}
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// createUsersWith stores n users whose device secret hashes are hash(id).
func createUsersWith(t testing.TB, s persistence.Store, prefix string, n int, hash func(string) []byte) []string {
	t.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx := context.Background()
			err := s.PutDevice(ctx, persistence.Device{UserID: ids[i], DeviceID: 1, SecretHash: hash(ids[i])})
			if err == nil {
				err = s.CreateUser(ctx, persistence.User{ID: ids[i], Handle: ids[i]})
			}
			if err != nil {
				mu.Lock()
				firstErr = cmpOr(firstErr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return ids
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
