package node_test

import (
	"testing"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/node"
)

// An idle attached session renews its lease through the gateway's renewer,
// which keeps its user's grain from passivating; once it closes, the grain
// passivates.
func TestIdleSessionKeepsItsGrainActive(t *testing.T) {
	const passivate = 300 * time.Millisecond // sessions renew every 100ms
	n := startNode(t, func(c *node.Config) { c.PassivateAfter = passivate })
	users := func() int { return n.Cluster().Activations()[actors.KindUser] }
	a := register(t, n.URL(), "alice")
	w := dial(t, n.URL(), a.Token, 0)
	w.attached()
	for end := time.Now().Add(6 * passivate); time.Now().Before(end); time.Sleep(passivate / 6) {
		if users() != 1 {
			t.Fatalf("%d user grains while alice is connected, want 1", users())
		}
	}
	_ = w.c.Close()
	for deadline := time.Now().Add(10 * passivate); users() != 0; time.Sleep(passivate / 6) {
		if time.Now().After(deadline) {
			t.Fatalf("%d user grains long after alice left, want 0", users())
		}
	}
}
