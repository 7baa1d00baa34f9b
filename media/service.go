package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"

	"github.com/courier-im/courier/persistence"
	"github.com/courier-im/courier/protos/courierpb"
)

// Prefix is where media is mounted on the gateway's listener.
const Prefix = "/v1/media/"

// Headers of the protocol beyond tus's.
const (
	// HeaderBlobDigest names the published blob: in the 200 answer to the
	// creation of an existing digest, and in the answer to the PATCH that
	// completed an upload. On the PATCH that completes an upload created
	// without sha256 (a deferred digest), it declares the digest.
	HeaderBlobDigest = "Courier-Blob-Digest"
)

// Upload metadata keys. Only metaDigest comes from the client (and is
// optional); the server sets the others and drops everything else the
// client sent.
const (
	metaDigest  = "sha256"
	metaOwner   = "owner"
	metaCreated = "created" // unix seconds, on Config.Now's clock
	// metaDeferred is set on an upload created without sha256: its digest
	// comes with the PATCH that completes it (HeaderBlobDigest).
	metaDeferred = "deferred"
)

// storeTimeout bounds one metadata store call made for a request.
const storeTimeout = 5 * time.Second

// Authenticator checks a request's bearer access token, the same as /v1/ws.
// When the token is missing or invalid it has answered the request itself
// (401 with a JSON error) and returns false.
type Authenticator func(w http.ResponseWriter, r *http.Request) (userID string, ok bool)

// Service serves media under Prefix. Mount it on the gateway's mux.
type Service struct {
	cfg   Config
	log   *slog.Logger
	store persistence.MediaStore
	auth  Authenticator
	blobs BlobStore
	// composer is tusd's view of the upload store, with media's error
	// mapping (mappedStore, below) and an in-memory locker (locker.go).
	composer *handler.StoreComposer
	tus      *handler.UnroutedHandler
	// routes is tus's middleware (Tus-Resumable, read deadlines) around
	// route.
	routes http.Handler

	// digestMu serialises, per digest stripe, re-referencing, publishing
	// and expiring a blob, so the sweeper never deletes a blob that was
	// just re-referenced or published (one node; see sweep.go).
	digestMu [64]sync.Mutex
	// quotaMu serialises, per user stripe, the read and the increment of
	// a user's daily usage, so concurrent creations do not both pass.
	quotaMu [64]sync.Mutex
	seed    maphash.Seed

	// mu guards closing and requests, the requests handed to tusd (which
	// Close interrupts).
	mu       sync.Mutex
	closing  bool
	requests map[*request]struct{}

	stopSweep context.CancelFunc
	sweepDone chan struct{}
	closeOnce sync.Once
}

type userKey struct{}

// New builds the media service. store keeps blob records and usage; auth
// authenticates every request.
func New(cfg Config, store persistence.MediaStore, auth Authenticator) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if store == nil || auth == nil {
		return nil, errors.New("media: a MediaStore and an Authenticator are required")
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "media"), store: store, auth: auth, blobs: cfg.Blobs, seed: maphash.MakeSeed(),
		requests: make(map[*request]struct{})}
	if s.blobs == nil {
		local, err := NewLocalStore(cfg.Dir)
		if err != nil {
			return nil, err
		}
		s.blobs = local
	}
	s.composer = handler.NewStoreComposer()
	s.blobs.UseIn(s.composer)
	if s.composer.Core == nil || !s.composer.UsesTerminater {
		return nil, errors.New("media: the blob store must give tusd a core and a terminater")
	}
	s.composer.UseTerminater(mappedTerminater{s.composer.Terminater})
	// Deferred lengths would escape the quota and concatenation the
	// digest check: neither is offered.
	s.composer.UsesLengthDeferrer, s.composer.LengthDeferrer = false, nil
	s.composer.UsesConcater, s.composer.Concater = false, nil
	s.composer.UsesContentServer, s.composer.ContentServer = false, nil
	s.composer.UseLocker(fencedLocker{memorylocker.New()})
	s.composer.UseCore(mappedStore{DataStore: s.composer.Core, log: s.log})

	idle := cfg.IdleTimeout
	if idle < 0 {
		idle = 1 << 61 // "never": twice this still fits a Duration
	}
	tcfg := handler.Config{
		StoreComposer:             s.composer,
		BasePath:                  Prefix,
		MaxSize:                   max(cfg.MaxSize, 0),
		DisableDownload:           true, // blobs are downloaded by digest, not by upload id
		DisableConcatenation:      true,
		Cors:                      &handler.CorsConfig{Disable: true}, // every request carries a token; native clients need no CORS
		Logger:                    tusLogger(s.log),
		PreUploadCreateCallback:   s.preCreate,
		PreFinishResponseCallback: s.preFinish,
		NetworkTimeout:            idle,
	}
	tus, err := handler.NewUnroutedHandler(tcfg)
	if err != nil {
		return nil, fmt.Errorf("media: tusd: %w", err)
	}
	s.tus = tus
	s.routes = tus.Middleware(http.HandlerFunc(s.route))
	if cfg.SweepInterval > 0 && cfg.TTL > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopSweep, s.sweepDone = cancel, make(chan struct{})
		go s.sweepLoop(ctx)
	}
	return s, nil
}

// Close refuses new requests (503), interrupts the uploads in flight (they
// answer 503 ERR_SERVER_SHUTDOWN and keep the bytes received, so clients
// resume after the restart) and stops the sweeper. Call it before the HTTP
// server's Shutdown, which then need not wait for long uploads.
func (s *Service) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		for q := range s.requests {
			go q.interrupt(handler.ErrServerShutdown)
		}
		s.mu.Unlock()
		if s.stopSweep == nil {
			return
		}
		s.stopSweep()
		select {
		case <-s.sweepDone:
		case <-ctx.Done():
			err = fmt.Errorf("media: sweeper still running: %w", ctx.Err())
		}
	})
	return err
}

func (s *Service) now() time.Time { return s.cfg.Now() }

func (s *Service) lockDigest(digest string) func() {
	mu := &s.digestMu[maphash.String(s.seed, digest)%uint64(len(s.digestMu))]
	mu.Lock()
	return mu.Unlock
}

func (s *Service) lockQuota(user string) func() {
	mu := &s.quotaMu[maphash.String(s.seed, user)%uint64(len(s.quotaMu))]
	mu.Lock()
	return mu.Unlock
}

// ServeHTTP authenticates, then serves a download or hands the request to
// tusd with the path below Prefix.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "not a media path")
		return
	}
	user, ok := s.auth(w, r)
	if !ok {
		return
	}
	if digest, ok := strings.CutPrefix(rest, "blobs/"); ok {
		s.serveBlob(w, r, digest)
		return
	}
	// tusd would turn a POST with this header into a PATCH or DELETE
	// after the checks below chose the route.
	r.Header.Del("X-HTTP-Method-Override")
	r.Header.Del("X-Request-ID") // tusd would log it
	r, q, ok := s.begin(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	if !ok {
		writeError(w, http.StatusServiceUnavailable, courierpb.ErrorCode_UNAVAILABLE, "the server is shutting down: retry on another or after its restart")
		return
	}
	defer s.end(q)
	u := *r.URL
	u.Path, u.RawPath = "/"+rest, ""
	r.URL = &u
	rw := &respWriter{ResponseWriter: w, expiration: s.cfg.TTL > 0}
	s.routes.ServeHTTP(rw, r)
	rw.flush()
}

// route runs inside tusd's middleware: r.URL.Path is "/" or "/<upload-id>".
func (s *Service) route(w http.ResponseWriter, r *http.Request) {
	id := strings.Trim(r.URL.Path, "/")
	if id == "" {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeError(w, http.StatusMethodNotAllowed, courierpb.ErrorCode_INVALID_ARGUMENT, "create an upload with POST "+Prefix)
			return
		}
		// tusd refuses an oversized creation itself, with a plain-text
		// body; say it in the API's words first.
		if n, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64); err == nil && s.cfg.MaxSize > 0 && n > s.cfg.MaxSize {
			writeError(w, http.StatusRequestEntityTooLarge, courierpb.ErrorCode_TOO_LARGE,
				fmt.Sprintf("the upload is %d bytes; this server takes at most %d (--max-media)", n, s.cfg.MaxSize))
			return
		}
		s.tus.PostFile(w, r)
		return
	}
	switch r.Method {
	case http.MethodHead, http.MethodPatch, http.MethodDelete:
	default:
		w.Header().Set("Allow", "HEAD, PATCH, DELETE")
		writeError(w, http.StatusMethodNotAllowed, courierpb.ErrorCode_INVALID_ARGUMENT, "an upload takes HEAD, PATCH or DELETE")
		return
	}
	info, ok := s.ownUpload(w, r, id)
	if !ok {
		return
	}
	if exp, ok := s.uploadExpires(info); ok {
		w.Header().Set("Upload-Expires", exp.UTC().Format(http.TimeFormat))
	}
	// A complete deferred-digest upload whose digest nobody declared yet:
	// HEAD answers the offset (tusd), and the PATCH with the header
	// finishes it.
	headOnly := r.Method == http.MethodHead && info.MetaData[metaDeferred] != ""
	if r.Method != http.MethodDelete && !info.SizeIsDeferred && info.Offset == info.Size && !headOnly &&
		(r.Method == http.MethodHead || r.Header.Get("Upload-Offset") == strconv.FormatInt(info.Size, 10)) {
		s.finishStranded(w, r, id)
		return
	}
	switch r.Method {
	case http.MethodHead:
		s.tus.HeadFile(w, r)
	case http.MethodPatch:
		s.tus.PatchFile(w, r)
	case http.MethodDelete:
		s.tus.DelFile(w, r)
	}
}

// ownUpload answers 404 unless upload id exists and was created by the
// request's user (M3).
func (s *Service) ownUpload(w http.ResponseWriter, r *http.Request, id string) (handler.FileInfo, bool) {
	user, _ := r.Context().Value(userKey{}).(string)
	if !validUploadID(id) || user == "" {
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such upload")
		return handler.FileInfo{}, false
	}
	up, err := s.composer.Core.GetUpload(r.Context(), id)
	var info handler.FileInfo
	if err == nil {
		info, err = up.GetInfo(r.Context())
	}
	switch {
	case errors.Is(err, handler.ErrNotFound) || (err == nil && info.MetaData[metaOwner] != user):
		writeError(w, http.StatusNotFound, courierpb.ErrorCode_NOT_FOUND, "no such upload")
		return handler.FileInfo{}, false
	case err != nil:
		s.log.Error("read an upload's info", "upload", id, "err", err)
		writeError(w, http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "cannot read the upload")
		return handler.FileInfo{}, false
	}
	return info, true
}

// uploadExpires is when an unfinished upload is deleted: a TTL after its
// creation.
func (s *Service) uploadExpires(info handler.FileInfo) (time.Time, bool) {
	if s.cfg.TTL <= 0 {
		return time.Time{}, false
	}
	created, err := strconv.ParseInt(info.MetaData[metaCreated], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(created, 0).Add(s.cfg.TTL), true
}

// respWriter adjusts tusd's answers to the protocol: Location is the path
// /v1/media/<upload-id> (tusd makes it absolute from the Host header,
// which a proxy may have changed); OPTIONS lists the expiration extension
// that Upload-Expires implements; and a request interrupted because a newer
// one took the upload (tusd: 400 ERR_UPLOAD_INTERRUPTED) answers 423
// Locked, which tus clients retry (HEAD, then resume), so the only 400 a
// complete PATCH gets is a digest mismatch. Unwrap keeps
// http.ResponseController (tusd's read deadlines) working.
type respWriter struct {
	http.ResponseWriter
	expiration bool
	// held: tusd wrote a plain-text 400 whose code its body names; the
	// status waits for the first Write (or flush).
	held bool
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.held {
		w.held = false
		code := http.StatusBadRequest
		if bytes.HasPrefix(b, []byte(handler.ErrUploadInterrupted.ErrorCode+":")) {
			code = http.StatusLocked
		}
		w.ResponseWriter.WriteHeader(code)
	}
	return w.ResponseWriter.Write(b)
}

// flush sends a held status that no body followed (HEAD).
func (w *respWriter) flush() {
	if w.held {
		w.held = false
		w.ResponseWriter.WriteHeader(http.StatusBadRequest)
	}
}

func (w *respWriter) WriteHeader(code int) {
	h := w.Header()
	if loc := h.Get("Location"); loc != "" {
		if u, err := url.Parse(loc); err == nil && u.IsAbs() {
			h.Set("Location", u.EscapedPath())
		}
	}
	if ext := h.Get("Tus-Extension"); ext != "" && w.expiration {
		h.Set("Tus-Extension", ext+",expiration")
	}
	if code == http.StatusBadRequest && strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		w.held = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// mappedStore wraps the blob store's tusd data store so a full disk answers
// 507 (the bytes written so far stay, for resume) and no other storage
// error echoes a path to the client.
type mappedStore struct {
	handler.DataStore
	log *slog.Logger
}

func (m mappedStore) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	up, err := m.DataStore.NewUpload(ctx, info)
	if err != nil {
		return nil, m.mapErr("create upload", err)
	}
	return mappedUpload{Upload: up, m: m}, nil
}

func (m mappedStore) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	up, err := m.DataStore.GetUpload(ctx, id)
	if err != nil {
		return nil, m.mapErr("open upload", err)
	}
	return mappedUpload{Upload: up, m: m}, nil
}

func (m mappedStore) mapErr(op string, err error) error {
	var tusErr handler.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tusErr):
		return err
	case errors.Is(err, syscall.ENOSPC):
		m.log.Warn("media disk full", "op", op)
		return errDiskFull
	default:
		m.log.Error("media storage failed", "op", op, "err", err)
		return tusError(http.StatusInternalServerError, courierpb.ErrorCode_INTERNAL, "storage failed: "+op, nil)
	}
}

type mappedUpload struct {
	handler.Upload
	m mappedStore
}

func (u mappedUpload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	// tusd made this request's body reader before this call (locker.go).
	if q := requestOf(ctx); q != nil {
		q.open()
	}
	n, err := u.Upload.WriteChunk(ctx, offset, src)
	return n, u.m.mapErr("write chunk", err)
}

// mappedTerminater hands the blob store's terminater its own upload type.
type mappedTerminater struct{ handler.TerminaterDataStore }

func (t mappedTerminater) AsTerminatableUpload(up handler.Upload) handler.TerminatableUpload {
	if m, ok := up.(mappedUpload); ok {
		up = m.Upload
	}
	return t.TerminaterDataStore.AsTerminatableUpload(up)
}
