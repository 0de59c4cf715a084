package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// Server is the coordinator's HTTP API. Make one with New, serve its Handler
// (or call Serve), run its reaper with Start and end both with Stop.
type Server struct {
	cfg     Config
	store   queue.Store
	log     *slog.Logger
	now     func() time.Time
	tokens  tokenSet
	claims  *claimHub
	watch   *jobWatch
	metrics *metrics
	handler http.Handler

	closing   chan struct{} // closed by Stop or Serve's shutdown: releases long polls
	closeOnce sync.Once

	mu         sync.Mutex
	reapCancel context.CancelFunc
	reapDone   chan struct{}
}

// New checks cfg and builds a Server; it starts nothing.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("coordinator config: %w", err)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:     cfg,
		store:   cfg.Store,
		log:     cfg.Logger,
		now:     cfg.Now,
		tokens:  newTokenSet(cfg.ClientTokens, cfg.ExecutorTokens),
		claims:  newClaimHub(),
		watch:   newJobWatch(),
		metrics: newMetrics(),
		closing: make(chan struct{}),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the API's handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	p := api.Prefix
	handle := func(pattern string, kind tokenKind, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(pattern, s.require(kind, h)))
	}
	handle("POST "+p+"/jobs", kindClient, s.handleSubmit)
	handle("GET "+p+"/jobs", kindClient, s.handleList)
	handle("GET "+p+"/jobs/{id}", kindClient, s.handleGet)
	handle("GET "+p+"/jobs/{id}/logs", kindClient, s.handleLogs)
	handle("POST "+p+"/jobs/{id}/cancel", kindClient, s.handleCancel)
	handle("POST "+p+"/jobs/{id}/retry", kindClient, s.handleRetry)
	handle("GET "+p+"/executors", kindClient, s.handleExecutors)
	handle("GET "+p+"/jobs/{id}/artifacts", kindClient, s.handleListArtifacts)
	handle("GET "+p+"/jobs/{id}/artifacts/{attempt}", kindClient, s.handleGetArtifacts)
	handle("GET "+p+"/repositories", kindClient, s.handleListRepositories)
	handle("PUT "+p+"/repositories/{name...}", kindClient, s.handlePutRepository)
	handle("GET "+p+"/repositories/{name...}", kindClient, s.handleGetRepository)
	handle("DELETE "+p+"/repositories/{name...}", kindClient, s.handleDeleteRepository)
	handle("HEAD "+p+"/files/{digest}", kindClient, s.handleHeadFile)
	handle("PUT "+p+"/files/{digest}", kindClient, s.handlePutFile)

	handle("POST "+p+"/executor/claim", kindExecutor, s.handleClaim)
	handle("POST "+p+"/executor/heartbeat", kindExecutor, s.handleHeartbeat)

	handle("POST "+p+"/attempts/{jobID}/{attempt}/logs", kindJob, s.handleAppendLog)
	handle("POST "+p+"/attempts/{jobID}/{attempt}/finish", kindJob, s.handleFinish)
	handle("PUT "+p+"/attempts/{jobID}/{attempt}/artifacts", kindJob, s.handlePutArtifacts)
	handle("GET "+p+"/attempts/{jobID}/{attempt}/files/{digest}", kindJob, s.handleGetJobFile)
	handle("GET "+p+"/attempts/{jobID}/{attempt}/git/{path...}", kindJob, s.handleGit)
	handle("POST "+p+"/attempts/{jobID}/{attempt}/git/{path...}", kindJob, s.handleGit)

	handle("GET /metrics", kindClient, s.metrics.handler().ServeHTTP)
	mux.Handle("GET /healthz", s.instrument("GET /healthz", http.HandlerFunc(s.handleHealthz)))
	mux.Handle("GET /readyz", s.instrument("GET /readyz", http.HandlerFunc(s.handleReadyz)))

	return s.jsonMisses(mux)
}

// jsonMisses answers requests no route matches (404) or that use the wrong
// method (405, with Allow) with a JSON error body instead of ServeMux's text.
func (s *Server) jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &headerRecorder{header: make(http.Header)}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			s.writeError(w, r, newHTTPError(http.StatusMethodNotAllowed, api.CodeBadRequest, "",
				"method %s is not allowed here (allowed: %s)", r.Method, rec.header.Get("Allow")))
		case http.StatusNotFound, 0:
			s.writeError(w, r, errNotFoundPath)
		default: // a redirect, say: let the mux answer as it would
			mux.ServeHTTP(w, r)
		}
	})
}

// headerRecorder captures the status and headers a handler writes.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

type credKey struct{}

// require admits only requests carrying a token of kind want; for job tokens
// also only for the attempt named in the path.
func (s *Server) require(want tokenKind, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cred, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if cred.kind != want {
			s.writeError(w, r, forbidden("this route needs a %s token, not a %s token", want, cred.kind))
			return
		}
		if want == kindJob {
			ref, err := attemptFromPath(r)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			if ref != cred.attempt {
				s.writeError(w, r, forbidden("this job token is for job %d attempt %d", cred.attempt.JobID, cred.attempt.Attempt))
				return
			}
		}
		h(w, r)
	}
}

func attemptFromPath(r *http.Request) (queue.AttemptRef, error) {
	id, err := strconv.ParseInt(r.PathValue("jobID"), 10, 64)
	if err != nil || id <= 0 {
		return queue.AttemptRef{}, badRequest("job id %q is not a positive integer", r.PathValue("jobID"))
	}
	n, err := strconv.Atoi(r.PathValue("attempt"))
	if err != nil || n <= 0 {
		return queue.AttemptRef{}, badRequest("attempt %q is not a positive integer", r.PathValue("attempt"))
	}
	return queue.AttemptRef{JobID: id, Attempt: n}, nil
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz answers 200 once the store answers a query.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.store.List(ctx, queue.ListParams{Limit: 1}); err != nil {
		s.log.Warn("readiness check failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Start runs the reaper until ctx ends or Stop is called. It fails if the
// Server was already started or stopped.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reapCancel != nil {
		return errors.New("coordinator already started")
	}
	select {
	case <-s.closing:
		return errors.New("coordinator already stopped")
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	if s.cfg.Peers != nil {
		if err := s.listenPeers(ctx); err != nil {
			cancel()
			return fmt.Errorf("listening to the other replicas: %w", err)
		}
	}
	s.reapCancel = cancel
	s.reapDone = make(chan struct{})
	go func() {
		defer close(s.reapDone)
		var wg sync.WaitGroup
		wg.Go(func() { s.retentionLoop(ctx) })
		s.reapLoop(ctx)
		wg.Wait()
	}()
	return nil
}

// Stop ends the reaper and releases every long poll and log follow in
// flight (claims answer 204; follows are cut so clients reconnect). It
// waits for the reaper until ctx ends. The Server serves nothing useful
// afterwards; the store stays open (it is the caller's).
func (s *Server) Stop(ctx context.Context) error {
	s.release()
	s.mu.Lock()
	cancel, done := s.reapCancel, s.reapDone
	s.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping reaper: %w", ctx.Err())
	}
}

func (s *Server) release() {
	s.closeOnce.Do(func() { close(s.closing) })
}

// shutdownTimeout bounds how long Serve waits for requests in flight.
const shutdownTimeout = 10 * time.Second

// Serve serves the API on ln until ctx ends, over TLS when certFile and
// keyFile are given. On ctx's end it releases long polls and follows, stops
// accepting, and waits (up to 10s) for requests in flight.
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("serving: give both a certificate and a key, or neither")
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
		// No ReadTimeout/WriteTimeout: claims and log follows are long polls.
	}
	errc := make(chan error, 1)
	go func() {
		if certFile != "" {
			errc <- srv.ServeTLS(ln, certFile, keyFile)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	s.release()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc // http.ErrServerClosed
	if err != nil {
		srv.Close()
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}
