package bench

import (
	"fmt"
	"time"
)

// Traffic is what every message-sending scenario (direct, fanout, mixed,
// storm) shares: the size of what it sends and how long it waits for what
// is still missing at the end.
type Traffic struct {
	// PayloadSize is the ciphertext size in bytes (default 64, at least 16).
	PayloadSize int
	// StallTimeout gives up waiting for the last deliveries when none
	// arrived for this long after the last send (default 1 min).
	StallTimeout time.Duration
	// ServerPIDs are local server processes whose CPU time per message
	// the report gives beside the bench's own.
	ServerPIDs []int
}

const defaultStall = time.Minute

func (t Traffic) withDefaults() (Traffic, error) {
	t.PayloadSize = orDefault(t.PayloadSize, 64)
	if t.PayloadSize < payloadHeader {
		return t, fmt.Errorf("bench: payload size must be at least %d bytes", payloadHeader)
	}
	return t, nil
}

func (t Traffic) stall() time.Duration { return orDefault(t.StallTimeout, defaultStall) }
