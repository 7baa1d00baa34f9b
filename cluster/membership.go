package cluster

import (
	"context"
	"maps"
	"sync"
)

// localMembership is a node alone: the view is self, and it never changes.
type localMembership struct {
	mu      sync.Mutex
	self    Member
	changes chan struct{}
}

func (l *localMembership) Start(_ context.Context, self Member) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.self = self
	return nil
}

func (l *localMembership) Members() []Member {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.self.ID == "" && l.self.Address == "" {
		return nil
	}
	return []Member{l.self}
}

func (l *localMembership) Changes() <-chan struct{}   { return l.changes }
func (l *localMembership) Stop(context.Context) error { return nil }

// StaticMembership is a member list that changes only when told to (tests,
// fixed deployments). One instance may be shared by several nodes in one
// process: Start adds (or replaces) the starting node's entry, and every
// Changes subscriber is signalled on each change.
type StaticMembership struct {
	mu      sync.Mutex
	members []Member
	subs    []chan struct{}
}

var _ Membership = (*StaticMembership)(nil)

// Static returns a membership fixed to members (plus each node that Starts
// with it).
func Static(members ...Member) *StaticMembership {
	return &StaticMembership{members: cloneMembers(members)}
}

// Start records self: an entry with the same address (or, address-less, the
// same ID) is replaced by self, otherwise self is appended.
func (s *StaticMembership) Start(_ context.Context, self Member) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	self = cloneMember(self)
	for i, m := range s.members {
		if memberKey(m) == memberKey(self) {
			s.members[i] = self
			s.notifyLocked()
			return nil
		}
	}
	s.members = append(s.members, self)
	s.notifyLocked()
	return nil
}

// Members returns a copy of the current list.
func (s *StaticMembership) Members() []Member {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneMembers(s.members)
}

// Changes returns a new subscription, signalled (coalesced) on every Set or
// Start. Each node calls it once.
func (s *StaticMembership) Changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch
}

// Set replaces the view and signals every subscriber.
func (s *StaticMembership) Set(members []Member) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members = cloneMembers(members)
	s.notifyLocked()
}

// Stop does nothing: a static list does not change when a node leaves.
func (s *StaticMembership) Stop(context.Context) error { return nil }

func (s *StaticMembership) notifyLocked() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending; the reader re-reads Members
		}
	}
}

func cloneMember(m Member) Member {
	m.Kinds = append([]string(nil), m.Kinds...)
	m.Meta = maps.Clone(m.Meta)
	return m
}

func cloneMembers(ms []Member) []Member {
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = cloneMember(m)
	}
	return out
}
