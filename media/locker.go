package media

import (
	"context"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
)

// fencedLocker wraps tusd's in-memory locker to close a data race in tusd
// v2.9.1. When a request asks for an upload's lock (the client resumes with
// HEAD while its old PATCH still hangs on a dead connection), the locker
// calls the holder's release callback, which cancels the holder's context;
// a goroutine of tusd (handler/context.go) then reads the holder's body
// reader, which the holder's goroutine wrote with no synchronisation
// between the two. The race detector flags it, and a real interleaving can
// miss the body and leave the old PATCH holding the lock until its idle
// timeout.
//
// The fence orders them: a holder's fence is closed from the moment it
// takes the lock until its body reader exists (its first WriteChunk) or it
// unlocks; a release request waits at the fence, so the holder's writes
// happen before the cancellation that makes tusd read them.
type fencedLocker struct {
	inner handler.Locker
	mu    sync.Mutex
	held  map[string]*fence // guarded by mu: the fence of each held lock
}

type fence struct {
	mu     sync.Mutex // locked while closed
	opened bool       // guarded by fencedLocker.mu
}

func newFencedLocker(inner handler.Locker) *fencedLocker {
	return &fencedLocker{inner: inner, held: make(map[string]*fence)}
}

func (l *fencedLocker) NewLock(id string) (handler.Lock, error) {
	inner, err := l.inner.NewLock(id)
	if err != nil {
		return nil, err
	}
	return &fencedLock{inner: inner, locker: l, id: id}, nil
}

// open opens the fence of upload id's lock, if held and still closed.
func (l *fencedLocker) open(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.held[id]; f != nil && !f.opened {
		f.opened = true
		f.mu.Unlock()
	}
}

type fencedLock struct {
	inner  handler.Lock
	locker *fencedLocker
	id     string
}

func (k *fencedLock) Lock(ctx context.Context, requestRelease func()) error {
	f := &fence{}
	f.mu.Lock()
	err := k.inner.Lock(ctx, func() {
		f.mu.Lock()
		f.mu.Unlock() //nolint:staticcheck // an empty critical section: waiting for the fence is the point
		requestRelease()
	})
	if err != nil {
		return err
	}
	k.locker.mu.Lock()
	k.locker.held[k.id] = f
	k.locker.mu.Unlock()
	return nil
}

func (k *fencedLock) Unlock() error {
	k.locker.open(k.id)
	k.locker.mu.Lock()
	delete(k.locker.held, k.id)
	k.locker.mu.Unlock()
	return k.inner.Unlock()
}
