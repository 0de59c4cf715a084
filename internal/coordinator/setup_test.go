package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
)

const (
	clientToken   = "client-token-0123456789abcdef"
	executorToken = "executor-token-0123456789abcdef"
)

// clock is a settable clock shared by the store and the server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one coordinator on a real listener over a real SQLite store.
type env struct {
	t      *testing.T
	clock  *clock
	store  *sqlite.Store
	srv    *Server
	ts     *httptest.Server
	client *api.Client // client token
	exec   *api.Client // executor token
}

// setup starts a coordinator; mod may change the config before New.
func setup(t *testing.T, mod ...func(*Config)) *env {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "queue.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := Config{
		Store:          store,
		ClientTokens:   []string{clientToken},
		ExecutorTokens: []string{executorToken},
		Secrets:        map[string]string{"NPM_TOKEN": "npm-secret", "OTHER": "other-secret"},
		Now:            clk.Now,
	}
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(ctx) }) // runs first: releases long polls before ts.Close waits for them
	return &env{
		t: t, clock: clk, store: store, srv: srv, ts: ts,
		client: api.NewClient(ts.URL, clientToken),
		exec:   api.NewClient(ts.URL, executorToken),
	}
}

func testSpec(queue string) job.Spec {
	return job.Spec{Queue: queue, Steps: []job.Step{{Name: "build", Run: "echo hello"}}}
}

func (e *env) submit(spec job.Spec) *api.Job {
	e.t.Helper()
	j, err := e.client.Submit(context.Background(), spec)
	if err != nil {
		e.t.Fatalf("Submit: %v", err)
	}
	return j
}

func (e *env) claim(executor string, queues ...string) *api.ClaimResponse {
	e.t.Helper()
	c, err := e.exec.Claim(context.Background(), api.ClaimRequest{
		Executor: queue.ExecutorInfo{Name: executor}, Queues: queues, WaitMS: 5000,
	})
	if err != nil {
		e.t.Fatalf("Claim: %v", err)
	}
	if c == nil {
		e.t.Fatalf("Claim(%v): no job", queues)
	}
	return c
}

func ref(c *api.ClaimResponse) queue.AttemptRef {
	return queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
}

// waitFor polls cond until it holds or a few seconds passed; for state that
// has no signal to wait on (a goroutine parked in a long poll).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// raw sends a request without the typed client and decodes an error body.
func (e *env) raw(method, path, token, contentType string, body []byte) (int, api.ErrorBody, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb api.ErrorBody
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &eb); err != nil {
			e.t.Errorf("%s %s: %d body %q is not a JSON error: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, eb, resp.Header
}

// appendLog appends through the executor's client, retrying transport
// errors as the executor does.
func (e *env) appendLog(token string, r queue.AttemptRef, offset int64, data string) int64 {
	e.t.Helper()
	var err error
	for range 3 {
		var end int64
		end, err = e.exec.AppendLog(context.Background(), token, r, offset, []byte(data))
		var se *api.StatusError
		if err == nil {
			return end
		}
		if errors.As(err, &se) {
			break
		}
	}
	e.t.Fatalf("AppendLog: %v", err)
	return 0
}
