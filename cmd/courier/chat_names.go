package main

// Names: people by handle and groups by subject, never by id.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/courier-im/courier/client"
	"github.com/courier-im/courier/protos/courierpb"
)

// names turns user ids into handles and group ids into subjects for
// display. It knows the handles of local profiles and of users seen before
// (contacts.json), and asks the server for the others.
type names struct {
	dir  string
	self client.Credentials
	c    *client.Client

	mu      sync.Mutex
	loaded  bool
	byID    map[string]string
	byName  map[string]string
	subject map[string]string // group id -> subject
}

const contactsFile = "contacts.json"

// lookupTimeout bounds one name lookup made only to print something.
const lookupTimeout = 3 * time.Second

func newNames(dir string, self client.Credentials, c *client.Client) *names {
	return &names{dir: dir, self: self, c: c, subject: make(map[string]string)}
}

// loadLocked reads contacts.json and the local profiles once. n.mu held.
func (n *names) loadLocked() {
	if n.loaded {
		return
	}
	n.loaded = true
	n.byID, n.byName = map[string]string{}, map[string]string{}
	if n.self.UserID != "" {
		n.byID[n.self.UserID] = n.self.Handle
	}
	if n.dir == "" {
		return
	}
	if b, err := os.ReadFile(filepath.Join(n.dir, contactsFile)); err == nil {
		_ = json.Unmarshal(b, &n.byName)
	}
	for h, id := range n.byName {
		n.byID[id] = h
	}
	profiles, _ := filepath.Glob(filepath.Join(n.dir, "*.json"))
	for _, p := range profiles {
		if filepath.Base(p) == contactsFile {
			continue
		}
		if c, err := loadProfile(p); err == nil && c.UserID != "" && c.BaseURL == n.self.BaseURL {
			n.byID[c.UserID] = c.Handle
		}
	}
}

// rememberLocked records a handle and saves contacts.json. n.mu held.
func (n *names) rememberLocked(handle, id string) {
	if n.byName[handle] == id {
		return
	}
	n.byName[handle] = id
	n.byID[id] = handle
	if n.dir != "" {
		if b, err := json.MarshalIndent(n.byName, "", "  "); err == nil {
			_ = writePrivate(filepath.Join(n.dir, contactsFile), append(b, '\n'))
		}
	}
}

// name returns the handle of user id, or id itself when nobody can say.
func (n *names) name(id string) string {
	if id == "" || id == n.self.UserID {
		return n.self.Handle
	}
	n.mu.Lock()
	n.loadLocked()
	h, ok := n.byID[id]
	n.mu.Unlock()
	if ok || n.c == nil {
		if !ok {
			return id
		}
		return h
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	h, err := n.c.LookupUser(ctx, id)
	if err != nil || h == "" {
		return id
	}
	n.mu.Lock()
	n.rememberLocked(h, id)
	n.mu.Unlock()
	return h
}

// group returns a group's subject as "#subject", or a short id.
func (n *names) group(id string) string {
	n.mu.Lock()
	sub, ok := n.subject[id]
	n.mu.Unlock()
	if !ok && n.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		info, err := n.c.GroupInfo(ctx, id)
		cancel()
		if err == nil {
			sub, ok = info.Subject, true
			n.setSubject(id, sub)
		}
	}
	if ok && sub != "" {
		return "#" + sub
	}
	if len(id) > 8 {
		id = id[:8]
	}
	return "#" + id
}

func (n *names) setSubject(groupID, subject string) {
	n.mu.Lock()
	n.subject[groupID] = subject
	n.mu.Unlock()
}

// resolve looks a handle up on the server and remembers it.
func (n *names) resolve(ctx context.Context, handle string) (string, error) {
	id, err := n.c.LookupHandle(ctx, handle)
	if client.IsCode(err, courierpb.ErrorCode_NOT_FOUND) {
		return "", fmt.Errorf("no user with handle %q", handle)
	}
	if err != nil {
		return "", err
	}
	n.mu.Lock()
	n.loadLocked()
	n.rememberLocked(handle, id)
	n.mu.Unlock()
	return id, nil
}
