package e2e_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The operator's rotation, end to end with the binary: `courier
// token-keys rotate` on the node's key file and SIGHUP. The token issued
// before keeps working and new tokens name the new key; after a rotation
// that keeps only the newest key, the old token is refused. No restart.
func TestTokenKeyRotationWithSIGHUP(t *testing.T) {
	n := startSoloNode(t)
	keyFile := filepath.Join(n.dataDir, "token-keys")
	hc := &http.Client{Timeout: 5 * time.Second}
	userID, secret := httpRegister(t, hc, n.url, "alice")
	old := httpToken(t, hc, n.url, userID, secret)
	oldKid := tokenKid(t, old)

	rotate := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(courierBin, append([]string{"token-keys", "rotate", keyFile}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("courier token-keys rotate: %v\n%s", err, out)
		}
		kid, _, ok := strings.Cut(strings.TrimPrefix(string(out), keyFile+": key "), " ")
		if !ok {
			t.Fatalf("rotate said %q", out)
		}
		return kid
	}
	// reload sends SIGHUP and waits until new tokens name kid.
	reload := func(kid string) string {
		t.Helper()
		n.current().signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for {
			tok := httpToken(t, hc, n.url, userID, secret)
			if tokenKid(t, tok) == kid {
				return tok
			}
			if time.Now().After(deadline) {
				t.Fatalf("after SIGHUP tokens still name %s, not %s:\n%s", tokenKid(t, tok), kid, n.current().logTail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	newKid := rotate()
	fresh := reload(newKid)
	if newKid == oldKid {
		t.Fatalf("rotate kept kid %s", oldKid)
	}
	if code := httpAuthStatus(t, hc, n.url, old); code != http.StatusOK {
		t.Fatalf("token of the old key after the rotation: %d, want 200", code)
	}
	if code := httpAuthStatus(t, hc, n.url, fresh); code != http.StatusOK {
		t.Fatalf("token of the new key: %d, want 200", code)
	}

	latest := rotate("--keep", "1")
	reload(latest)
	for _, tok := range []string{old, fresh} {
		if code := httpAuthStatus(t, hc, n.url, tok); code != http.StatusUnauthorized {
			t.Fatalf("token of a dropped key: %d, want 401", code)
		}
	}
	if !n.current().alive() {
		t.Fatal("SIGHUP ended the node")
	}
}

func httpRegister(t *testing.T, hc *http.Client, base, handle string) (userID, secret string) {
	t.Helper()
	var reg struct {
		UserID       string `json:"user_id"`
		DeviceSecret string `json:"device_secret"`
	}
	httpPost(t, hc, base+"/v1/register", map[string]any{"handle": handle}, http.StatusCreated, &reg)
	return reg.UserID, reg.DeviceSecret
}

func httpToken(t *testing.T, hc *http.Client, base, userID, secret string) string {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	httpPost(t, hc, base+"/v1/token", map[string]any{"user_id": userID, "device_id": 1, "device_secret": secret}, http.StatusOK, &tok)
	return tok.AccessToken
}

func httpPost(t *testing.T, hc *http.Client, url string, body any, want int, out any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

func httpAuthStatus(t *testing.T, hc *http.Client, base, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/devices", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func tokenKid(t *testing.T, token string) string {
	t.Helper()
	h, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}
