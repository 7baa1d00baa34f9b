package scylla

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/gocql/gocql"

	"github.com/courier-im/courier/persistence"
)

// Error codes of the CQL native protocol (section 9 of the spec) that mean
// "the statement is wrong" rather than "the database could not do it now".
const (
	cqlErrSyntax        = 0x2000
	cqlErrUnauthorized  = 0x2100
	cqlErrInvalid       = 0x2200
	cqlErrConfig        = 0x2300
	cqlErrAlreadyExists = 0x2400
	cqlErrProtocol      = 0x000A
	cqlErrCredentials   = 0x0100
)

// isUnavailable reports whether err means the database did not do the
// operation now (and a retry later may succeed): no connection, timeouts,
// too few replicas, overload, a node bootstrapping. Such outcomes are
// unknown (a timed-out write may still be applied), which is why every
// write here is idempotent.
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, persistence.ErrUnavailable) {
		return true
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var reqErr gocql.RequestError
	if errors.As(err, &reqErr) {
		switch reqErr.Code() {
		case cqlErrSyntax, cqlErrUnauthorized, cqlErrInvalid, cqlErrConfig, cqlErrAlreadyExists, cqlErrProtocol, cqlErrCredentials:
			return false
		}
		// Unavailable, overloaded, bootstrapping, read/write timeouts and
		// failures, CAS write unknown, server errors.
		return true
	}
	switch {
	case errors.Is(err, gocql.ErrNoConnections),
		errors.Is(err, gocql.ErrConnectionClosed),
		errors.Is(err, gocql.ErrTimeoutNoResponse),
		errors.Is(err, gocql.ErrNoStreams),
		errors.Is(err, gocql.ErrHostDown),
		errors.Is(err, gocql.ErrNoConnectionsInPool),
		errors.Is(err, gocql.ErrNoConnectionsStarted),
		errors.Is(err, gocql.ErrHostQueryFailed),
		errors.Is(err, gocql.ErrUnavailable):
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr)
}

// classify maps a driver error onto the persistence sentinels callers
// branch on, keeping the driver's error in the chain for logs.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gocql.ErrNotFound):
		return persistence.ErrNotFound
	case errors.Is(err, persistence.ErrNotFound), errors.Is(err, persistence.ErrClosed),
		errors.Is(err, persistence.ErrUnavailable), errors.Is(err, persistence.ErrHandleTaken):
		return err
	case isUnavailable(err):
		return fmt.Errorf("%w: %w", persistence.ErrUnavailable, err)
	}
	return err
}
