package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

// A verification code's challenge waits next to the profile it is for
// (<handle>.pending, mode 0600) between `register --address` and
// `register --code`, which may be two runs: the code arrives by text or
// mail, after the first has ended.
func pendingPath(profile string) string {
	return strings.TrimSuffix(profile, filepath.Ext(profile)) + ".pending"
}

// requestRegistrationCode asks the server to send a code to address and
// keeps its challenge, then asks the person for the code. sent is false
// when the server has open registration (no code needed); code is empty
// when the person gave none (standard input ended), and the command says
// how to finish.
func requestRegistrationCode(ctx context.Context, cmd *cobra.Command, url, handle, address, profile string, opts []client.Option) (code string, sent bool, err error) {
	errOut := cmd.ErrOrStderr()
	ch, err := client.RequestCode(ctx, url, handle, address, opts...)
	if client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		fmt.Fprintln(errOut, "this server has open registration: no code is needed")
		return "", false, nil
	}
	if err != nil {
		return "", false, errors.New(userMessage(err))
	}
	b, err := json.Marshal(ch)
	if err != nil {
		return "", true, err
	}
	if err := writePrivate(pendingPath(profile), append(b, '\n')); err != nil {
		return "", true, fmt.Errorf("a code is on its way to %s, but its challenge could not be kept: %w", address, err)
	}
	fmt.Fprintf(errOut, "a code is on its way to %s (valid until %s)\n", address, ch.ExpiresAt.Local().Format(time.Kitchen))
	fmt.Fprint(errOut, "code: ")
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if line = strings.TrimSpace(line); line != "" {
		return line, true, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", true, fmt.Errorf("read the code: %w", err)
	}
	fmt.Fprintf(errOut, "\nno code given; when it arrives: courier chat register --handle %s --code <code>\n", handle)
	return "", true, nil
}

// loadPendingCode is the challenge a `register --address` kept for handle.
func loadPendingCode(path, handle string) (client.CodeChallenge, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return client.CodeChallenge{}, fmt.Errorf("no code was requested for %s: run `courier chat register --handle %s --address <phone or e-mail>` first", handle, handle)
	}
	if err != nil {
		return client.CodeChallenge{}, err
	}
	var p client.CodeChallenge
	if err := json.Unmarshal(b, &p); err != nil || p.Challenge == "" {
		return client.CodeChallenge{}, fmt.Errorf("%s is not a pending code (remove it and request a new code): %v", path, err)
	}
	if p.Handle != handle {
		return client.CodeChallenge{}, fmt.Errorf("the code requested at %s was for %s, not %s", path, p.Handle, handle)
	}
	if time.Now().After(p.ExpiresAt) {
		return client.CodeChallenge{}, fmt.Errorf("the code for %s expired at %s: request a new one with --address", handle, p.ExpiresAt.Local().Format(time.Kitchen))
	}
	return p, nil
}
