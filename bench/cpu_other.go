//go:build !unix

package bench

import (
	"errors"
	"time"
)

// selfCPU has no getrusage to read here: the report leaves the bench's CPU
// per message at 0.
func selfCPU() (time.Duration, error) {
	return 0, errors.New("bench: CPU time is measured on Unix only")
}
