package admin_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/courier-im/courier/admin"
	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/node"
)

func TestAdminAPIAnswersOnlyWithItsToken(t *testing.T) {
	n := nodetest.Start(t, node.Config{AdminToken: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name, token string
	}{{"no token", ""}, {"wrong token", "guess"}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &admin.Client{URL: n.URL(), Token: tc.token}
			if _, err := c.Members(ctx); !errors.Is(err, admin.ErrUnauthorized) {
				t.Fatalf("members with %s: err = %v, want ErrUnauthorized", tc.name, err)
			}
		})
	}

	c := &admin.Client{URL: n.URL(), Token: "s3cret"}
	members, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 1 || !members.Members[0].Self || members.Members[0].Meta["gateway"] != n.URL() {
		t.Fatalf("members = %+v, want this node alone, with its gateway URL", members)
	}
	where, err := c.Where(ctx, "user", "someone")
	if err != nil {
		t.Fatal(err)
	}
	if !where.Owner.Self {
		t.Fatalf("a single node must own every user: %+v", where)
	}
	if _, err := c.Where(ctx, "planet", "x"); err == nil {
		t.Fatal("where accepted an unknown kind")
	}
	grains, err := c.Grains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(grains.Members) != 1 || grains.Members[0].Error != "" {
		t.Fatalf("grains = %+v", grains)
	}
	stats, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.RSSBytes == 0 || stats.Goroutines == 0 || stats.CPUSeconds <= 0 {
		t.Fatalf("stats without process figures: %+v", stats)
	}
}

func TestNodeWithoutAdminTokenServesNoAdminAPI(t *testing.T) {
	n := nodetest.Start(t, node.Config{})
	resp, err := http.Get(n.URL() + "/v1/admin/members")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
	if _, err := admin.Handler(n.Cluster(), "", nil); err == nil {
		t.Fatal("an admin handler without a token was built")
	}
}
