//go:build linux

package readiness

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller watches sockets with one epoll instance and one goroutine.
type Poller struct {
	epfd int
	// wakefd is an eventfd in the epoll set: writing it ends the loop.
	wakefd int
	done   chan struct{}

	mu     sync.Mutex
	closed bool
	next   uint64
	// armed maps the token of every armed Watch to it; a Watch leaves the
	// map when it fires or is disarmed, so only waiting sockets cost an
	// entry.
	armed map[uint64]*Watch
}

// wakeToken is the eventfd's token; watches get tokens from 1.
const wakeToken = 0

// New starts a Poller and its goroutine; Close stops them.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("readiness: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("readiness: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, wakeToken)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("readiness: watch eventfd: %w", err)
	}
	p := &Poller{epfd: epfd, wakefd: wakefd, done: make(chan struct{}), armed: make(map[uint64]*Watch)}
	go p.loop()
	return p, nil
}

// Watch is one socket's registration. Its methods are not safe for
// concurrent use with each other, except Disarm, which may race with the
// Watch firing (the caller decides the winner with its own state).
type Watch struct {
	p       *Poller
	rc      syscall.RawConn
	token   uint64
	added   bool // the fd is in the epoll set (armed or spent)
	onReady func()
}

// Watch prepares a registration for conn; onReady runs on the Poller's
// goroutine each time an armed Watch fires, and must not block.
func (p *Poller) Watch(conn syscall.Conn, onReady func()) (*Watch, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("readiness: raw conn: %w", err)
	}
	p.mu.Lock()
	p.next++
	token := p.next
	p.mu.Unlock()
	return &Watch{p: p, rc: rc, token: token, onReady: onReady}, nil
}

// Arm has onReady called once, as soon as the socket is readable or hung
// up; at once if it already is.
func (w *Watch) Arm() error {
	p := w.p
	op := unix.EPOLL_CTL_MOD
	if !w.added {
		op = unix.EPOLL_CTL_ADD
	}
	// Written before the map insert below: the Watch may fire, and be
	// armed again by another goroutine, as soon as epoll_ctl returns.
	w.added = true
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	// In the map before epoll can report it.
	p.armed[w.token] = w
	p.mu.Unlock()

	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, w.token)
	var ctlErr error
	err := w.rc.Control(func(fd uintptr) {
		ctlErr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		switch {
		case op == unix.EPOLL_CTL_MOD && errors.Is(ctlErr, unix.ENOENT):
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		case op == unix.EPOLL_CTL_ADD && errors.Is(ctlErr, unix.EEXIST):
			ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		}
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		p.mu.Lock()
		delete(p.armed, w.token)
		p.mu.Unlock()
		return fmt.Errorf("readiness: arm: %w", err)
	}
	return nil
}

// Disarm keeps an armed Watch from firing (unless it is firing already).
// The kernel drops the registration by itself when the socket closes.
func (w *Watch) Disarm() {
	w.p.mu.Lock()
	delete(w.p.armed, w.token)
	w.p.mu.Unlock()
}

// Armed is how many watches wait.
func (p *Poller) Armed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.armed)
}

// Close stops the goroutine; armed watches never fire.
func (p *Poller) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.armed = map[uint64]*Watch{}
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1 // eventfd counts in host order; any non-zero value wakes it
	if _, err := unix.Write(p.wakefd, one[:]); err != nil {
		return fmt.Errorf("readiness: wake poller: %w", err)
	}
	<-p.done
	return nil
}

func (p *Poller) loop() {
	defer close(p.done)
	defer unix.Close(p.wakefd)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 128)
	ready := make([]*Watch, 0, len(events))
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			// Only a bad epfd fails here, and the Poller owns it.
			panic(fmt.Sprintf("readiness: epoll_wait: %v", err))
		}
		ready = ready[:0]
		p.mu.Lock()
		for i := range n {
			t := token(&events[i])
			if t == wakeToken {
				p.mu.Unlock()
				return
			}
			if w, ok := p.armed[t]; ok {
				delete(p.armed, t)
				ready = append(ready, w)
			}
		}
		p.mu.Unlock()
		for i, w := range ready {
			w.onReady()
			ready[i] = nil
		}
	}
}

// An epoll event carries 64 bits of user data; x/sys names them Fd and Pad.
func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
