package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/internal/lockedbuf"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
	"github.com/courier-im/courier/protos/courierpb"
)

// chatEnv is a person at a terminal: a config directory of their own.
type chatEnv struct {
	t   *testing.T
	url string
}

func newChatEnv(t *testing.T) *chatEnv {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	n := nodetest.Start(t, node.Config{})
	return &chatEnv{t: t, url: n.URL()}
}

// run runs `courier chat ARGS` to its end with stdin, as main would.
func (e *chatEnv) run(stdin string, args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := newChatCmd()
	var out lockedbuf.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// must runs a command that has to succeed.
func (e *chatEnv) must(args ...string) string {
	e.t.Helper()
	out, err := e.run("", args...)
	if err != nil {
		e.t.Fatalf("courier chat %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// listener is `courier chat listen` running in the background.
type listener struct {
	out    *lockedbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

func (e *chatEnv) listen(args ...string) *listener {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{out: &lockedbuf.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	cmd := newChatCmd()
	cmd.SetOut(l.out)
	cmd.SetErr(l.out)
	cmd.SetArgs(append([]string{"listen"}, args...))
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	go func() { l.done <- cmd.ExecuteContext(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			e.t.Error("listener did not stop")
		}
	})
	l.waitFor(e.t, "listening as")
	return l
}

// waitFor waits until the listener printed text.
func (l *listener) waitFor(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.out.String(), text) {
		select {
		case err := <-l.done:
			t.Fatalf("listener ended (%v) before printing %q:\n%s", err, text, l.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener did not print %q:\n%s", text, l.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *listener) running() bool {
	select {
	case err := <-l.done:
		l.done <- err
		return false
	default:
		return true
	}
}

// TestCommandsOfAHandleRunInsideItsListener: with `chat listen --as bob`
// running, every other command as bob (reading or sending) runs inside
// that listener instead of opening a second session of bob's device, which
// would replace the listener's. Found by a newcomer following the README.
func TestCommandsOfAHandleRunInsideItsListener(t *testing.T) {
	e := newChatEnv(t)
	e.must("register", "--url", e.url, "--handle", "alice")
	e.must("register", "--url", e.url, "--handle", "bob")
	bob := e.listen("--as", "bob", "--mark-read")

	e.must("group", "create", "--as", "alice", "--subject", "hikers", "bob")
	bob.waitFor(t, `alice created "hikers"`)
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"group", "list", "--as", "bob"}, `"hikers"`},
		{[]string{"group", "info", "--as", "bob", "--group", "hikers"}, "alice"},
		{[]string{"send", "--as", "bob", "--to", "alice", "hi", "alice"}, "✓ stored"},
		{[]string{"group", "send", "--as", "bob", "--group", "hikers", "bob here"}, "✓ stored"},
		{[]string{"send", "--as", "alice", "--to", "bob", "--wait-delivered", "hello bob"}, "✓✓ delivered"},
	}
	for _, st := range steps {
		out := e.must(st.args...)
		if !strings.Contains(out, st.want) {
			t.Errorf("chat %s printed %q, want it to contain %q", strings.Join(st.args, " "), out, st.want)
		}
		if !bob.running() {
			t.Fatalf("chat %s ended bob's listener:\n%s", strings.Join(st.args, " "), bob.out.String())
		}
	}
	bob.waitFor(t, "alice: hello bob")

	if out, err := e.run("", "listen", "--as", "bob"); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("a second listener of bob: err = %v, output %q; want 'already listening'", err, out)
	}
	// Alice's own listener shows bob's message, and takes her commands
	// too, with the body on standard input.
	alice := e.listen("--as", "alice")
	e.must("send", "--as", "bob", "--to", "alice", "are you there")
	alice.waitFor(t, "bob: are you there")
	if out, err := e.run("from a pipe\n", "send", "--as", "alice", "--to", "bob"); err != nil || !strings.Contains(out, "✓ stored") {
		t.Fatalf("send from stdin through a listener: %v\n%s", err, out)
	}
	bob.waitFor(t, "alice: from a pipe")
	if !bob.running() || !alice.running() {
		t.Fatal("a listener ended")
	}
}

// TestListenerEndedByTheServerSaysWhyAndFails: when another program
// connects as the same device, the server ends the listener's session; the
// listener says so and exits non-zero instead of stopping quietly.
func TestListenerEndedByTheServerSaysWhyAndFails(t *testing.T) {
	e := newChatEnv(t)
	e.must("register", "--url", e.url, "--handle", "bob")
	bob := e.listen("--as", "bob")
	dir, err := configDir()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := loadProfile(filepath.Join(dir, "bob.json"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := client.Dial(ctx, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	select {
	case err := <-bob.done:
		if err == nil || !errors.Is(err, client.ErrReplaced) {
			t.Fatalf("listener ended with %v, want an error wrapping client.ErrReplaced", err)
		}
		bob.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("listener kept running after its session was replaced")
	}
}

// TestSendRefusesAnEmptyMessageInPlainWords: nothing is sent, and the error
// says what to do without SDK prefixes or wire codes.
func TestSendRefusesAnEmptyMessageInPlainWords(t *testing.T) {
	e := newChatEnv(t)
	e.must("register", "--url", e.url, "--handle", "alice")
	e.must("register", "--url", e.url, "--handle", "bob")
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"empty word", "", []string{"send", "--as", "alice", "--to", "bob", ""}},
		{"blank stdin", " \n", []string{"send", "--as", "alice", "--to", "bob"}},
		{"empty group message", "", []string{"group", "send", "--as", "alice", "--group", "x", "  "}},
	} {
		_, err := e.run(tc.stdin, tc.args...)
		if err == nil || !strings.Contains(userMessage(err), "nothing to send") || strings.Contains(userMessage(err), "courier:") {
			t.Errorf("%s: err = %v, want 'nothing to send' without a courier: prefix", tc.name, err)
		}
	}
}

// TestFileSentAsMediaIsSavedByTheListener: `send --file` encrypts and
// uploads the file and sends its key in the message; `listen --save-dir`
// downloads, verifies and saves it under the sender's file name, for 1:1
// and group sends, whether or not the sender's own listener runs.
func TestFileSentAsMediaIsSavedByTheListener(t *testing.T) {
	e := newChatEnv(t)
	e.must("register", "--url", e.url, "--handle", "alice")
	e.must("register", "--url", e.url, "--handle", "bob")
	saveDir := t.TempDir()
	bob := e.listen("--as", "bob", "--save-dir", saveDir)

	src := t.TempDir()
	photo := make([]byte, 300<<10) // over one message frame: only media carries it
	for i := range photo {
		photo[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(src, "photo.jpg"), photo, 0o600); err != nil {
		t.Fatal(err)
	}
	out := e.must("send", "--as", "alice", "--to", "bob", "--file", filepath.Join(src, "photo.jpg"))
	if !strings.Contains(out, "✓ stored") || !strings.Contains(out, "upload photo.jpg:") {
		t.Fatalf("send --file printed %q", out)
	}
	bob.waitFor(t, "alice: 📎 photo.jpg (300.0 KiB, image/jpeg)")
	bob.waitFor(t, "saved 📎 photo.jpg")
	got, err := os.ReadFile(filepath.Join(saveDir, "photo.jpg"))
	if err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("saved photo.jpg: %d bytes, err %v; want the %d bytes sent", len(got), err, len(photo))
	}

	// The same file again, to a group, from inside Alice's listener: the
	// blob exists, so it is not uploaded twice, and it is saved beside.
	alice := e.listen("--as", "alice")
	e.must("group", "create", "--as", "alice", "--subject", "pics", "bob")
	e.must("group", "send", "--as", "alice", "--group", "pics", "--file", filepath.Join(src, "photo.jpg"))
	bob.waitFor(t, "#pics alice: 📎 photo.jpg")
	bob.waitFor(t, "photo (1).jpg")
	if got, err := os.ReadFile(filepath.Join(saveDir, "photo (1).jpg")); err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("second copy: %d bytes, err %v", len(got), err)
	}
	if !alice.running() || !bob.running() {
		t.Fatal("a listener ended")
	}
}

// TestUserMessageDropsSDKPrefixesAndNamesWhatToDo: a server refusal reads
// as one sentence with a hint, not "courier: courier: CODE: ...".
func TestUserMessageDropsSDKPrefixesAndNamesWhatToDo(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&client.Error{Code: courierpb.ErrorCode_INVALID_ARGUMENT, Message: "a message needs a ciphertext"}, "a message needs a ciphertext"},
		{errors.Join(errors.New("send to bob"), &client.Error{Code: courierpb.ErrorCode_RATE_LIMITED, Message: "slow down"}),
			"send to bob\nslow down (too many requests: wait a moment and try again)"},
		{errors.New("plain"), "plain"},
	}
	for _, tc := range tests {
		if got := userMessage(tc.err); got != tc.want {
			t.Errorf("userMessage(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestReceiptsShowInTheOrderTicksMakeSense: a read receipt that overtakes
// its delivered receipt shows "delivered" first, and the late delivered
// receipt is not shown again.
func TestReceiptsShowInTheOrderTicksMakeSense(t *testing.T) {
	self := client.Credentials{UserID: "u-alice", Handle: "alice"}
	n := newNames("", self, nil)
	n.loaded, n.byID = true, map[string]string{"u-alice": "alice", "u-bob": "bob"}
	delivered := func(ids ...string) client.Entry {
		return client.Entry{Kind: courierpb.EntryKind_ENTRY_KIND_DELIVERED, FromUserID: "u-bob", ReceiptFor: ids}
	}
	read := func(ids ...string) client.Entry {
		return client.Entry{Kind: courierpb.EntryKind_ENTRY_KIND_READ, FromUserID: "u-bob", ReceiptFor: ids}
	}
	tests := []struct {
		name    string
		entries []client.Entry
		want    string
	}{
		{"in order", []client.Entry{delivered("m1"), read("m1")},
			"✓✓ delivered m1 (to bob)\n✓✓ read m1 (by bob)\n"},
		{"read overtakes delivered", []client.Entry{read("m1"), delivered("m1")},
			"✓✓ delivered m1 (to bob)\n✓✓ read m1 (by bob)\n"},
		{"a receipt for two", []client.Entry{delivered("m1"), read("m1", "m2"), delivered("m2")},
			"✓✓ delivered m1 (to bob)\n✓✓ read m1 (by bob)\n✓✓ delivered m2 (to bob)\n✓✓ read m2 (by bob)\n"},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		p := newPrinter(&out, n)
		for _, e := range tc.entries {
			p.print(e)
		}
		if out.String() != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, out.String(), tc.want)
		}
	}
}

// TestSavedFileNamesNeverLeaveTheSaveDirectory: a file name is the
// sender's word; whatever it says, the file lands in the save directory
// under a plain visible name.
func TestSavedFileNamesNeverLeaveTheSaveDirectory(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	tests := []struct{ name, contentType, want string }{
		{"photo.jpg", "image/jpeg", "photo.jpg"},
		{"../../etc/passwd", "text/plain", "passwd"},
		{`..\..\boot.ini`, "text/plain", "boot.ini"},
		{"/abs/path/x.bin", "", "x.bin"},
		{".bashrc", "text/plain", "media-abababababab.asc"},
		{"..", "", "media-abababababab"},
		{"", "", "media-abababababab"},
	}
	for _, tc := range tests {
		got := safeFileName(client.MediaRef{FileName: tc.name, ContentType: tc.contentType, Digest: digest})
		if tc.contentType == "text/plain" && strings.HasPrefix(tc.want, "media-") {
			// The extension comes from the system's MIME table.
			if !strings.HasPrefix(got, "media-abababababab") || strings.Contains(got, "/") {
				t.Errorf("safeFileName(%q) = %q", tc.name, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("safeFileName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestProgressLinesSayBytesRateAndTimeLeft: off a terminal, progress is a
// line now and then and one when done, never a line about nothing.
func TestProgressLinesSayBytesRateAndTimeLeft(t *testing.T) {
	var out bytes.Buffer
	p := newProgressBar(&out, "upload a.bin", false)
	p.update(0, 4<<20)
	p.update(1<<20, 4<<20) // the first real progress is shown
	p.update(2<<20, 4<<20) // within 2 s of the last line: not shown
	p.update(4<<20, 4<<20) // done: shown
	p.finish(nil)          // nothing new to say
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[0], "upload a.bin: 1.0 MiB of 4.0 MiB (25%)") || !strings.Contains(lines[0], "left") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "upload a.bin: 4.0 MiB in ") {
		t.Errorf("last line %q", lines[1])
	}
}
