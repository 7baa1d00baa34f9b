package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/courier-im/courier/webhook"
)

// DispatcherConfig tunes a Dispatcher. Zero values take the defaults.
type DispatcherConfig struct {
	Provider Provider
	// Attempts is how many times one notification is tried (default 5).
	Attempts int
	// Backoff is the wait before the first retry, doubled after each
	// failure up to MaxBackoff (defaults 1 s and 1 min), with ±20% jitter.
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one attempt (default 10 s).
	Timeout time.Duration
	// Workers is how many notifications are sent at once (default 4).
	Workers int
	// DeadLetter receives one JSON line per notification given up on
	// (optional; the log always gets an error record).
	DeadLetter io.Writer
	Logger     *slog.Logger
}

// Dispatcher queues at most one notification per device and delivers it
// through the Provider in the background.
type Dispatcher struct {
	cfg DispatcherConfig
	log *slog.Logger

	mu      sync.Mutex
	closed  bool
	pending map[string]*job
	dlMu    sync.Mutex

	ready chan *job
	done  chan struct{}
	wg    sync.WaitGroup
}

type job struct {
	n        Notification
	attempts int
	timer    *time.Timer
	// cancelled is set (under Dispatcher.mu) when the device connected or
	// the dispatcher closed; a worker holding the job drops its result.
	cancelled bool
}

// NewDispatcher starts the workers; Close stops them.
func NewDispatcher(cfg DispatcherConfig) (*Dispatcher, error) {
	if cfg.Provider == nil {
		return nil, errors.New("push: dispatcher needs a provider")
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 5
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dispatcher{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "push"),
		pending: make(map[string]*job),
		ready:   make(chan *job, 1024),
		done:    make(chan struct{}),
	}
	for range cfg.Workers {
		d.wg.Add(1)
		go d.work()
	}
	return d, nil
}

// Enqueue queues n unless its device already has a pending notification
// (many messages while offline make one push). It reports whether n was
// queued.
func (d *Dispatcher) Enqueue(n Notification) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	key := n.Key()
	if _, ok := d.pending[key]; ok {
		return false
	}
	j := &job{n: n}
	d.pending[key] = j
	d.scheduleLocked(j, 0)
	return true
}

// Cancel drops the pending notifications of a device, its call push
// included (it connected, so it fetches its inbox and is rung anyway). It
// reports whether one was pending.
func (d *Dispatcher) Cancel(userID string, deviceID uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	inbox := d.cancelLocked(Notification{UserID: userID, DeviceID: deviceID})
	call := d.cancelLocked(Notification{UserID: userID, DeviceID: deviceID, Call: true})
	return inbox || call
}

// CancelCall drops a device's pending call push for callID (the call was
// answered elsewhere or ended), so the device does not ring for a call
// that is over. It reports whether one was pending.
func (d *Dispatcher) CancelCall(userID string, deviceID uint32, callID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := Notification{UserID: userID, DeviceID: deviceID, Call: true}.Key()
	if j, ok := d.pending[key]; !ok || j.n.CallID != callID {
		return false
	}
	return d.cancelLocked(Notification{UserID: userID, DeviceID: deviceID, Call: true})
}

func (d *Dispatcher) cancelLocked(n Notification) bool {
	key := n.Key()
	j, ok := d.pending[key]
	if !ok {
		return false
	}
	d.dropLocked(key, j)
	return true
}

// Pending counts queued notifications (tests, stats).
func (d *Dispatcher) Pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

// Close stops the workers and forgets what is pending; it waits (bounded by
// ctx) for attempts in progress.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for key, j := range d.pending {
		d.dropLocked(key, j)
	}
	close(d.done)
	d.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("push: close: %w", ctx.Err())
	}
}

func (d *Dispatcher) dropLocked(key string, j *job) {
	j.cancelled = true
	if j.timer != nil {
		j.timer.Stop()
	}
	delete(d.pending, key)
}

// scheduleLocked hands j to the workers after delay. The timer is the job's
// own and is stopped by Cancel and Close.
func (d *Dispatcher) scheduleLocked(j *job, delay time.Duration) {
	j.timer = time.AfterFunc(delay, func() {
		select {
		case d.ready <- j:
		case <-d.done:
		}
	})
}

func (d *Dispatcher) work() {
	defer d.wg.Done()
	for {
		select {
		case <-d.done:
			return
		case j := <-d.ready:
			d.attempt(j)
		}
	}
}

func (d *Dispatcher) attempt(j *job) {
	d.mu.Lock()
	if j.cancelled {
		d.mu.Unlock()
		return
	}
	j.attempts++
	n, attempt := j.n, j.attempts
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeout)
	err := d.cfg.Provider.Send(ctx, n)
	cancel()

	d.mu.Lock()
	defer d.mu.Unlock()
	if j.cancelled {
		return
	}
	key := n.Key()
	switch {
	case err == nil:
		delete(d.pending, key)
		d.log.Debug("push delivered", "user_id", n.UserID, "device_id", n.DeviceID, "attempts", attempt)
	case errors.Is(err, ErrPermanent) || attempt >= d.cfg.Attempts:
		delete(d.pending, key)
		d.deadLetter(n, attempt, err)
	default:
		wait := webhook.Backoff(d.cfg.Backoff, d.cfg.MaxBackoff, attempt)
		d.log.Info("push failed, retrying", "user_id", n.UserID, "device_id", n.DeviceID, "attempt", attempt, "retry_in", wait, "err", err)
		d.scheduleLocked(j, wait)
	}
}

// DeadLetter is one line of the dead-letter log.
type DeadLetter struct {
	UserID   string `json:"user_id"`
	DeviceID uint32 `json:"device_id"`
	AtMs     int64  `json:"at_ms"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

func (d *Dispatcher) deadLetter(n Notification, attempts int, err error) {
	d.log.Error("push given up", "user_id", n.UserID, "device_id", n.DeviceID, "attempts", attempts, "err", err)
	if d.cfg.DeadLetter == nil {
		return
	}
	line, _ := json.Marshal(DeadLetter{UserID: n.UserID, DeviceID: n.DeviceID, AtMs: n.At.UnixMilli(), Attempts: attempts, Error: err.Error()})
	d.dlMu.Lock()
	defer d.dlMu.Unlock()
	_, _ = d.cfg.DeadLetter.Write(append(line, '\n'))
}
