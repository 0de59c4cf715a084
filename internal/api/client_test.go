package api

// These tests run the client against small HTTP servers written here,
// speaking real HTTP on loopback; the coordinator package's tests run it
// against the real coordinator.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

func TestStatusErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		body     string
		want     []error
		notWant  []error
		message  string
		wantCode string
	}{
		{"stale", 409, `{"error":{"code":"stale_attempt","message":"attempt is no longer current"}}`,
			[]error{queue.ErrStaleAttempt}, []error{queue.ErrInvalidState}, "attempt is no longer current", CodeStaleAttempt},
		{"conflict", 409, `{"error":{"code":"conflict","message":"not now"}}`,
			[]error{queue.ErrInvalidState}, []error{queue.ErrStaleAttempt}, "not now", CodeConflict},
		{"not found", 404, `{"error":{"code":"not_found","message":"job not found"}}`,
			[]error{queue.ErrNotFound}, nil, "job not found", CodeNotFound},
		{"unauthorized", 401, `{"error":{"code":"unauthorized","message":"who?"}}`,
			[]error{ErrUnauthorized}, []error{ErrForbidden}, "who?", CodeUnauthorized},
		{"forbidden", 403, `{"error":{"code":"forbidden","message":"no"}}`,
			[]error{ErrForbidden}, nil, "no", CodeForbidden},
		{"too large", 413, `{"error":{"code":"too_large","message":"big"}}`,
			[]error{ErrTooLarge}, []error{queue.ErrLogLimit}, "big", CodeTooLarge},
		{"invalid", 422, `{"error":{"code":"invalid","message":"steps: required","field":"steps"}}`,
			[]error{ErrInvalid}, nil, "steps: required", CodeInvalid},
		{"bad request", 400, `{"error":{"code":"bad_request","message":"bad"}}`,
			[]error{ErrBadRequest}, nil, "bad", CodeBadRequest},
		{"internal", 500, `{"error":{"code":"internal_error","message":"internal error"}}`,
			[]error{ErrInternal}, nil, "internal error", CodeInternal},
		{"proxy page", 502, `<html>bad gateway</html>`,
			[]error{ErrInternal}, nil, "coordinator answered 502 Bad Gateway: <html>bad gateway</html>", CodeInternal},
		{"empty 404", 404, ``,
			[]error{queue.ErrNotFound}, nil, "coordinator answered 404 Not Found", CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := NewClient(ts.URL, "tok").Get(context.Background(), 1)
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Get: %v, want a *StatusError", err)
			}
			if se.Status != tt.status || se.Err.Code != tt.wantCode || se.Error() != tt.message {
				t.Errorf("StatusError = %d %q %q, want %d %q %q", se.Status, se.Err.Code, se.Error(), tt.status, tt.wantCode, tt.message)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("errors.Is(%v, %v) = false", err, w)
				}
			}
			for _, w := range tt.notWant {
				if errors.Is(err, w) {
					t.Errorf("errors.Is(%v, %v) = true", err, w)
				}
			}
		})
	}
}

// TestAppendLogErrors: on a log append a conflict is a gap, and too_large
// is also the log limit.
func TestAppendLogErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code   string
		status int
		want   []error
		not    []error
	}{
		{CodeConflict, 409, []error{queue.ErrLogGap}, []error{queue.ErrInvalidState}},
		{CodeTooLarge, 413, []error{queue.ErrLogLimit, ErrTooLarge}, nil},
		{CodeStaleAttempt, 409, []error{queue.ErrStaleAttempt}, []error{queue.ErrLogGap}},
	}
	for _, tt := range tests {
		ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.status)
			json.NewEncoder(w).Encode(ErrorBody{Error: Error{Code: tt.code, Message: "m"}})
		})
		_, err := NewClient(ts.URL, "exec").AppendLog(context.Background(), "alj_x", queue.AttemptRef{JobID: 1, Attempt: 1}, 0, []byte("x"))
		for _, w := range tt.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: errors.Is(%v, %v) = false", tt.code, err, w)
			}
		}
		for _, w := range tt.not {
			if errors.Is(err, w) {
				t.Errorf("%s: errors.Is(%v, %v) = true", tt.code, err, w)
			}
		}
	}
}

// TestRequests checks what the client puts on the wire.
func TestRequests(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, uri, auth, ua, ctype, body string
	}
	var got []seen
	var mu sync.Mutex
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.RequestURI(), r.Header.Get("Authorization"), r.Header.Get("User-Agent"),
			r.Header.Get("Content-Type"), string(b)})
		mu.Unlock()
		switch r.URL.Path {
		case Prefix + "/executor/claim":
			w.WriteHeader(http.StatusNoContent)
		case Prefix + "/attempts/7/2/logs":
			io.WriteString(w, `{"end": 5}`)
		default:
			io.WriteString(w, `{}`)
		}
	})
	ctx := context.Background()
	c := NewClient(ts.URL+"/", "client-tok", WithUserAgent("airlock-test/1"))
	if _, err := c.List(ctx, ListOptions{States: []job.State{job.StateQueued, job.StateRunning}, Queues: []string{"a", "b"}, Limit: 10, Cursor: "cur"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(ctx, 3); err != nil {
		t.Fatal(err)
	}
	claim, err := c.Claim(ctx, ClaimRequest{Executor: queue.ExecutorInfo{Name: "e"}, Queues: []string{"q"}, WaitMS: 10})
	if claim != nil || err != nil {
		t.Errorf("Claim on 204 = %v, %v; want nil, nil", claim, err)
	}
	end, err := c.AppendLog(ctx, "alj_job", queue.AttemptRef{JobID: 7, Attempt: 2}, 12, []byte("hello"))
	if err != nil || end != 5 {
		t.Errorf("AppendLog = %d, %v; want 5, nil", end, err)
	}
	want := []seen{
		{"GET", Prefix + "/jobs?cursor=cur&limit=10&queue=a%2Cb&state=queued%2Crunning", "Bearer client-tok", "airlock-test/1", "", ""},
		{"POST", Prefix + "/jobs/3/cancel", "Bearer client-tok", "airlock-test/1", "", ""},
		{"POST", Prefix + "/executor/claim", "Bearer client-tok", "airlock-test/1", "application/json",
			`{"executor":{"name":"e","running":0,"lastSeen":"0001-01-01T00:00:00Z"},"queues":["q"],"waitMs":10}`},
		{"POST", Prefix + "/attempts/7/2/logs?offset=12", "Bearer alj_job", "airlock-test/1", "application/octet-stream", "hello"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(seen{})); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestKeepAlive: sequential and concurrent calls reuse pooled connections.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id": 1}`)
	}))
	ts.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	t.Cleanup(ts.Close)
	c := NewClient(ts.URL, "tok")
	ctx := context.Background()
	for range 50 {
		if _, err := c.Get(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential calls opened %d connections, want 1", n)
	}
	burst := func() {
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Get(ctx, 1); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	burst()
	// A few may be dialled while finished requests' connections are still on
	// their way back to the pool (more on a loaded machine, so the best of
	// three bursts counts); with Go's default of 2 idle connections per host
	// every burst would open about 30.
	best := int64(1 << 30)
	for range 3 {
		before := conns.Load()
		burst()
		best = min(best, conns.Load()-before)
	}
	if best > 8 {
		t.Errorf("bursts of 32 after the first opened at least %d new connections each, want almost none (idle pool too small)", best)
	}
}

// TestLogsFollowReconnects cuts a follow mid-stream: the client resumes on
// the attempt the first answer named, at the offset it had reached.
func TestLogsFollowReconnects(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var queries []string
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		n := len(queries)
		mu.Unlock()
		w.Header().Set(HeaderLogAttempt, "3")
		w.Header().Set(HeaderLogOffset, r.URL.Query().Get("offset"))
		switch n {
		case 1:
			io.WriteString(w, "abc")
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // cut the connection
		default:
			io.WriteString(w, "def")
		}
	})
	var buf bytes.Buffer
	next, err := NewClient(ts.URL, "tok").Logs(context.Background(), 9, LogOptions{Follow: true}, &buf)
	if err != nil || next != 6 || buf.String() != "abcdef" {
		t.Errorf("Logs = %q, %d, %v; want %q, 6, nil", buf.String(), next, err, "abcdef")
	}
	if diff := cmp.Diff([]string{"follow=1", "attempt=3&follow=1&offset=3"}, queries); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}

	// Without follow a cut is an error, with the offset reached.
	queries = nil
	buf.Reset()
	next, err = NewClient(ts.URL, "tok").Logs(context.Background(), 9, LogOptions{}, &buf)
	if err == nil || next != 3 {
		t.Errorf("Logs without follow over a cut = %d, %v; want 3 and an error", next, err)
	}

	// A refusal is not retried.
	ts404 := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		io.WriteString(w, `{"error":{"code":"not_found","message":"job not found"}}`)
	})
	if _, err := NewClient(ts404.URL, "tok").Logs(context.Background(), 9, LogOptions{Follow: true}, &buf); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Logs of a missing job: %v, want ErrNotFound", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestLogsWriteError(t *testing.T) {
	t.Parallel()
	ts := serve(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "abc") })
	_, err := NewClient(ts.URL, "tok").Logs(context.Background(), 1, LogOptions{Follow: true}, failWriter{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Errorf("Logs into a failing writer: %v, want the write error", err)
	}
}

func TestClientTLSConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := ClientTLSConfig(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("ClientTLSConfig(missing file) succeeded")
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	if _, err := ClientTLSConfig(junk); err == nil {
		t.Error("ClientTLSConfig(junk) succeeded")
	}
	cfg, err := ClientTLSConfig("")
	if err != nil || cfg.RootCAs != nil {
		t.Errorf("ClientTLSConfig(\"\") = %+v, %v; want system roots", cfg, err)
	}

	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"executors": []}`)
	}))
	t.Cleanup(ts.Close)
	ca := filepath.Join(dir, "ca.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = ClientTLSConfig(ca)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(ts.URL, "tok", WithTLSConfig(cfg)).Executors(context.Background()); err != nil {
		t.Errorf("Executors over TLS with the CA file: %v", err)
	}
	if _, err := NewClient(ts.URL, "tok").Executors(context.Background()); err == nil {
		t.Error("Executors over TLS without the CA succeeded")
	}
}
