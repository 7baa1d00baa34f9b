package main

import (
	"errors"
	"strings"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

// userMessage says what went wrong in a person's words: the SDK's
// "courier:" prefixes and wire codes are for programs, and main adds the
// one prefix a command's error gets.
func userMessage(err error) string {
	msg := err.Error()
	var ce *client.Error
	if errors.As(err, &ce) {
		text := ce.Message
		if hint := codeHints[ce.Code]; hint != "" {
			text += " (" + hint + ")"
		}
		msg = strings.Replace(msg, ce.Error(), text, 1)
	}
	return strings.ReplaceAll(msg, "courier: ", "")
}

// codeHints say what a person can do about a server's answer.
var codeHints = map[courierpb.ErrorCode]string{
	courierpb.ErrorCode_UNAUTHENTICATED:     "the server does not know this device: was it removed, or the server's data reset? register again",
	courierpb.ErrorCode_RATE_LIMITED:        "too many requests: wait a moment and try again",
	courierpb.ErrorCode_UNAVAILABLE:         "the server is busy or restarting: try again",
	courierpb.ErrorCode_HANDLE_TAKEN:        "pick another handle",
	courierpb.ErrorCode_VERIFICATION_FAILED: "this server verifies registrations: get a code with --address <phone or e-mail>, then type it or pass --code",
}
