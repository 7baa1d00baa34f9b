package media

import (
	"context"
	"net/http"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
)

// request is one request handed to tusd: Close cancels it, and its fence
// orders tusd's body reader before any cancellation that makes tusd read it.
//
// The fence closes a data race in tusd v2.9.1. Cancelling a request with
// one of tusd's causes (another request asks for the upload's lock, the
// server shuts down) wakes a goroutine of tusd (handler/context.go) that
// reads the request's body reader, which the request's goroutine wrote
// with no synchronisation between the two: the race detector flags it, and
// a real interleaving can miss the body and leave a PATCH reading until
// its idle timeout. So a request's fence opens once its body reader exists
// (its first WriteChunk, which tusd calls after making it) or the request
// ends, and whoever cancels it waits for the fence first.
type request struct {
	// rc controls the request's connection (deadlines).
	rc     *http.ResponseController
	cancel context.CancelCauseFunc
	once   sync.Once
	fence  chan struct{} // closed when open
}

type requestKey struct{}

func requestOf(ctx context.Context) *request {
	q, _ := ctx.Value(requestKey{}).(*request)
	return q
}

func (q *request) open() { q.once.Do(func() { close(q.fence) }) }

// interrupt cancels the request with cause once its fence is open.
func (q *request) interrupt(cause error) {
	<-q.fence
	q.cancel(cause)
}

// begin registers a request handed to tusd; false once Close began.
func (s *Service) begin(w http.ResponseWriter, r *http.Request) (*http.Request, *request, bool) {
	ctx, cancel := context.WithCancelCause(r.Context())
	q := &request{rc: http.NewResponseController(w), cancel: cancel, fence: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		cancel(nil)
		return r, nil, false
	}
	s.requests[q] = struct{}{}
	return r.WithContext(context.WithValue(ctx, requestKey{}, q)), q, true
}

func (s *Service) end(q *request) {
	q.open()
	q.cancel(nil)
	s.mu.Lock()
	delete(s.requests, q)
	s.mu.Unlock()
}

// fencedLocker wraps tusd's locker so the release callback a lock holder
// registers (which cancels the holder) first waits for the holder's fence.
type fencedLocker struct{ inner handler.Locker }

func (l fencedLocker) NewLock(id string) (handler.Lock, error) {
	inner, err := l.inner.NewLock(id)
	if err != nil {
		return nil, err
	}
	return fencedLock{inner}, nil
}

type fencedLock struct{ inner handler.Lock }

func (k fencedLock) Lock(ctx context.Context, requestRelease func()) error {
	holder := requestOf(ctx) // nil for the sweeper
	return k.inner.Lock(ctx, func() {
		if holder != nil {
			<-holder.fence
		}
		requestRelease()
	})
}

func (k fencedLock) Unlock() error { return k.inner.Unlock() }
