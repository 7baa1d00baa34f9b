package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// workerPool runs the workers and follows their events.
type workerPool struct {
	events  chan indexedEvent
	mu      sync.Mutex // guards states (the progress meter reads them)
	states  []*workerState
	handles []*workerHandle
}

type indexedEvent struct {
	index int
	ev    workerEvent
	eof   bool // the worker's output ended
}

type workerState struct {
	last                    workerEvent
	prepared, ready, exited bool
	result                  *workerResult
	failure                 string
}

func newWorkerPool(n int) *workerPool {
	return &workerPool{events: make(chan indexedEvent, 16*n)}
}

// handle applies one event.
func (p *workerPool) handle(e indexedEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.states[e.index]
	if e.eof {
		s.exited = true
		if s.result == nil && s.failure == "" {
			s.failure = fmt.Sprintf("worker %d ended without a result", e.index)
		}
		return
	}
	switch e.ev.Type {
	case evPrepared:
		s.prepared = true
	case evReady:
		s.ready = true
	case evResult:
		s.result = e.ev.Result
	case evFailed:
		s.failure = fmt.Sprintf("worker %d: %s", e.index, e.ev.Error)
	}
	if e.ev.Type != evResult && e.ev.Type != evFailed {
		s.last = e.ev
	}
}

// until handles events until every worker satisfies done, or ctx ends
// (false).
func (p *workerPool) until(ctx context.Context, done func(*workerState) bool) bool {
	for {
		p.mu.Lock()
		all := true
		for _, s := range p.states {
			all = all && done(s)
		}
		p.mu.Unlock()
		if all {
			return true
		}
		select {
		case e := <-p.events:
			p.handle(e)
		case <-ctx.Done():
			return false
		}
	}
}

// sum adds up the workers' latest progress.
func (p *workerPool) sum() workerEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	var t workerEvent
	for _, s := range p.states {
		t.Registered += s.last.Registered
		t.Connected += s.last.Connected
		t.Failed += s.last.Failed
		t.Open += s.last.Open
		t.Dropped += s.last.Dropped
	}
	return t
}

func (p *workerPool) anyFailed() bool { return len(p.failureList()) > 0 }

func (p *workerPool) failureList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range p.states {
		if s.failure != "" {
			out = append(out, s.failure)
		}
	}
	return out
}

func (p *workerPool) failures() string {
	if f := p.failureList(); len(f) > 0 {
		return strings.Join(f, "; ")
	}
	return "interrupted"
}

func (p *workerPool) command(cmd string) {
	for _, h := range p.handles {
		h.send(cmd)
	}
}

// releaseTimeout bounds how long closing and reporting may take.
const releaseTimeout = 2 * time.Minute

// release tells every worker to close its connections and collects the
// results of those that report.
func (p *workerPool) release(con *console) []*workerResult {
	p.command(cmdRelease)
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if !p.until(ctx, func(s *workerState) bool { return s.result != nil || s.exited }) {
		con.say("some workers did not report within %v", releaseTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*workerResult
	for _, s := range p.states {
		if s.result != nil {
			out = append(out, s.result)
		}
	}
	return out
}

// shutdown ends every worker (closing its input, then killing it if it
// lingers) and waits for them, draining their events meanwhile.
func (p *workerPool) shutdown(con *console) {
	for _, h := range p.handles {
		h.closeInput()
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if !p.until(ctx, func(s *workerState) bool { return s.exited }) {
		con.say("killing workers that did not exit")
		for _, h := range p.handles {
			h.kill()
		}
		p.until(context.Background(), func(s *workerState) bool { return s.exited })
	}
	for _, h := range p.handles {
		h.wait()
	}
	p.handles = nil
}
