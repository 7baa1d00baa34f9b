package cluster

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Placement is rendezvous (highest-random-weight) hashing: every member that
// hosts a kind scores each grain and the highest score owns it. Adding or
// removing a member only moves the grains it wins or owned, and every node
// with the same member list computes the same owner without talking to
// anyone. The hashes must be identical in every process, so they are
// FNV-1a 64 plus the murmur3 finaliser, never hash/maphash (randomly seeded).

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// keyHash is FNV-1a 64 of "kind/identity", computed without building the
// string.
func keyHash(id GrainID) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(id.Kind); i++ {
		h ^= uint64(id.Kind[i])
		h *= fnvPrime64
	}
	h ^= '/'
	h *= fnvPrime64
	for i := 0; i < len(id.Identity); i++ {
		h ^= uint64(id.Identity[i])
		h *= fnvPrime64
	}
	return h
}

func stringHash(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// mix64 is murmur3's fmix64: FNV's low bits are weak, this spreads them.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func score(keyHash, memberSeed uint64) uint64 { return mix64(keyHash ^ memberSeed) }

// memberKey is what placement hashes for a member. The address is used when
// there is one because it is what every view agrees on (a static list in a
// test may not know the ID a node generates for itself); a local-only node
// falls back to its ID.
func memberKey(m Member) string {
	if m.Address != "" {
		return m.Address
	}
	return m.ID
}

// candidate is one member able to host a kind.
type candidate struct {
	member Member
	key    string
	seed   uint64
	self   bool
	router *actor.PID // the member's router; nil for self or an address-less member
}

// view is an immutable snapshot of the membership, swapped atomically on
// every change so the request path reads it without locks.
type view struct {
	members []Member
	byKind  map[string][]*candidate
}

func newView(members []Member, selfKey string) *view {
	v := &view{byKind: make(map[string][]*candidate)}
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		key := memberKey(m)
		if key == "" || seen[key] {
			continue
		}
		seen[key] = true
		m = cloneMember(m)
		v.members = append(v.members, m)
		cd := &candidate{member: m, key: key, seed: mix64(stringHash(key)), self: key == selfKey}
		if !cd.self && m.Address != "" {
			cd.router = actor.NewPID(m.Address, routerName)
		}
		for _, k := range m.Kinds {
			v.byKind[k] = append(v.byKind[k], cd)
		}
	}
	return v
}

// owner returns the member owning the grain with hash h, or nil when no
// member hosts kind. Ties (astronomically rare) go to the smaller key so all
// nodes agree.
func (v *view) owner(kind string, h uint64) *candidate {
	cs := v.byKind[kind]
	switch len(cs) {
	case 0:
		return nil
	case 1:
		return cs[0]
	}
	best, bestScore := cs[0], score(h, cs[0].seed)
	for _, cd := range cs[1:] {
		if s := score(h, cd.seed); s > bestScore || (s == bestScore && cd.key < best.key) {
			best, bestScore = cd, s
		}
	}
	return best
}

// Owner returns the member that owns id in this node's current view.
func (c *Cluster) Owner(id GrainID) (Member, error) {
	v := c.view.Load()
	if v == nil {
		return Member{}, fmt.Errorf("owner of %s: %w: node not started", id, ErrUnavailable)
	}
	cd := v.owner(id.Kind, keyHash(id))
	if cd == nil {
		return Member{}, fmt.Errorf("owner of %s: %w: no member hosts %q", id, ErrUnknownKind, id.Kind)
	}
	return cd.member, nil
}

// Members returns this node's current view of the cluster.
func (c *Cluster) Members() []Member {
	v := c.view.Load()
	if v == nil {
		return nil
	}
	out := make([]Member, len(v.members))
	for i, m := range v.members {
		m = cloneMember(m)
		out[i] = m
	}
	return out
}

func (c *Cluster) refreshView() *view {
	v := newView(c.cfg.Membership.Members(), c.selfKey)
	c.view.Store(v)
	return v
}

// watchMembership applies membership changes until Shutdown: a new view is
// published first (so new activations check the new owner), then grains this
// node no longer owns are passivated; their next message re-activates them
// on the new owner. The store fences sequence numbers, so the brief overlap
// while a poisoned grain drains its mailbox is safe.
func (c *Cluster) watchMembership(changes <-chan struct{}) {
	defer c.watchDone.Done()
	for {
		select {
		case <-c.stopWatch:
			return
		case _, ok := <-changes:
			if !ok {
				changes = nil // provider gone; keep the last view
				continue
			}
			start := time.Now()
			v := c.refreshView()
			moved := c.passivateWhere(func(a *activation) bool {
				cd := v.owner(a.id.Kind, a.hash)
				return cd == nil || !cd.self
			})
			c.log.Info("membership changed", "members", len(v.members), "moved_grains", moved, "took", time.Since(start))
		}
	}
}
