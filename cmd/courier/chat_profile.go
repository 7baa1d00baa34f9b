package main

// Profiles: a device's credentials and keys on disk, readable by its owner only.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/courier-im/courier/client"
)

// keysPath is where a profile's device keeps its Signal keys and sessions.
func keysPath(profile string) string {
	return strings.TrimSuffix(profile, filepath.Ext(profile)) + ".keys"
}

func configDir() (string, error) {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "courier"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the config directory: %w", err)
	}
	return filepath.Join(home, ".config", "courier"), nil
}

func profilePath(flag, handle string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if handle == "" || strings.ContainsAny(handle, `/\`) || handle == "." || handle == ".." {
		return "", fmt.Errorf("invalid handle %q", handle)
	}
	dir, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, handle+".json"), nil
}

func saveProfile(path string, creds client.Credentials) error {
	b, err := json.MarshalIndent(creds, "", "  ")
	if err != nil {
		return err
	}
	return writePrivate(path, append(b, '\n'))
}

// writePrivate writes a file readable by its owner only, atomically.
func writePrivate(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".courier-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func loadProfile(path string) (client.Credentials, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return client.Credentials{}, fmt.Errorf("no profile %s: register first with `courier chat register --handle ...`", path)
	}
	if err != nil {
		return client.Credentials{}, err
	}
	var creds client.Credentials
	if err := json.Unmarshal(b, &creds); err != nil {
		return client.Credentials{}, fmt.Errorf("profile %s: %w", path, err)
	}
	if creds.BaseURL == "" || creds.DeviceSecret == "" || (creds.UserID == "" && creds.Handle == "") {
		return client.Credentials{}, fmt.Errorf("profile %s is incomplete", path)
	}
	return creds, nil
}
