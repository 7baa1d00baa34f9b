//go:build !race

package cluster

import "time"

// Activation-scale sizes without the race detector: the numbers the design
// promises (1 M grains, 100 k passivating at once, probe p99 < 50 ms).
const (
	scaleGrains      = 1_000_000
	scalePassivated  = 100_000
	scaleProbeP99Max = 50 * time.Millisecond
)
