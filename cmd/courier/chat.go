package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

const chatLong = `Try Courier by hand: register a user, send a message, listen for messages.

Credentials are kept in a profile file per handle, by default
$XDG_CONFIG_HOME/courier/<handle>.json (or ~/.config/courier/<handle>.json),
readable by you only.

Messages are end-to-end encrypted with the Signal protocol: the device's
keys and sessions live next to the profile (<handle>.keys), and the server
only ever stores ciphertext.`

// chatFlags are shared by every chat subcommand.
type chatFlags struct {
	profile string
	as      string
	caFile  string
	verbose bool
	timeout time.Duration
	// host is the listener a relayed command runs in (chat_relay.go); nil
	// when the command runs in its own process.
	host *deviceHost
	// errTTY: the person's standard error is a terminal (progress is drawn
	// in place). Relayed commands learn it from the command's process.
	errTTY bool
}

// progressOnTTY reports whether progress may be redrawn in place on cmd's
// standard error.
func (f *chatFlags) progressOnTTY(cmd *cobra.Command) bool {
	return f.errTTY || (f.host == nil && isTerminal(cmd.ErrOrStderr()))
}

func newChatCmd() *cobra.Command { return newChatCmdHosted(nil, false) }

// newChatCmdHosted builds the chat commands; with h they run inside that
// listener, on its connection, for a person whose standard error is a
// terminal when errTTY.
func newChatCmdHosted(h *deviceHost, errTTY bool) *cobra.Command {
	f := chatFlags{host: h, errTTY: errTTY}
	cmd := &cobra.Command{
		Use:   "chat",
		Short: "Register, send and listen by hand (end-to-end encrypted)",
		Long:  chatLong,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.profile, "profile", "", "credentials file (default: <config dir>/courier/<handle>.json)")
	pf.StringVar(&f.caFile, "ca-file", "", "PEM file of a private CA to trust for https/wss")
	pf.BoolVar(&f.verbose, "verbose", false, "log reconnects and protocol warnings to stderr")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the server")
	cmd.AddCommand(newChatRegisterCmd(&f), newChatSendCmd(&f), newChatListenCmd(&f), newChatGroupCmd(&f))
	return cmd
}

func newChatRegisterCmd(f *chatFlags) *cobra.Command {
	var url, handle, address, code string
	var force bool
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register a user and save its credentials to a profile",
		Long: `Register a user and save its credentials to a profile.

A server with verified registration (serve --registration verified) sends a
code to a phone number or e-mail address first: pass it with --address, and
type the code when it arrives, or run again with --code.`,
		Example: `  courier chat register --url http://127.0.0.1:8080 --handle alice
  courier chat register --handle alice --address +15550109999
  courier chat register --handle alice --code 123456`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if handle == "" {
				return errors.New("--handle is required")
			}
			path, err := profilePath(f.profile, handle)
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err == nil && !force {
				return fmt.Errorf("profile %s exists; pass --force to overwrite it (its device secret is then lost)", path)
			}
			if conn, _ := dialRelay(path); conn != nil {
				conn.Close()
				return fmt.Errorf("%s is listening in another terminal: stop that listener before registering %s again", handle, handle)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			opts := f.options()
			if address != "" && code == "" {
				var sent bool
				if code, sent, err = requestRegistrationCode(ctx, cmd, url, handle, address, path, opts); err != nil || (sent && code == "") {
					return err
				}
			}
			if code != "" {
				p, err := loadPendingCode(pendingPath(path), handle)
				if err != nil {
					return err
				}
				opts = append(opts, client.WithVerificationCode(p.Challenge, code))
			}
			// A new registration is a new identity: the old keys belong to
			// a user id that is gone with the old profile.
			if err := os.Remove(keysPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			// The keys are published now, so others can write to this user
			// before it ever listens.
			creds, err := client.Register(ctx, url, handle, append(opts, client.WithE2EE(keysPath(path)))...)
			if err != nil && creds.UserID == "" {
				return err
			}
			_ = os.Remove(pendingPath(path))
			if creds.UserID != "" && err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v; they are published at the first `chat listen`\n", userMessage(err))
			}
			if err := saveProfile(path, creds); err != nil {
				return fmt.Errorf("registered %s (user id %s) but could not save the credentials: %w", handle, creds.UserID, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "registered %s: user id %s, device %d\n", creds.Handle, creds.UserID, creds.DeviceID)
			fmt.Fprintf(out, "credentials saved to %s (keep this file secret)\n", path)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "http://127.0.0.1:8080", "server URL (http, https, ws or wss)")
	cmd.Flags().StringVar(&handle, "handle", "", "the handle to register (letters, digits, . _ + -)")
	cmd.Flags().StringVar(&handle, "as", "", "the same as --handle")
	cmd.Flags().StringVar(&address, "address", "", "phone number or e-mail address a verifying server sends the code to")
	cmd.Flags().StringVar(&code, "code", "", "the code a verifying server sent (after a run with --address)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing profile")
	_ = cmd.Flags().MarkHidden("as")
	return cmd
}

func newChatSendCmd(f *chatFlags) *cobra.Command {
	var to, file string
	var waitDelivered bool
	cmd := &cobra.Command{
		Use:   "send --as <handle> --to <handle> [<text>... | --file <path>]",
		Short: "Send a text message or a file; prints the single tick (stored) and, with --wait-delivered, the double tick",
		Long: `Send a text message (the words given, or, with none, standard input) or,
with --file, any file up to the server's limit (2 GiB by default) as media.
"stored" is the single tick: the server has the message durably and will
deliver it. --wait-delivered then waits for the double tick (the
recipient's device received it).

The text is encrypted for each of the recipient's devices (and your other
devices) before it leaves. A file is encrypted with a fresh key while it is
uploaded (resumably: an interrupted upload continues where the server's
copy ends), and the key travels inside the end-to-end encrypted message:
the server only ever holds ciphertext. While "chat listen" runs for you,
this command runs inside that listener (it owns your device's connection
and keys).`,
		Example: `  courier chat send --as alice --to bob "hello"
  echo "hello from a pipe" | courier chat send --as alice --to bob
  courier chat send --as alice --to bob --file video.mp4`,
		Annotations: map[string]string{annotationReadsStdin: "yes"},
		RunE: f.relayed(func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("--to is required: the handle of the person you write to")
			}
			msg, contentType, err := messageBody(cmd, args, file)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := f.open(ctx)
			if err != nil {
				return err
			}
			defer s.close()
			out := cmd.OutOrStdout()
			rctx, cancel := context.WithTimeout(ctx, f.timeout)
			toID, err := s.names.resolve(rctx, to)
			cancel()
			if err != nil {
				return err
			}
			var res client.SendResult
			if file != "" {
				// The upload has no deadline but Ctrl-C: a 2 GiB file takes
				// what it takes, and resumes after any interruption.
				ref, err := uploadFile(ctx, s.c, file, cmd.ErrOrStderr(), f.progressOnTTY(cmd))
				if err != nil {
					return err
				}
				sctx, cancel := context.WithTimeout(ctx, f.timeout)
				res, err = s.c.SendMedia(sctx, toID, ref)
				cancel()
				if err != nil {
					return sendError(to, err)
				}
			} else {
				sctx, cancel := context.WithTimeout(ctx, f.timeout)
				res, err = s.c.Send(sctx, toID, msg, client.WithContentType(contentType))
				cancel()
				if err != nil {
					return sendError(to, err)
				}
			}
			note := ""
			if res.Duplicate {
				note = " (already stored before)"
			}
			fmt.Fprintf(out, "✓ stored %s at %s%s\n", res.ClientMsgID, res.StoredAt.Local().Format(time.TimeOnly), note)
			if !waitDelivered {
				return nil
			}
			fmt.Fprintf(out, "waiting for %s's device to receive it (Ctrl-C to stop waiting)\n", to)
			// In its own process this command is the device's only reader,
			// so it shows (and thereby acknowledges) whatever arrives; in a
			// listener, the listener shows everything.
			p := newPrinter(out, s.names)
			for {
				select {
				case e, ok := <-s.entries:
					if !ok {
						return fmt.Errorf("the connection ended before the delivered receipt: %w", s.c.Err())
					}
					mine := (e.IsDelivered() || e.IsRead()) && e.FromUserID == toID && slices.Contains(e.ReceiptFor, res.ClientMsgID)
					if s.hosted && !mine {
						continue
					}
					p.print(e)
					if mine {
						return nil
					}
				case <-ctx.Done():
					return errors.New("stopped before the delivered receipt")
				}
			}
		}),
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&to, "to", "", "handle of the recipient")
	cmd.Flags().StringVar(&file, "file", "", "send this file as media (encrypted, resumable upload, up to the server's --max-media)")
	cmd.Flags().BoolVar(&waitDelivered, "wait-delivered", false, "wait for the delivered receipt (double tick)")
	return cmd
}

// sendError says why a send to a handle failed, in a person's words.
func sendError(to string, err error) error {
	if errors.Is(err, client.ErrNoKeys) {
		return fmt.Errorf("%s has no device with encryption keys yet, so nothing can be encrypted for them; they publish keys when they register or run `courier chat listen`", to)
	}
	return fmt.Errorf("send to %s: %w", to, err)
}

// messageBody is the text a send command sends: its words, or standard
// input when there are none; never nothing. With --file it is nil: the file
// goes as media.
func messageBody(cmd *cobra.Command, args []string, file string) ([]byte, string, error) {
	if file != "" {
		if len(args) > 0 {
			return nil, "", errors.New("give either words or --file, not both")
		}
		return nil, "", nil
	}
	b := []byte(strings.Join(args, " "))
	if len(args) == 0 {
		var err error
		b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxRelayedStdin+1))
		if err != nil {
			return nil, "", fmt.Errorf("read the message from standard input: %w", err)
		}
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, "", errors.New("nothing to send: the message is empty (give some words, text on standard input, or --file)")
	}
	if len(b) > maxRelayedStdin {
		return nil, "", fmt.Errorf("the message is over %d MiB: send it with --file, as media", maxRelayedStdin>>20)
	}
	if !utf8.Valid(b) {
		return b, "application/octet-stream", nil
	}
	return b, "text", nil
}

func newChatListenCmd(f *chatFlags) *cobra.Command {
	var markRead bool
	var saveDir string
	cmd := &cobra.Command{
		Use:   "listen --as <handle>",
		Short: "Print incoming messages and receipts until Ctrl-C",
		Long: `Print incoming messages ("[time] alice: hello") and receipts
("✓✓ delivered <id>", "✓✓ read <id>") until Ctrl-C. Everything printed is
acknowledged to the server, which then tells the senders it was delivered;
--mark-read also sends read receipts (blue ticks).

While it runs, the other chat commands for the same handle (send, group
...) run inside it, over a socket next to the profile, so they never take
its connection away. A lost connection is shown, and so is its return. When
the server ends the session for good (the device was removed, or another
program connected as this device), listen says why and exits non-zero.

Messages are decrypted on this device; one that cannot be decrypted is
shown as such. Files (media) are shown by name and size; with --save-dir
they are downloaded there, checked against their digest and key before a
byte is written, and saved under the sender's file name.`,
		Example: "  courier chat listen --as bob --mark-read --save-dir ~/Downloads/courier",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.host != nil {
				return fmt.Errorf("%s is already listening in another terminal", f.host.names.self.Handle)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			path, err := f.profilePath()
			if err != nil {
				return err
			}
			// Before connecting: a second session of the device would
			// replace the running listener's.
			if conn, _ := dialRelay(path); conn != nil {
				conn.Close()
				return fmt.Errorf("%s is already listening in another terminal: run your commands there, and they are handed to that listener", strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
			}
			out := cmd.OutOrStdout()
			states := make(chan client.ConnEvent, 16)
			s, err := f.open(ctx, client.WithConnStateHandler(func(st client.ConnEvent) {
				select {
				case states <- st:
				default: // the listener is behind; the next state will do
				}
			}))
			if err != nil {
				return err
			}
			defer s.close()
			host := newDeviceHost(s.c, s.names)
			var wg sync.WaitGroup
			stopRelay, err := host.serveRelay(ctx, path, &wg)
			if err != nil {
				return err
			}
			defer wg.Wait()
			defer stopRelay()
			var saver *mediaSaver
			if saveDir != "" {
				if saver, err = newMediaSaver(saveDir, s.c, out); err != nil {
					return err
				}
				defer saver.wait()
			}
			fmt.Fprintf(out, "listening as %s (user id %s); Ctrl-C to stop\n", s.names.self.Handle, s.c.UserID())
			p := newPrinter(out, s.names)
			for {
				select {
				case e, ok := <-s.entries:
					if !ok {
						if ctx.Err() != nil {
							return nil
						}
						return fmt.Errorf("the server ended this session: %w", s.c.Err())
					}
					p.print(e)
					host.publish(e)
					if ref, ok := client.MediaOf(e); ok && saver != nil && e.Kind != courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT {
						saver.save(ctx, ref, s.names.name(e.FromUserID))
					}
					if markRead && (e.IsMessage() || e.IsGroupMessage()) {
						rctx, cancel := context.WithTimeout(ctx, f.timeout)
						var err error
						if e.IsGroupMessage() {
							err = s.c.MarkGroupRead(rctx, e.GroupID, e.GroupSeq)
						} else {
							err = s.c.MarkRead(rctx, e.FromUserID, e.ClientMsgID)
						}
						cancel()
						if err != nil && ctx.Err() == nil {
							fmt.Fprintf(cmd.ErrOrStderr(), "mark read: %v\n", userMessage(err))
						}
					}
				case st := <-states:
					printConnState(cmd.ErrOrStderr(), st)
				case <-ctx.Done():
					return nil
				}
			}
		},
	}
	f.addAs(cmd)
	cmd.Flags().BoolVar(&markRead, "mark-read", false, "send read receipts for the messages printed")
	cmd.Flags().StringVar(&saveDir, "save-dir", "", "download the files (media) that arrive into this directory")
	return cmd
}

func (f *chatFlags) addAs(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.as, "as", "", "your handle (selects the profile)")
}

func (f *chatFlags) options() []client.Option {
	level := slog.LevelError
	if f.verbose {
		level = slog.LevelInfo
	}
	opts := []client.Option{client.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))}
	if f.caFile != "" {
		opts = append(opts, client.WithCAFile(f.caFile))
	}
	return opts
}

// profilePath is the profile file --as or --profile names.
func (f *chatFlags) profilePath() (string, error) {
	if f.as == "" && f.profile == "" {
		return "", errors.New("--as <handle> (or --profile <file>) is required")
	}
	return profilePath(f.profile, f.as)
}

// deviceSession is the device as one command uses it: its client, its
// names, and the entries this command may read.
type deviceSession struct {
	c       *client.Client
	names   *names
	entries <-chan client.Entry
	// hosted: the command runs inside a listener, which shows every entry.
	hosted bool
	close  func()
}

// open connects the profile's device, or, inside a listener, borrows the
// listener's connection.
func (f *chatFlags) open(ctx context.Context, opts ...client.Option) (*deviceSession, error) {
	if h := f.host; h != nil {
		entries, cancel := h.subscribe()
		return &deviceSession{c: h.c, names: h.names, entries: entries, hosted: true, close: cancel}, nil
	}
	path, err := f.profilePath()
	if err != nil {
		return nil, err
	}
	creds, err := loadProfile(path)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	// End-to-end encrypted: the device's Signal keys and sessions live next
	// to its profile, and the server only ever relays ciphertext.
	opts = append(append(f.options(), client.WithE2EE(keysPath(path))), opts...)
	c, err := client.Dial(dctx, creds, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s as %s: %w", creds.BaseURL, creds.Handle, err)
	}
	dir, _ := configDir()
	return &deviceSession{c: c, names: newNames(dir, creds, c), entries: c.Entries(), close: func() { _ = c.Close() }}, nil
}
