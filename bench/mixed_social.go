package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/courier-im/courier/client"
)

// Typing and presence in the mix. Both are ephemeral and best effort (the
// server drops them first under pressure and never stores them), so they
// are counted, not verified.

// socialCounts are the mix's typing and presence figures.
type socialCounts struct {
	typingSent, typingFailed, typingGot atomic.Int64
	subscriptions, presenceGot          atomic.Int64
}

// subscribePresence makes every user's presence visible to everyone and
// subscribes each user to the presence of subs random peers (the chats it
// has open on screen).
func subscribePresence(ctx context.Context, con *console, cfg MixedConfig, clients []*client.Client, conc int, n *socialCounts) error {
	if cfg.PresenceSubs <= 0 {
		return nil
	}
	con.say("subscribing every user to the presence of %d peers", cfg.PresenceSubs)
	err := forEach(ctx, len(clients), conc, func(ctx context.Context, u int) error {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		c := clients[u]
		if err := c.SetPresenceVisibility(ctx, client.VisibleToEveryone); err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(u)+2<<32))
		peers := make([]string, 0, cfg.PresenceSubs)
		for _, p := range rng.Perm(len(clients))[:min(cfg.PresenceSubs+1, len(clients))] {
			if p != u && len(peers) < cfg.PresenceSubs {
				peers = append(peers, clients[p].UserID())
			}
		}
		if err := c.SubscribePresence(ctx, peers...); err != nil {
			return err
		}
		n.subscriptions.Add(int64(len(peers)))
		return nil
	})
	if err != nil {
		return fmt.Errorf("bench: presence: %w", err)
	}
	return nil
}

// countSocial counts the typing and presence events of every client until
// stop closes (the SDK never closes those channels).
func countSocial(clients []*client.Client, n *socialCounts, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-c.Typing():
					n.typingGot.Add(1)
				case <-c.Presence():
					n.presenceGot.Add(1)
				case <-stop:
					return
				}
			}
		}()
	}
	return &wg
}

// typeFirst sends a typing indicator before a message (to a peer, or to a
// group when groupID is set), as an app does while its user types.
func typeFirst(c *client.Client, toUserID, groupID string, n *socialCounts) {
	var err error
	if groupID != "" {
		err = c.SendGroupTyping(groupID, true)
	} else {
		err = c.SendTyping(toUserID, true)
	}
	if err != nil {
		n.typingFailed.Add(1) // no session right now (a forced drop)
		return
	}
	n.typingSent.Add(1)
}
