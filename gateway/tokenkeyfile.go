package gateway

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// maxTokenKeyFile bounds what ReadTokenKeyFile reads: a key file is a
// few lines.
const maxTokenKeyFile = 1 << 20

// ReadTokenKeyFile reads and checks a token key file (ParseTokenKeys). Like
// ssh with a private key, it refuses a file that anyone but its owner may
// read or write: mode 0600 or 0400. A missing file is an error that
// matches fs.ErrNotExist.
func ReadTokenKeyFile(path string) ([]TokenKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("token key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("token key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("token key file %s has mode %04o: whoever can read it can sign tokens for any user, so only its owner may (run: chmod 600 %s)", path, perm, path)
	}
	text, err := io.ReadAll(io.LimitReader(f, maxTokenKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("token key file %s: %w", path, err)
	}
	if len(text) > maxTokenKeyFile {
		return nil, fmt.Errorf("token key file %s is larger than %d bytes", path, maxTokenKeyFile)
	}
	keys, err := ParseTokenKeys(text)
	if err != nil {
		return nil, fmt.Errorf("token key file %s: %w", path, err)
	}
	return keys, nil
}

// LoadTokenKeyFile reads a token key file into a key set.
func LoadTokenKeyFile(path string) (*TokenKeySet, error) {
	keys, err := ReadTokenKeyFile(path)
	if err != nil {
		return nil, err
	}
	return NewTokenKeySet(keys)
}

// WriteTokenKeyFile replaces path with keys, mode 0600. The text is
// written to a temporary file beside it, synced and renamed over it, so a
// reader or a crash sees the old file or the new one, never a part.
func WriteTokenKeyFile(path string, keys []TokenKey) error {
	return writeTokenKeyFile(path, keys, true)
}

// CreateTokenKeyFile writes keys to path, mode 0600, unless path exists:
// then it returns an error matching fs.ErrExist and leaves the file as it
// is. Like WriteTokenKeyFile, it never leaves a partial file.
func CreateTokenKeyFile(path string, keys []TokenKey) error {
	return writeTokenKeyFile(path, keys, false)
}

// NewTokenKeyFile creates path with one fresh key (CreateTokenKeyFile).
func NewTokenKeyFile(path string, now time.Time) (TokenKey, error) {
	k, err := NewTokenKey(now)
	if err != nil {
		return TokenKey{}, err
	}
	return k, CreateTokenKeyFile(path, []TokenKey{k})
}

// ImportLegacyTokenKeyFile adds the key an earlier Courier signed with to
// the key file at path (ImportLegacyTokenKey), creating the file with it
// as the signing key when it is missing. It returns the key's id and
// whether the file changed.
func ImportLegacyTokenKeyFile(path string, secret []byte, now time.Time) (kid string, added bool, err error) {
	keys, err := ReadTokenKeyFile(path)
	missing := errors.Is(err, fs.ErrNotExist)
	if err != nil && !missing {
		return "", false, err
	}
	keys, added = ImportLegacyTokenKey(keys, secret, now)
	switch {
	case !added:
	case missing:
		err = CreateTokenKeyFile(path, keys)
	default:
		err = WriteTokenKeyFile(path, keys)
	}
	return TokenKeyID(secret), added, err
}

func writeTokenKeyFile(path string, keys []TokenKey, replace bool) (err error) {
	if _, err := NewTokenKeySet(keys); err != nil {
		return fmt.Errorf("token key file %s: %w", path, err)
	}
	wrap := func(err error) error { return fmt.Errorf("write token key file %s: %w", path, err) }
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wrap(err)
	}
	// CreateTemp makes the file 0600 before a byte is in it.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return wrap(err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, werr := tmp.Write(FormatTokenKeys(keys))
	if werr == nil {
		werr = tmp.Chmod(0o600) // whatever the umask
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return wrap(werr)
	}
	if replace {
		if err := os.Rename(tmp.Name(), path); err != nil {
			return wrap(err)
		}
	} else {
		// A hard link is created whole and never replaces a file: two
		// racing creators end with one file, the first one's.
		if err := os.Link(tmp.Name(), path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("token key file %s: %w", path, fs.ErrExist)
			}
			return wrap(err)
		}
		_ = os.Remove(tmp.Name())
	}
	syncDir(dir)
	return nil
}

// syncDir makes a rename or link in dir durable, where the system can.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
