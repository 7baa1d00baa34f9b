package turn

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SecretFile is the name of the generated secret's file in the data
// directory.
const SecretFile = "turn-secret"

// LoadOrCreateSecret reads the shared secret kept at path, or generates
// one (32 random bytes in hex) and writes it there with mode 0600 when the
// file does not exist. The secret is the hex text itself, as coturn's
// static-auth-secret takes it: the file's line can be given to a coturn
// (or --turn-secret of another node) unchanged. A node keeps it in its data directory, not in
// the message store: it concerns this node's relay only, and an external
// TURN server is given its secret with --turn-secret instead.
func LoadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		text := strings.TrimSpace(string(b))
		if raw, derr := hex.DecodeString(text); derr != nil || len(raw) < 16 {
			return nil, fmt.Errorf("turn secret file %s: not hex of at least 16 bytes", path)
		}
		return []byte(text), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read turn secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate turn secret: %w", err)
	}
	secret := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create directory of turn secret: %w", err)
	}
	// Written aside and renamed, so a crash leaves no half-written secret.
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("write turn secret: %w", err)
	}
	_, werr := f.Write(append(secret, '\n'))
	if serr := f.Sync(); werr == nil {
		werr = serr
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("write turn secret %s: %w", path, werr)
	}
	return secret, nil
}
