package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/courier-im/courier/protos/courierpb"
)

// ErrClosed is returned by calls on a closed Client, and by calls still
// waiting when it closes.
var ErrClosed = errors.New("courier client closed")

// ErrNotConnected: a best-effort call (typing) found no open session.
var ErrNotConnected = errors.New("courier client not connected")

// ErrReplaced: another connection of the same device took over its inbox
// (close code 4010). The Client stops instead of taking the inbox back;
// Err wraps it.
var ErrReplaced = errors.New("another connection of this device took over its inbox (is `courier chat listen` running for this user in another terminal?)")

// ErrUnauthorized: the server no longer accepts this device (it was
// unlinked, its user is gone, or its credentials are wrong). The Client
// stops; Err wraps it.
var ErrUnauthorized = errors.New("the server no longer accepts this device: it was unlinked or its credentials are wrong")

// ErrTooLarge matches (with errors.Is) every refusal of a message larger
// than the server takes in one frame: an *Error of code TOO_LARGE. The
// request is not retried; send large files as media instead.
var ErrTooLarge error = &Error{Code: courierpb.ErrorCode_TOO_LARGE, Message: "frame too large"}

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
	// RetryAfter is set with RATE_LIMITED: the least wait before the same
	// request can pass (the socket's retry_after_ms, HTTP's Retry-After).
	// The Client's own retries wait at least this long.
	RetryAfter time.Duration
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
	return &Error{Code: p.GetCode(), Message: p.GetMessage(), Retryable: p.GetRetryable(), Mismatch: p.GetMismatch(),
		RetryAfter: time.Duration(p.GetRetryAfterMs()) * time.Millisecond}
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
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
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

// tooLarge is the refusal of a frame of size bytes. limit is the server's
// frame limit (0: unknown); closed: the server ended the session over it.
func tooLarge(size, limit int64, closed bool) *Error {
	var msg string
	switch {
	case limit > 0:
		msg = fmt.Sprintf("message is %s; the server takes at most %s per frame (send large files as media)", byteSize(size, true), byteSize(limit, false))
	case closed:
		msg = fmt.Sprintf("message is %s; the server closed the connection rather than read a frame that large (send large files as media)", byteSize(size, true))
	default:
		msg = fmt.Sprintf("message is %s; the server refused it as too large for one frame (send large files as media)", byteSize(size, true))
	}
	return &Error{Code: courierpb.ErrorCode_TOO_LARGE, Message: msg}
}

// byteSize formats n for people: bytes, KiB (rounded up when up, so a
// frame just over a limit never reads as the limit) or MiB.
func byteSize(n int64, up bool) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		k := n >> 10
		if up && n%(1<<10) != 0 {
			k++
		}
		return strconv.FormatInt(k, 10) + " KiB"
	default:
		return strconv.FormatInt(n, 10) + " bytes"
	}
}

// limitFromMessage reads the limit out of a gateway's TOO_LARGE message
// ("frame is N bytes, limit L"); 0 when it names none.
func limitFromMessage(msg string) int64 {
	i := strings.LastIndex(msg, "limit ")
	if i < 0 {
		return 0
	}
	rest := msg[i+len("limit "):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	n, err := strconv.ParseInt(rest[:end], 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}
