package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/courier-im/courier/protos/courierpb"
)

// WebSocket close codes the gateway uses beyond RFC 6455's.
const (
	// CloseSlowConsumer: the session's send queue overflowed; reconnect and
	// resume from the inbox.
	CloseSlowConsumer = 4008
	// CloseAbuse: too many malformed or refused frames.
	CloseAbuse = 4009
	// CloseReplaced: the device opened a newer session.
	CloseReplaced = 4010
	// CloseUnavailable: the user's inbox could not be attached; retry later.
	CloseUnavailable = 4011
	// CloseUnauthorized: the token's user or device does not exist.
	CloseUnauthorized = 4001
	// CloseIdle: nothing arrived for the idle timeout (clients ping every 30s).
	CloseIdle = 4000
)

// httpError is the JSON body of every non-2xx HTTP answer.
type httpError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code courierpb.ErrorCode, msg string) {
	writeJSON(w, status, httpError{Code: code.String(), Message: msg})
}

func frameError(reqID uint64, code courierpb.ErrorCode, msg string, retryable bool) *courierpb.ServerFrame {
	return &courierpb.ServerFrame{ReqId: reqID, Body: &courierpb.ServerFrame_Error{Error: &courierpb.Error{
		Code: code, Message: msg, Retryable: retryable,
	}}}
}
