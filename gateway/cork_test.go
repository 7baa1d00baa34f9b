package gateway

import (
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordingConn records each Write call; failWrites makes them fail.
type recordingConn struct {
	net.Conn
	mu         sync.Mutex
	writes     []string
	closed     bool
	failWrites bool
}

func (r *recordingConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failWrites {
		return 0, errors.New("broken pipe")
	}
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recordingConn) SetWriteDeadline(time.Time) error { return nil }

func (r *recordingConn) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

func (r *recordingConn) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.writes)
}

func TestCorkedConn(t *testing.T) {
	deadline := func() time.Time { return time.Now().Add(time.Second) }
	tests := []struct {
		name string
		run  func(t *testing.T, c *corkedConn, rec *recordingConn)
		want []string
	}{
		{"uncorked writes go straight through", func(t *testing.T, c *corkedConn, rec *recordingConn) {
			write(t, c, "a")
			write(t, c, "b")
		}, []string{"a", "b"}},
		{"corked writes leave together and in order on uncork", func(t *testing.T, c *corkedConn, rec *recordingConn) {
			c.cork()
			write(t, c, "a")
			write(t, c, "b")
			write(t, c, "c")
			if got := rec.got(); len(got) != 0 {
				t.Fatalf("written while corked: %q", got)
			}
			if err := c.uncork(deadline()); err != nil {
				t.Fatal(err)
			}
			write(t, c, "d")
		}, []string{"abc", "d"}},
		{"uncork with nothing corked writes nothing", func(t *testing.T, c *corkedConn, rec *recordingConn) {
			c.cork()
			if err := c.uncork(deadline()); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"a long corked run streams instead of piling up", func(t *testing.T, c *corkedConn, rec *recordingConn) {
			c.cork()
			chunk := string(make([]byte, corkFlushAt/2))
			write(t, c, chunk)
			write(t, c, chunk) // reaches corkFlushAt: flushed at once
			write(t, c, "x")
			if got := rec.got(); len(got) != 1 || len(got[0]) != corkFlushAt {
				t.Fatalf("after %d corked bytes: %d writes", corkFlushAt, len(got))
			}
			if err := c.uncork(deadline()); err != nil {
				t.Fatal(err)
			}
			if got := rec.got(); len(got) != 2 || got[1] != "x" {
				t.Fatalf("the rest after uncork: %d writes", len(got))
			}
		}, nil},
		{"close sends what is corked (the close frame)", func(t *testing.T, c *corkedConn, rec *recordingConn) {
			c.cork()
			write(t, c, "frame")
			write(t, c, "close")
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if !rec.closed {
				t.Fatal("not closed")
			}
		}, []string{"frameclose"}},
		{"a failed flush fails every later corked write", func(t *testing.T, c *corkedConn, rec *recordingConn) {
			c.cork()
			write(t, c, "a")
			rec.mu.Lock()
			rec.failWrites = true
			rec.mu.Unlock()
			if err := c.uncork(deadline()); err == nil {
				t.Fatal("uncork on a broken connection succeeded")
			}
			c.cork()
			if _, err := c.Write([]byte("b")); err == nil {
				t.Fatal("a corked write after a failed flush succeeded")
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingConn{}
			c := &corkedConn{Conn: rec}
			tt.run(t, c, rec)
			if tt.want != nil && !slices.Equal(rec.got(), tt.want) {
				t.Fatalf("writes %q, want %q", rec.got(), tt.want)
			}
		})
	}
}

func write(t *testing.T, c *corkedConn, s string) {
	t.Helper()
	if n, err := c.Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("write %q: %d, %v", s, n, err)
	}
}

// TestCloseDoesNotWaitForAFlushToAClientThatDoesNotRead: a session closes
// a slow consumer from its actor while the writer is stuck in a flush; the
// close must not wait for that write (nor must the grain behind it).
func TestCloseDoesNotWaitForAFlushToAClientThatDoesNotRead(t *testing.T) {
	server, client := net.Pipe() // synchronous: a write blocks until read
	defer client.Close()
	c := &corkedConn{Conn: server}
	c.cork()
	write(t, c, "never read")
	flushed := make(chan error, 1)
	go func() { flushed <- c.uncork(time.Now().Add(time.Minute)) }()
	time.Sleep(50 * time.Millisecond) // let the flush block in Write

	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close waited for a blocked flush")
	}
	select {
	case err := <-flushed:
		if err == nil {
			t.Fatal("the blocked flush reported success after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked flush never returned after Close")
	}
}
