package media

import (
	"encoding/json"
	"net/http"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/courier-im/courier/protos/courierpb"
)

// apiError is the JSON body of every error media answers itself, the same
// shape as the rest of the API ({"code":"NOT_FOUND","message":"..."}).
// Errors tusd answers (409 offset mismatch, 413 too large, 412 bad
// Tus-Resumable) keep tusd's plain-text body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func errorBody(code courierpb.ErrorCode, msg string) string {
	b, _ := json.Marshal(apiError{Code: code.String(), Message: msg})
	return string(b) + "\n"
}

func writeError(w http.ResponseWriter, status int, code courierpb.ErrorCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(errorBody(code, msg)))
}

// tusError is an error a tusd callback returns: tusd writes its response
// as it is.
func tusError(status int, code courierpb.ErrorCode, msg string, header handler.HTTPHeader) handler.Error {
	if header == nil {
		header = handler.HTTPHeader{}
	}
	header["Content-Type"] = "application/json"
	return handler.Error{
		ErrorCode:    code.String(),
		Message:      msg,
		HTTPResponse: handler.HTTPResponse{StatusCode: status, Body: errorBody(code, msg), Header: header},
	}
}

var (
	errNotFound    = tusError(http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such upload", nil)
	errUnavailable = tusError(http.StatusServiceUnavailable, courierpb.ErrorCode_UNAVAILABLE, "storage unavailable, retry later", nil)
	errDiskFull    = tusError(http.StatusInsufficientStorage, courierpb.ErrorCode_UNAVAILABLE, "the server's disk is full: the bytes received so far are kept, resume later", nil)
)
