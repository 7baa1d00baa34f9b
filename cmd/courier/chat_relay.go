package main

// One device, one process. A device has one session on the server (a
// second connection of the same device replaces the first) and one key file
// whose ratchets only one writer may advance. So while `chat listen` runs
// for a profile, every other chat command for that profile runs inside the
// listener: the command's process hands its arguments over a Unix socket
// next to the profile (<handle>.sock, mode 0600) and prints what comes back,
// as signal-cli's daemon mode does. Without a listener a command connects
// by itself, as before.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/courier-im/courier/client"
)

// maxRelayedStdin bounds a message body read from standard input and handed
// to a listener; the server refuses far smaller frames anyway.
const maxRelayedStdin = 16 << 20

// relayRequest is what a command sends to the listener: its arguments below
// `courier chat`, and standard input when the command reads a body there.
type relayRequest struct {
	Args     []string `json:"args"`
	Stdin    []byte   `json:"stdin,omitempty"`
	HasStdin bool     `json:"has_stdin,omitempty"`
	// ErrTTY: the command's standard error is a terminal.
	ErrTTY bool `json:"err_tty,omitempty"`
}

// relayReply is one line of the listener's answer: output, then done.
type relayReply struct {
	Out   string `json:"out,omitempty"`
	Err   string `json:"err,omitempty"`
	Done  bool   `json:"done,omitempty"`
	Error string `json:"error,omitempty"`
}

// relaySocketPath is where a profile's listener takes commands. Unix socket
// paths are short (108 bytes on Linux), so a long profile path gets one in
// the temporary directory, named by a hash of the profile path.
func relaySocketPath(profile string) string {
	p := strings.TrimSuffix(profile, filepath.Ext(profile)) + ".sock"
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(profile))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("courier-%d", os.Getuid()))
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".sock")
}

// dialRelay connects to the profile's listener; (nil, nil) when none runs.
func dialRelay(profile string) (net.Conn, error) {
	conn, err := net.DialTimeout("unix", relaySocketPath(profile), 2*time.Second)
	if err == nil {
		return conn, nil
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
		return nil, nil // no listener, or one that died and left its socket
	}
	return nil, fmt.Errorf("reach the listener of %s: %w", profile, err)
}

// relayed wraps a command's run so that it runs inside the profile's
// listener when one is running.
func (f *chatFlags) relayed(run func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if f.host != nil {
			return run(cmd, args)
		}
		path, err := f.profilePath()
		if err != nil {
			return err
		}
		conn, err := dialRelay(path)
		if err != nil {
			return err
		}
		if conn == nil {
			return run(cmd, args)
		}
		defer conn.Close()
		return forward(cmd, conn, args)
	}
}

// forward hands the command to the listener on conn and copies its output
// here; the listener's error becomes this command's.
func forward(cmd *cobra.Command, conn net.Conn, args []string) error {
	req := relayRequest{Args: relayArgs(cmd, args), ErrTTY: isTerminal(cmd.ErrOrStderr())}
	if cmd.Annotations[annotationReadsStdin] != "" && len(args) == 0 && !cmd.Flags().Changed("file") {
		b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxRelayedStdin+1))
		if err != nil {
			return fmt.Errorf("read the message from standard input: %w", err)
		}
		if len(b) > maxRelayedStdin {
			return fmt.Errorf("the message on standard input is over %d MiB", maxRelayedStdin>>20)
		}
		req.Stdin, req.HasStdin = b, true
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("hand the command to the listener: %w", err)
	}
	// Ctrl-C here ends the command there: closing the socket cancels it.
	stop := context.AfterFunc(cmd.Context(), func() { _ = conn.Close() })
	defer stop()
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var r relayReply
		if err := dec.Decode(&r); err != nil {
			if cmd.Context().Err() != nil {
				return cmd.Context().Err()
			}
			return fmt.Errorf("the listener stopped before the command finished: %w", err)
		}
		io.WriteString(cmd.OutOrStdout(), r.Out)
		io.WriteString(cmd.ErrOrStderr(), r.Err)
		if r.Done {
			if r.Error != "" {
				return errors.New(r.Error)
			}
			return nil
		}
	}
}

// relayArgs rebuilds the command line below `courier chat` from what
// cobra parsed: the subcommand path, every flag that was set, then the
// positional arguments. A file path is made absolute, since the listener
// runs in another directory.
func relayArgs(cmd *cobra.Command, args []string) []string {
	var path []string
	for c := cmd; c != nil && c.Name() != "chat"; c = c.Parent() {
		path = append([]string{c.Name()}, path...)
	}
	out := path
	cmd.Flags().Visit(func(fl *pflag.Flag) {
		v := fl.Value.String()
		if fl.Name == "file" {
			if abs, err := filepath.Abs(v); err == nil {
				v = abs
			}
		}
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			for _, s := range sv.GetSlice() {
				out = append(out, "--"+fl.Name+"="+s)
			}
			return
		}
		out = append(out, "--"+fl.Name+"="+v)
	})
	return append(append(out, "--"), args...)
}

// annotationReadsStdin marks commands that read a message body from
// standard input when given no text.
const annotationReadsStdin = "courier/reads-stdin"

// deviceHost is a running listener as the commands it runs see it: the
// device's one client, its names, and a copy of every entry it prints.
type deviceHost struct {
	c     *client.Client
	names *names
	log   *slog.Logger

	mu   sync.Mutex
	subs map[chan client.Entry]struct{}
}

func newDeviceHost(c *client.Client, n *names) *deviceHost {
	return &deviceHost{c: c, names: n, subs: make(map[chan client.Entry]struct{})}
}

// subscribe returns a channel that gets a copy of each entry the listener
// takes from now on, until cancel.
func (h *deviceHost) subscribe() (<-chan client.Entry, func()) {
	ch := make(chan client.Entry, 256)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// publish hands e to every subscriber without waiting: the listener never
// stalls on a command that stopped reading (such a command misses entries;
// the listener itself printed them).
func (h *deviceHost) publish(e client.Entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// serveRelay takes commands on the profile's socket until ctx ends. It
// fails when another listener of the same profile is running.
func (h *deviceHost) serveRelay(ctx context.Context, profile string, wg *sync.WaitGroup) (func(), error) {
	sock := relaySocketPath(profile)
	if conn, _ := dialRelay(profile); conn != nil {
		conn.Close()
		return nil, fmt.Errorf("%s is already listening in another terminal (socket %s): run your commands there, they are handed to that listener", h.names.self.Handle, sock)
	}
	_ = os.Remove(sock) // left by a listener that died
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, err
	}
	// Only this user may speak as this device: the directory is 0700 and
	// the socket 0600.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("open the command socket %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict the command socket %s: %w", sock, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var conns sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		_ = ln.Close()
		conns.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				h.serveOne(ctx, conn)
			}()
		}
	}()
	return func() { cancel(); _ = os.Remove(sock) }, nil
}

// serveOne runs one relayed command and streams its output back.
func (h *deviceHost) serveOne(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	var req relayRequest
	if err := json.NewDecoder(io.LimitReader(rd, 4*maxRelayedStdin)).Decode(&req); err != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The caller closing its end (Ctrl-C) cancels the command.
	go func() {
		_, _ = io.Copy(io.Discard, rd)
		cancel()
	}()
	w := &relayWriter{enc: json.NewEncoder(conn)}
	root := newChatCmdHosted(h, req.ErrTTY)
	root.SetArgs(req.Args)
	root.SetOut(w.stream(false))
	root.SetErr(w.stream(true))
	if req.HasStdin {
		root.SetIn(bytes.NewReader(req.Stdin))
	} else {
		root.SetIn(strings.NewReader(""))
	}
	root.SilenceErrors, root.SilenceUsage = true, true
	err := root.ExecuteContext(ctx)
	done := relayReply{Done: true}
	if err != nil {
		done.Error = userMessage(err)
	}
	w.send(done)
}

// relayWriter turns a command's output into relayReply lines.
type relayWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *relayWriter) send(r relayReply) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.enc.Encode(r)
}

type relayStream struct {
	w      *relayWriter
	stderr bool
}

func (w *relayWriter) stream(stderr bool) io.Writer { return relayStream{w, stderr} }

func (s relayStream) Write(p []byte) (int, error) {
	r := relayReply{Out: string(p)}
	if s.stderr {
		r = relayReply{Err: string(p)}
	}
	s.w.send(r)
	return len(p), nil
}
