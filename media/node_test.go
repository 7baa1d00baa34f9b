package media_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/courier-im/courier/internal/nodetest"
	"github.com/courier-im/courier/media"
	"github.com/courier-im/courier/node"
)

// register makes a user on a node and returns an access token for it.
func register(t *testing.T, base, handle string) string {
	t.Helper()
	post := func(path string, in, out any) {
		t.Helper()
		b, _ := json.Marshal(in)
		resp, err := http.Post(base+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	var reg struct {
		DeviceSecret string `json:"device_secret"`
	}
	post("/v1/register", map[string]string{"handle": handle}, &reg)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	post("/v1/token", map[string]any{"handle": handle, "device_id": 1, "device_secret": reg.DeviceSecret}, &tok)
	return tok.AccessToken
}

func TestMediaThroughTheNodesListenerWithRealTokens(t *testing.T) {
	clk := newClock(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	data := t.TempDir()
	n := nodetest.Start(t, node.Config{DataDir: data, Media: media.Config{Now: clk.Now, SweepInterval: -1}})
	tokens := map[string]string{"alice": register(t, n.URL(), "alice"), "bob": register(t, n.URL(), "bob")}
	h := &harness{t: t, clock: clk, base: n.URL(), client: &http.Client{Timeout: 30 * time.Second},
		dir: filepath.Join(data, "media"), tokens: func(u string) string { return "Bearer " + tokens[u] }}

	payload := randomBytes(t, 700_000)
	digest := h.upload("alice", payload, 256<<10)
	if digest != digestOf(payload) {
		t.Fatalf("published digest %q", digest)
	}
	resp, body := h.do("bob", http.MethodGet, media.Prefix+"blobs/"+digest, map[string]string{"Range": "bytes=-100"}, nil)
	wantStatus(t, "bob's ranged GET", resp, body, http.StatusPartialContent)
	if !bytes.Equal(body, payload[len(payload)-100:]) {
		t.Fatal("bob's last 100 bytes differ")
	}
	onDisk, err := os.ReadFile(filepath.Join(h.dir, "blobs", digest))
	if err != nil || !bytes.Equal(onDisk, payload) {
		t.Fatalf("blob under <data>/media/blobs: %v", err)
	}

	// The gateway's own token check answers.
	tokens["mallory"] = "not-a-token"
	resp, body = h.do("mallory", http.MethodGet, media.Prefix+"blobs/"+digest, nil, nil)
	wantStatus(t, "bad token", resp, body, http.StatusUnauthorized)
	wantJSONError(t, "bad token", body, "UNAUTHENTICATED")
	resp, body = h.do("", http.MethodPost, media.Prefix, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": "1"}, nil)
	wantStatus(t, "no token", resp, body, http.StatusUnauthorized)
	wantJSONError(t, "no token", body, "UNAUTHENTICATED")

	// Bob forwards it: nothing is sent again.
	resp, body = h.create("bob", int64(len(payload)), digest)
	wantStatus(t, "forward", resp, body, http.StatusOK)

	// A graceful stop does not wait for an upload in flight: it is
	// answered 503 and keeps its bytes for the restart.
	path := h.mustCreate("alice", 100, digestOf(randomBytes(t, 100)))
	h.stallPatch(n.URL(), path, 100, make([]byte, 10), http.DefaultClient)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("close with an upload in flight: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("close took %v with an upload in flight", el)
	}
}
