// Package admin is the operator's HTTP view of a running cluster, served by
// every node under /v1/admin/ and read by `courier admin`: the members, the
// owner of any user or group, and the activations per kind on each member.
// Every request needs the admin token (Authorization: Bearer …); a node
// started without one serves no admin API at all.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/courier-im/courier/actors"
	"github.com/courier-im/courier/cluster"
)

// MemberInfo is one member as the admin API shows it.
type MemberInfo struct {
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Kinds   []string          `json:"kinds"`
	Meta    map[string]string `json:"meta,omitempty"`
	Self    bool              `json:"self,omitempty"` // the node that answered
}

// MembersReply answers GET /v1/admin/members.
type MembersReply struct {
	Members []MemberInfo `json:"members"`
}

// WhereReply answers GET /v1/admin/where?kind=user|group&id=….
type WhereReply struct {
	Kind  string     `json:"kind"`
	ID    string     `json:"id"`
	Owner MemberInfo `json:"owner"`
}

// MemberGrains is one member's activations; Error is set when it did not answer.
type MemberGrains struct {
	MemberInfo
	Activations map[string]int64 `json:"activations,omitempty"`
	Sessions    int64            `json:"sessions"`
	Goroutines  int64            `json:"goroutines,omitempty"`
	HeapBytes   uint64           `json:"heap_bytes,omitempty"`
	// RateLimited counts the requests each rate limit refused since the
	// member started ("send/user", "register/ip", ...; limits that refused
	// nothing are absent). The member's log names who hit a limit.
	RateLimited map[string]int64 `json:"rate_limited,omitempty"`
	Error       string           `json:"error,omitempty"`
}

// GrainsReply answers GET /v1/admin/grains.
type GrainsReply struct {
	Members []MemberGrains `json:"members"`
}

// StatsReply answers GET /v1/admin/stats: this node only, with its process
// figures (RSS is what `courier bench conns` divides by connections).
type StatsReply struct {
	MemberGrains
	RSSBytes uint64 `json:"rss_bytes"`
	// CPUSeconds is the process's user+system CPU time so far (Linux).
	CPUSeconds float64 `json:"cpu_seconds"`
	// Presence work since start: user online/offline transitions, updates
	// sent to subscribers, transitions folded into a later update by the
	// debounce, and presence/typing frames dropped for slow clients.
	PresenceChanges   int64 `json:"presence_changes"`
	PresenceSent      int64 `json:"presence_sent"`
	PresenceCoalesced int64 `json:"presence_coalesced"`
	EphemeralDropped  int64 `json:"ephemeral_dropped"`
}

// Handler serves the admin API for cl. An empty token is refused: running
// an admin API without one would hand the cluster to anyone who can reach it.
func Handler(cl *cluster.Cluster, token string, log *slog.Logger) (http.Handler, error) {
	if token == "" {
		return nil, errors.New("admin: empty token")
	}
	if log == nil {
		log = slog.Default()
	}
	h := &handler{cl: cl, token: []byte(token), log: log.With("component", "admin")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/admin/members", h.members)
	mux.HandleFunc("GET /v1/admin/where", h.where)
	mux.HandleFunc("GET /v1/admin/grains", h.grains)
	mux.HandleFunc("GET /v1/admin/stats", h.stats)
	return h.authorize(mux), nil
}

type handler struct {
	cl    *cluster.Cluster
	token []byte
	log   *slog.Logger
}

func (h *handler) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), h.token) != 1 {
			writeError(w, http.StatusUnauthorized, "admin token missing or wrong (Authorization: Bearer <token>)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *handler) info(m cluster.Member) MemberInfo {
	self := h.cl.Self()
	return MemberInfo{ID: m.ID, Address: m.Address, Kinds: m.Kinds, Meta: m.Meta,
		Self: m.ID == self.ID && m.Address == self.Address}
}

func (h *handler) members(w http.ResponseWriter, _ *http.Request) {
	var out MembersReply
	for _, m := range h.cl.Members() {
		out.Members = append(out.Members, h.info(m))
	}
	writeJSON(w, out)
}

func (h *handler) where(w http.ResponseWriter, r *http.Request) {
	kind, id := r.URL.Query().Get("kind"), r.URL.Query().Get("id")
	var gid cluster.GrainID
	switch kind {
	case "user":
		gid = actors.UserGrainID(id)
	case "group":
		gid = actors.GroupGrainID(id)
	default:
		writeError(w, http.StatusBadRequest, "kind must be user or group")
		return
	}
	if id == "" {
		writeError(w, http.StatusBadRequest, "id is required")
		return
	}
	owner, err := h.cl.Owner(gid)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, WhereReply{Kind: kind, ID: id, Owner: h.info(owner)})
}

// grains asks every member concurrently; one that does not answer is shown
// with its error rather than failing the whole view.
func (h *handler) grains(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	members := h.cl.Members()
	out := GrainsReply{Members: make([]MemberGrains, len(members))}
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mg := MemberGrains{MemberInfo: h.info(m)}
			st, err := h.cl.MemberStats(ctx, m)
			if err != nil {
				mg.Error = err.Error()
			} else {
				mg.Activations, mg.Sessions, mg.Goroutines, mg.HeapBytes = st.Activations, st.Sessions, st.Goroutines, st.HeapBytes
				mg.RateLimited = st.RateLimited
			}
			out.Members[i] = mg
		}()
	}
	wg.Wait()
	writeJSON(w, out)
}

func (h *handler) stats(w http.ResponseWriter, _ *http.Request) {
	st := h.cl.LocalStats()
	writeJSON(w, StatsReply{
		MemberGrains: MemberGrains{MemberInfo: h.info(h.cl.Self()), Activations: st.Activations,
			Sessions: st.Sessions, Goroutines: st.Goroutines, HeapBytes: st.HeapBytes, RateLimited: st.RateLimited},
		RSSBytes:        selfRSS(),
		CPUSeconds:      selfCPU(),
		PresenceChanges: st.PresenceChanges, PresenceSent: st.PresenceSent,
		PresenceCoalesced: st.PresenceCoalesced, EphemeralDropped: st.EphemeralDropped,
	})
}

// selfRSS reads VmRSS from /proc (Linux); 0 elsewhere.
func selfRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// selfCPU reads utime+stime from /proc/self/stat (Linux, 100 ticks a
// second); 0 elsewhere.
func selfCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// The command name may hold spaces; fields are counted after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return float64(ut+st) / 100
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// ErrUnauthorized is returned by the client for a 401.
var ErrUnauthorized = errors.New("admin: unauthorized (check --admin-token / COURIER_ADMIN_TOKEN)")

// Client reads a node's admin API.
type Client struct {
	URL   string // the node's base URL, http(s)://host:port
	Token string
	HTTP  *http.Client
}

func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.URL, "/")+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s: %w", path, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return ErrUnauthorized
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("admin %s: 404: the node serves no admin API (start it with --admin-token)", path)
	case resp.StatusCode != http.StatusOK:
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("admin %s: %s: %s", path, resp.Status, e.Error)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin %s: decode: %w", path, err)
	}
	return nil
}

// Members lists the cluster's members as the node sees them.
func (c *Client) Members(ctx context.Context) (MembersReply, error) {
	var r MembersReply
	return r, c.get(ctx, "/v1/admin/members", &r)
}

// Where names the member owning a user or group ("user" or "group").
func (c *Client) Where(ctx context.Context, kind, id string) (WhereReply, error) {
	var r WhereReply
	return r, c.get(ctx, "/v1/admin/where?kind="+url.QueryEscape(kind)+"&id="+url.QueryEscape(id), &r)
}

// Grains reports activations per kind on every member.
func (c *Client) Grains(ctx context.Context) (GrainsReply, error) {
	var r GrainsReply
	return r, c.get(ctx, "/v1/admin/grains", &r)
}

// Stats reports the answering node only.
func (c *Client) Stats(ctx context.Context) (StatsReply, error) {
	var r StatsReply
	return r, c.get(ctx, "/v1/admin/stats", &r)
}
