//go:build !linux

package readiness

import "syscall"

// Poller is not available on this platform: New returns ErrUnsupported.
type Poller struct{}

// Watch is not available on this platform.
type Watch struct{}

// New returns ErrUnsupported.
func New() (*Poller, error) { return nil, ErrUnsupported }

// Watch returns ErrUnsupported.
func (p *Poller) Watch(syscall.Conn, func()) (*Watch, error) { return nil, ErrUnsupported }

// Arm returns ErrUnsupported.
func (w *Watch) Arm() error { return ErrUnsupported }

// Disarm does nothing.
func (w *Watch) Disarm() {}

// Armed is 0.
func (p *Poller) Armed() int { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }
