package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestPlacementHashIsStableAcrossProcesses(t *testing.T) {
	// Every node must compute the same owner, so these values may never
	// change (FNV-1a 64 of "user/alice", checked independently).
	if got, want := keyHash(GrainID{"user", "alice"}), uint64(0x6faa0cb365589421); got != want {
		t.Errorf("keyHash = %#x, want %#x", got, want)
	}
	if got, want := score(keyHash(GrainID{"user", "alice"}), mix64(stringHash("10.0.0.1:8090"))), uint64(0x3c8ec8fdc96d93c3); got != want {
		t.Errorf("score = %#x, want %#x", got, want)
	}
}

func TestRendezvousPlacementIsBalancedAndMovesOnlyWhatItMust(t *testing.T) {
	member := func(i int, kinds ...string) Member {
		return Member{ID: fmt.Sprint("m", i), Address: fmt.Sprintf("10.0.0.%d:8090", i), Kinds: kinds}
	}
	three := []Member{member(1, "user"), member(2, "user"), member(3, "user", "group")}
	four := append(append([]Member(nil), three...), member(4, "user"))
	v3, v4 := newView(three, ""), newView(four, "")

	const n = 30000
	counts := map[string]int{}
	moved := 0
	for i := range n {
		id := GrainID{"user", fmt.Sprint("u", i)}
		h := keyHash(id)
		before, after := v3.owner(id.Kind, h).key, v4.owner(id.Kind, h).key
		counts[before]++
		if before != after {
			moved++
			if after != four[3].Address {
				t.Fatalf("%s moved between old members (%s -> %s)", id, before, after)
			}
		}
	}
	for _, m := range three {
		if c := counts[m.Address]; c < n/3*9/10 || c > n/3*11/10 {
			t.Errorf("%s owns %d of %d grains, want about a third", m.Address, c, n)
		}
	}
	if moved < n/4*9/10 || moved > n/4*11/10 {
		t.Errorf("adding a fourth member moved %d of %d grains, want about a quarter", moved, n)
	}

	t.Run("only members hosting the kind own it", func(t *testing.T) {
		for i := range 100 {
			if got := v4.owner("group", keyHash(GrainID{"group", fmt.Sprint(i)})).key; got != three[2].Address {
				t.Fatalf("group grain placed on %s", got)
			}
		}
		if v4.owner("nope", 1) != nil {
			t.Error("a kind no member hosts has an owner")
		}
	})
}

func TestStaticMembershipSignalsEverySubscriber(t *testing.T) {
	ms := Static(Member{Address: "a:1"}, Member{Address: "b:1"})
	sub1, sub2 := ms.Changes(), ms.Changes()
	if err := ms.Start(context.Background(), Member{ID: "self", Address: "b:1", Kinds: []string{"k"}}); err != nil {
		t.Fatal(err)
	}
	got := ms.Members()
	if len(got) != 2 || got[1].ID != "self" || len(got[1].Kinds) != 1 {
		t.Errorf("Start did not replace the entry with the same address: %+v", got)
	}
	ms.Set([]Member{{Address: "a:1"}})
	ms.Set([]Member{{Address: "c:1"}}) // coalesced with the previous signal
	for i, sub := range []<-chan struct{}{sub1, sub2} {
		select {
		case <-sub:
		case <-time.After(time.Second):
			t.Fatalf("subscriber %d not signalled", i)
		}
		select {
		case <-sub:
			t.Errorf("subscriber %d: signals were not coalesced", i)
		default:
		}
	}
	if got := ms.Members(); len(got) != 1 || got[0].Address != "c:1" {
		t.Errorf("Members = %+v", got)
	}
}
