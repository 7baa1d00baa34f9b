package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
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
}

func newChatCmd() *cobra.Command {
	var f chatFlags
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
	var url, handle string
	var force bool
	cmd := &cobra.Command{
		Use:     "register",
		Short:   "Register a user and save its credentials to a profile",
		Example: "  courier chat register --url http://127.0.0.1:8080 --handle alice",
		Args:    cobra.NoArgs,
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
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			creds, err := client.Register(ctx, url, handle, f.options()...)
			if err != nil {
				return err
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
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing profile")
	return cmd
}

func newChatSendCmd(f *chatFlags) *cobra.Command {
	var to string
	var waitDelivered bool
	cmd := &cobra.Command{
		Use:   "send --as <handle> --to <handle> <text>...",
		Short: "Send a text message; prints the single tick (stored) and, with --wait-delivered, the double tick",
		Long: `Send a text message. "stored" is the single tick: the server has the
message durably and will deliver it. --wait-delivered then waits for the
double tick (the recipient's device received it); entries arriving
meanwhile (messages to you, receipts) are printed and count as received.

The text is encrypted for each of the recipient's devices (and your other
devices) before it leaves.`,
		Example: `  courier chat send --as alice --to bob "hello"`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("--to is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, names, err := f.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			sctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			toID, err := names.resolve(sctx, c, to)
			if err != nil {
				return err
			}
			res, err := c.Send(sctx, toID, []byte(strings.Join(args, " ")), client.WithContentType("text"))
			if err != nil {
				return fmt.Errorf("send: %w", err)
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
			for {
				select {
				case e, ok := <-c.Entries():
					if !ok {
						return client.ErrClosed
					}
					printEntry(out, e, names)
					if e.IsDelivered() && e.FromUserID == toID && slices.Contains(e.ReceiptFor, res.ClientMsgID) {
						return nil
					}
				case <-ctx.Done():
					return errors.New("stopped before the delivered receipt")
				}
			}
		},
	}
	f.addAs(cmd)
	cmd.Flags().StringVar(&to, "to", "", "handle of the recipient")
	cmd.Flags().BoolVar(&waitDelivered, "wait-delivered", false, "wait for the delivered receipt (double tick)")
	return cmd
}

func newChatListenCmd(f *chatFlags) *cobra.Command {
	var markRead bool
	cmd := &cobra.Command{
		Use:   "listen --as <handle>",
		Short: "Print incoming messages and receipts until Ctrl-C",
		Long: `Print incoming messages ("[time] alice: hello") and receipts
("✓✓ delivered <id>", "✓✓ read <id>") until Ctrl-C. Everything printed is
acknowledged to the server, which then tells the senders it was delivered;
--mark-read also sends read receipts (blue ticks).

Messages are decrypted on this device; one that cannot be decrypted is
shown as such.`,
		Example: "  courier chat listen --as bob --mark-read",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, names, err := f.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "listening as %s (user id %s); Ctrl-C to stop\n", names.self.Handle, c.UserID())
			for {
				select {
				case e, ok := <-c.Entries():
					if !ok {
						return nil
					}
					printEntry(out, e, names)
					if markRead && (e.IsMessage() || e.IsGroupMessage()) {
						rctx, cancel := context.WithTimeout(ctx, f.timeout)
						var err error
						if e.IsGroupMessage() {
							err = c.MarkGroupRead(rctx, e.GroupID, e.GroupSeq)
						} else {
							err = c.MarkRead(rctx, e.FromUserID, e.ClientMsgID)
						}
						cancel()
						if err != nil && ctx.Err() == nil {
							fmt.Fprintf(cmd.ErrOrStderr(), "mark read: %v\n", err)
						}
					}
				case <-ctx.Done():
					return nil
				}
			}
		},
	}
	f.addAs(cmd)
	cmd.Flags().BoolVar(&markRead, "mark-read", false, "send read receipts for the messages printed")
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

// dial loads the profile named by --as/--profile and connects.
func (f *chatFlags) dial(ctx context.Context) (*client.Client, *names, error) {
	if f.as == "" && f.profile == "" {
		return nil, nil, errors.New("--as <handle> (or --profile <file>) is required")
	}
	path, err := profilePath(f.profile, f.as)
	if err != nil {
		return nil, nil, err
	}
	creds, err := loadProfile(path)
	if err != nil {
		return nil, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	// End-to-end encrypted: the device's Signal keys and sessions live next
	// to its profile, and the server only ever relays ciphertext.
	keys := strings.TrimSuffix(path, filepath.Ext(path)) + ".keys"
	c, err := client.Dial(dctx, creds, append(f.options(), client.WithE2EE(keys))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s as %s: %w", creds.BaseURL, creds.Handle, err)
	}
	dir, _ := configDir()
	return c, &names{dir: dir, self: creds}, nil
}

func configDir() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "courier"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory: %w", err)
	}
	return filepath.Join(home, ".config", "courier"), nil
}

func profilePath(flag, handle string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if handle == "" || strings.ContainsAny(handle, `/\`) || handle == "." || handle == ".." {
		return "", fmt.Errorf("invalid handle %q", handle)
	}
	dir, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, handle+".json"), nil
}

func saveProfile(path string, creds client.Credentials) error {
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return err
	}
	return writePrivate(path, append(b, '\n'))
}

// writePrivate writes a file readable by its owner only, atomically.
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".courier-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func loadProfile(path string) (client.Credentials, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return client.Credentials{}, fmt.Errorf("no profile %s: register first with `courier chat register --handle ...`", path)
	}
	if err != nil {
		return client.Credentials{}, err
	}
	var creds client.Credentials
	if err := json.Unmarshal(b, &creds); err != nil {
		return client.Credentials{}, fmt.Errorf("profile %s: %w", path, err)
	}
	if creds.BaseURL == "" || creds.DeviceSecret == "" || (creds.UserID == "" && creds.Handle == "") {
		return client.Credentials{}, fmt.Errorf("profile %s is incomplete", path)
	}
	return creds, nil
}

// names turns user ids into handles for display. The server can look up a
// handle but not (yet) name a user id, so it knows the handles of local
// profiles and of users looked up before (contacts.json), and falls back to
// the user id.
type names struct {
	dir    string
	self   client.Credentials
	loaded bool
	byID   map[string]string
	byName map[string]string
}

const contactsFile = "contacts.json"

func (n *names) load() {
	if n.loaded {
		return
	}
	n.loaded = true
	n.byID, n.byName = map[string]string{}, map[string]string{}
	if n.self.UserID != "" {
		n.byID[n.self.UserID] = n.self.Handle
	}
	if n.dir == "" {
		return
	}
	if b, err := os.ReadFile(filepath.Join(n.dir, contactsFile)); err == nil {
		_ = json.Unmarshal(b, &n.byName)
	}
	for h, id := range n.byName {
		n.byID[id] = h
	}
	profiles, _ := filepath.Glob(filepath.Join(n.dir, "*.json"))
	for _, p := range profiles {
		if filepath.Base(p) == contactsFile {
			continue
		}
		if c, err := loadProfile(p); err == nil && c.UserID != "" && c.BaseURL == n.self.BaseURL {
			n.byID[c.UserID] = c.Handle
		}
	}
}

// name returns a handle for id, or id itself.
func (n *names) name(id string) string {
	if id == n.self.UserID {
		return n.self.Handle
	}
	n.load()
	if h, ok := n.byID[id]; ok {
		return h
	}
	return id
}

// resolve looks a handle up on the server and remembers it.
func (n *names) resolve(ctx context.Context, c *client.Client, handle string) (string, error) {
	id, err := c.LookupHandle(ctx, handle)
	if client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		return "", fmt.Errorf("no user with handle %q", handle)
	}
	if err != nil {
		return "", err
	}
	n.load()
	if n.byName[handle] != id {
		n.byName[handle] = id
		n.byID[id] = handle
		if n.dir != "" {
			if b, err := json.MarshalIndent(n.byName, "", "  "); err == nil {
				_ = writePrivate(filepath.Join(n.dir, contactsFile), append(b, '\n'))
			}
		}
	}
	return id, nil
}

func printEntry(w io.Writer, e client.Entry, n *names) {
	at := e.SentAt.Local().Format(time.TimeOnly)
	switch e.Kind {
	case courierpb.EntryKind_ENTRY_KIND_MESSAGE:
		fmt.Fprintf(w, "[%s] %s: %s\n", at, n.name(e.FromUserID), body(e))
	case courierpb.EntryKind_ENTRY_KIND_SENT_TRANSCRIPT:
		fmt.Fprintf(w, "[%s] you → %s: %s\n", at, n.name(e.ToUserID), body(e))
	case courierpb.EntryKind_ENTRY_KIND_IDENTITY_CHANGED:
		fmt.Fprintf(w, "[%s] ⚠ %s's safety number changed (device %d has a new identity key)\n", at, n.name(e.FromUserID), e.FromDeviceID)
	case courierpb.EntryKind_ENTRY_KIND_PREKEYS_LOW:
		// The client uploads more keys by itself.
	case courierpb.EntryKind_ENTRY_KIND_DELIVERED:
		for _, id := range e.ReceiptFor {
			fmt.Fprintf(w, "✓✓ delivered %s (to %s)\n", id, n.name(e.FromUserID))
		}
	case courierpb.EntryKind_ENTRY_KIND_READ:
		for _, id := range e.ReceiptFor {
			fmt.Fprintf(w, "✓✓ read %s (by %s)\n", id, n.name(e.FromUserID))
		}
	case courierpb.EntryKind_ENTRY_KIND_GROUP_MESSAGE, courierpb.EntryKind_ENTRY_KIND_GROUP_EVENT,
		courierpb.EntryKind_ENTRY_KIND_GROUP_DELIVERED, courierpb.EntryKind_ENTRY_KIND_GROUP_READ:
		printGroupEntry(w, e, n)
	default:
		fmt.Fprintf(w, "[%s] entry %d of kind %v from %s\n", at, e.Seq, e.Kind, n.name(e.FromUserID))
	}
}

// body is what a message says: its decrypted text, or why it has none.
func body(e client.Entry) string {
	switch {
	case e.DecryptErr != nil:
		return "⚠ cannot decrypt: " + e.DecryptErr.Error()
	case e.Plaintext != nil:
		return text(e.Plaintext)
	default:
		return text(e.Ciphertext)
	}
}

// text shows a payload as text, or says what it is when it is not UTF-8.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return fmt.Sprintf("<%d bytes, not text>", len(b))
}
