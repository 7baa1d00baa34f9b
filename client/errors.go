package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/courier-im/courier/protos/courierpb"
)

// ErrClosed is returned by calls on a closed Client, and by calls still
// waiting when it closes.
var ErrClosed = errors.New("courier client closed")

// ErrNotConnected: a best-effort call (typing) found no open session.
var ErrNotConnected = errors.New("courier client not connected")

// Error is an error the server answered with: an Error frame on the socket
// or a JSON error body of the HTTP API. Use errors.As to inspect it.
type Error struct {
	Code    courierpb.ErrorCode
	Message string
	// Retryable: the same request may succeed if sent again later.
	Retryable bool
	// HTTPStatus is the status of an HTTP API answer; 0 for socket errors.
	HTTPStatus int
	// Mismatch is set with MISMATCHED_DEVICES: which devices of which user
	// a per-device send missed or named wrongly.
	Mismatch *courierpb.MismatchedDevices
}

func (e *Error) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("courier: %s (HTTP %d): %s", e.Code, e.HTTPStatus, e.Message)
	}
	return fmt.Sprintf("courier: %s: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, &client.Error{Code: X}) match any Error with code X.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// IsCode reports whether err is a server *Error with the given code.
func IsCode(err error, code courierpb.ErrorCode) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func errorFromProto(p *courierpb.Error) *Error {
	return &Error{Code: p.GetCode(), Message: p.GetMessage(), Retryable: p.GetRetryable(), Mismatch: p.GetMismatch()}
}

// errorFromHTTP reads the API's {"code","message"} body of a non-2xx answer.
func errorFromHTTP(resp *http.Response) *Error {
	e := &Error{HTTPStatus: resp.StatusCode, Code: courierpb.ErrorCode_ERROR_CODE_UNSPECIFIED}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	var b struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &b) == nil && b.Code != "" {
		e.Code = courierpb.ErrorCode(courierpb.ErrorCode_value[b.Code])
		e.Message = b.Message
	} else {
		e.Message = http.StatusText(resp.StatusCode)
		if len(body) > 0 {
			e.Message += ": " + string(body)
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			e.Code = courierpb.ErrorCode_UNAUTHENTICATED
		case http.StatusNotFound:
			e.Code = courierpb.ErrorCode_NOT_FOUND
		case http.StatusTooManyRequests:
			e.Code = courierpb.ErrorCode_RATE_LIMITED
		case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
			e.Code = courierpb.ErrorCode_UNAVAILABLE
		}
	}
	switch e.Code {
	case courierpb.ErrorCode_UNAVAILABLE, courierpb.ErrorCode_RATE_LIMITED:
		e.Retryable = true
	}
	if resp.StatusCode >= 500 && e.Code != courierpb.ErrorCode_INTERNAL {
		e.Retryable = true
	}
	return e
}

// retryableErr reports whether err is a server error worth retrying.
func retryableErr(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}
