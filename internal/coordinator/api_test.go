package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// TestLifecycle walks every client, executor and attempt route through the
// typed client: submit, get, list, claim, heartbeat, logs, finish, retry,
// cancel, executors.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()

	spec := testSpec("build")
	spec.Secrets = []string{"NPM_TOKEN"}
	submitted := e.submit(spec)
	if submitted.ID == 0 || submitted.State != job.StateQueued || submitted.Queue != "build" {
		t.Fatalf("Submit = %+v, want a queued job in queue build", submitted)
	}
	if got, want := submitted.Spec.Steps[0].Name, "build"; got != want {
		t.Errorf("submitted spec step name = %q, want %q", got, want)
	}
	if got, want := submitted.MaxAttempts, job.DefaultMaxAttempts; got != want {
		t.Errorf("MaxAttempts = %d, want the normalized default %d", got, want)
	}

	got, err := e.client.Get(ctx, submitted.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(submitted, got); diff != "" {
		t.Errorf("Get differs from Submit's answer (-submit +get):\n%s", diff)
	}

	list, err := e.client.List(ctx, api.ListOptions{States: []job.State{job.StateQueued}, Queues: []string{"build"}})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list.Jobs) != 1 || list.Jobs[0].ID != submitted.ID {
		t.Errorf("List(queued, build) = %+v, want job %d", list.Jobs, submitted.ID)
	}

	c := e.claim("exec-1", "other", "build")
	if got, want := c.Job.ID, submitted.ID; got != want {
		t.Fatalf("claimed job %d, want %d", got, want)
	}
	if c.Attempt != 1 || !strings.HasPrefix(c.Token, "alj_") || c.LeaseMS != 30000 || c.HeartbeatMS != 5000 || c.LogLimit != 64<<20 {
		t.Errorf("claim = attempt %d token %q lease %d heartbeat %d log limit %d", c.Attempt, c.Token, c.LeaseMS, c.HeartbeatMS, c.LogLimit)
	}
	if diff := cmp.Diff(map[string]string{"NPM_TOKEN": "npm-secret"}, c.Secrets); diff != "" {
		t.Errorf("claim secrets (-want +got):\n%s", diff)
	}
	if c.Job.State != job.StateRunning {
		t.Errorf("claimed job state = %s, want running", c.Job.State)
	}

	hb, err := e.exec.Heartbeat(ctx, api.HeartbeatRequest{
		Executor: queue.ExecutorInfo{Name: "exec-1", Running: 1}, Attempts: []queue.AttemptRef{ref(c)},
	})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if diff := cmp.Diff(&api.HeartbeatResponse{Cancel: []queue.AttemptRef{}, Unknown: []queue.AttemptRef{}}, hb); diff != "" {
		t.Errorf("Heartbeat (-want +got):\n%s", diff)
	}

	if end := e.appendLog(c.Token, ref(c), 0, "hello\n"); end != 6 {
		t.Errorf("AppendLog end = %d, want 6", end)
	}
	if end := e.appendLog(c.Token, ref(c), 3, "lo\nworld\n"); end != 12 {
		t.Errorf("overlapping AppendLog end = %d, want 12", end)
	}
	var buf bytes.Buffer
	next, err := e.client.Logs(ctx, c.Job.ID, api.LogOptions{}, &buf)
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	if got, want := buf.String(), "hello\nworld\n"; got != want || next != 12 {
		t.Errorf("Logs = %q, next %d; want %q, next 12", got, next, want)
	}
	buf.Reset()
	if next, err = e.client.Logs(ctx, c.Job.ID, api.LogOptions{Attempt: 1, Offset: 6}, &buf); err != nil || buf.String() != "world\n" || next != 12 {
		t.Errorf("Logs from 6 = %q, next %d, %v; want %q, next 12", buf.String(), next, err, "world\n")
	}

	start := e.clock.Now()
	steps := []queue.StepResult{{Name: "build", ExitCode: 0, StartedAt: start, FinishedAt: start.Add(time.Second), Duration: time.Second}}
	done, err := e.exec.Finish(ctx, c.Token, ref(c), api.FinishRequest{
		Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess, Steps: steps,
	})
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if done.State != job.StateSucceeded || done.FinishedAt == nil {
		t.Errorf("finished job = state %s finishedAt %v, want succeeded with a time", done.State, done.FinishedAt)
	}
	got, err = e.client.Get(ctx, c.Job.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	wantAttempts := []api.Attempt{{Number: 1, Executor: "exec-1", Outcome: job.OutcomeSucceeded,
		Reason: job.ReasonSuccess, Steps: steps, LogSize: 12}}
	if diff := cmp.Diff(wantAttempts, got.Attempts, cmpopts.IgnoreFields(api.Attempt{}, "StartedAt", "FinishedAt"),
		cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("attempts (-want +got):\n%s", diff)
	}

	retried, err := e.client.Retry(ctx, c.Job.ID)
	if err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if retried.State != job.StateQueued {
		t.Errorf("retried state = %s, want queued", retried.State)
	}
	canceled, err := e.client.Cancel(ctx, c.Job.ID)
	if err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if canceled.State != job.StateCanceled {
		t.Errorf("canceled state = %s, want canceled", canceled.State)
	}
	if _, err := e.client.Cancel(ctx, c.Job.ID); !errors.Is(err, queue.ErrInvalidState) {
		t.Errorf("Cancel of a canceled job: %v, want ErrInvalidState", err)
	}
	if _, err := e.client.Get(ctx, 999); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Get(999): %v, want ErrNotFound", err)
	}

	execs, err := e.client.Executors(ctx)
	if err != nil {
		t.Fatalf("Executors: %v", err)
	}
	if len(execs.Executors) != 1 || execs.Executors[0].Name != "exec-1" {
		t.Errorf("Executors = %+v, want exec-1", execs.Executors)
	}
}

func TestListFilterAndPaginate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	var a, b []int64
	for i := range 5 {
		a = append(a, e.submit(testSpec("a")).ID)
		if i < 2 {
			b = append(b, e.submit(testSpec("b")).ID)
		}
	}
	c := e.claim("exec", "b") // the oldest of b is now running

	ids := func(l *api.JobList) []int64 {
		var out []int64
		for _, j := range l.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	tests := []struct {
		name string
		opts api.ListOptions
		want []int64
	}{
		{"queue a", api.ListOptions{Queues: []string{"a"}}, []int64{a[4], a[3], a[2], a[1], a[0]}},
		{"running", api.ListOptions{States: []job.State{job.StateRunning}}, []int64{c.Job.ID}},
		{"queued in b", api.ListOptions{States: []job.State{job.StateQueued}, Queues: []string{"b"}}, []int64{b[1]}},
		{"two queues, two states", api.ListOptions{States: []job.State{job.StateQueued, job.StateRunning}, Queues: []string{"b", "nope"}}, []int64{b[1], b[0]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := e.client.List(ctx, tt.opts)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if diff := cmp.Diff(tt.want, ids(l)); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var got []int64
		opts := api.ListOptions{Queues: []string{"a"}, Limit: 2}
		for pages := 0; ; pages++ {
			if pages > 5 {
				t.Fatal("too many pages")
			}
			l, err := e.client.List(ctx, opts)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(l.Jobs) > 2 {
				t.Errorf("page of %d jobs, limit 2", len(l.Jobs))
			}
			got = append(got, ids(l)...)
			if l.NextCursor == "" {
				break
			}
			opts.Cursor = l.NextCursor
		}
		if diff := cmp.Diff([]int64{a[4], a[3], a[2], a[1], a[0]}, got); diff != "" {
			t.Errorf("paged ids (-want +got):\n%s", diff)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for _, q := range []string{"state=queued,bogus", "limit=-1", "limit=x"} {
			status, eb, _ := e.raw("GET", api.Prefix+"/jobs?"+q, clientToken, "", nil)
			if status != http.StatusBadRequest || eb.Error.Code != api.CodeBadRequest {
				t.Errorf("GET /jobs?%s = %d %+v, want 400 bad_request", q, status, eb.Error)
			}
		}
		_, err := e.client.List(ctx, api.ListOptions{States: []job.State{"bogus"}})
		if !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), `"bogus"`) {
			t.Errorf("List(state bogus): %v, want ErrBadRequest naming the state", err)
		}
	})
}

// TestSubmitErrors checks the status, code and field of refused submissions.
func TestSubmitErrors(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.MaxRequestBytes = 64 << 10 })
	path := api.Prefix + "/jobs"
	tests := []struct {
		name      string
		body      string
		status    int
		code      string
		field     string
		inMessage string
	}{
		{"malformed JSON", `{"spec": {`, 400, api.CodeBadRequest, "", "truncated"},
		{"not JSON", `hello`, 400, api.CodeBadRequest, "", "not valid JSON"},
		{"empty", ``, 400, api.CodeBadRequest, "", "empty"},
		{"unknown envelope field", `{"spec": {"steps": [{"run": "x"}]}, "extra": 1}`, 400, api.CodeBadRequest, "", "extra"},
		{"trailing data", `{"spec": {"steps": [{"run": "x"}]}} {}`, 400, api.CodeBadRequest, "", "after the JSON"},
		{"no spec", `{}`, 422, api.CodeInvalid, "spec", "required"},
		{"unknown spec field", `{"spec": {"steps": [{"run": "x", "imgae": "alpine"}]}}`, 422, api.CodeInvalid, "steps[0].imgae", "image"},
		{"invalid spec", `{"spec": {"steps": [{"run": "x"}, {"run": " "}]}}`, 422, api.CodeInvalid, "steps[1].run", "required"},
		{"wrong type", `{"spec": {"steps": "x"}}`, 422, api.CodeInvalid, "steps", ""},
		{"unknown secret", `{"spec": {"steps": [{"run": "x"}], "secrets": ["NPM_TOKEN", "NOPE"]}}`, 422, api.CodeInvalid, "secrets[1]", `"NOPE"`},
		{"body over the limit", `{"spec": {"steps": [{"run": "` + strings.Repeat("x", 65<<10) + `"}]}}`, 413, api.CodeTooLarge, "", "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, _ := e.raw("POST", path, clientToken, "application/json", []byte(tt.body))
			if status != tt.status || eb.Error.Code != tt.code || eb.Error.Field != tt.field {
				t.Errorf("status %d code %q field %q (%s), want %d %q %q", status, eb.Error.Code, eb.Error.Field,
					eb.Error.Message, tt.status, tt.code, tt.field)
			}
			if !strings.Contains(eb.Error.Message, tt.inMessage) {
				t.Errorf("message %q does not mention %q", eb.Error.Message, tt.inMessage)
			}
		})
	}

	t.Run("typed client", func(t *testing.T) {
		spec := testSpec("default")
		spec.Steps[0].Run = ""
		_, err := e.client.Submit(context.Background(), spec)
		var se *api.StatusError
		if !errors.As(err, &se) || !errors.Is(err, api.ErrInvalid) || se.Status != 422 || se.Err.Field != "steps[0].run" {
			t.Errorf("Submit(no run): %v (%#v), want a 422 invalid naming steps[0].run", err, se)
		}
	})
}

func TestRouting(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tests := []struct {
		method, path string
		status       int
		allow        string
	}{
		{"GET", api.Prefix + "/nope", 404, ""},
		{"GET", "/", 404, ""},
		{"DELETE", api.Prefix + "/jobs/1", 405, "GET, HEAD"},
		{"GET", api.Prefix + "/jobs/1/cancel", 405, "POST"},
		{"GET", api.Prefix + "/executor/claim", 405, "POST"},
		{"GET", api.Prefix + "/jobs/abc", 400, ""},
		{"GET", api.Prefix + "/jobs/0", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			status, eb, h := e.raw(tt.method, tt.path, clientToken, "", nil)
			if status != tt.status || eb.Error.Code == "" {
				t.Errorf("status %d body %+v, want %d with a JSON error", status, eb, tt.status)
			}
			if got := h.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
			if got := h.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
		})
	}
}

// TestAuth is the credential matrix: each kind of token on each kind of
// route, job tokens for the wrong attempt, and dead job tokens.
func TestAuth(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.submit(testSpec("q"))
	e.submit(testSpec("q"))
	e.submit(testSpec("q"))
	a := e.claim("exec", "q")
	b := e.claim("exec", "q")
	done := e.claim("exec", "q")
	if _, err := e.exec.Finish(ctx, done.Token, ref(done), api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonExitCode}); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	aLogs := fmt.Sprintf("%s/attempts/%d/%d/logs?offset=0", api.Prefix, a.Job.ID, a.Attempt)
	aFinish := fmt.Sprintf("%s/attempts/%d/%d/finish", api.Prefix, a.Job.ID, a.Attempt)
	claimBody := []byte(`{"executor": {"name": "x"}, "queues": ["none"], "waitMs": 1}`)
	finishBody := []byte(`{"outcome": "succeeded", "reason": "success"}`)

	tests := []struct {
		name         string
		method, path string
		token        string
		body         []byte
		status       int
	}{
		{"no token", "GET", api.Prefix + "/jobs", "", nil, 401},
		{"unknown token", "GET", api.Prefix + "/jobs", "not-a-token-at-all-xyz", nil, 401},
		{"unknown job token", "GET", api.Prefix + "/jobs", "alj_bogus", nil, 401},
		{"client token on client route", "GET", api.Prefix + "/jobs", clientToken, nil, 200},
		{"executor token on client route", "GET", api.Prefix + "/jobs", executorToken, nil, 403},
		{"job token on client route", "GET", api.Prefix + "/jobs", a.Token, nil, 403},
		{"executor token on executors list", "GET", api.Prefix + "/executors", executorToken, nil, 403},
		{"client token on claim", "POST", api.Prefix + "/executor/claim", clientToken, claimBody, 403},
		{"job token on claim", "POST", api.Prefix + "/executor/claim", a.Token, claimBody, 403},
		{"executor token on claim", "POST", api.Prefix + "/executor/claim", executorToken, claimBody, 204},
		{"client token on heartbeat", "POST", api.Prefix + "/executor/heartbeat", clientToken, []byte(`{"executor":{"name":"x"}}`), 403},
		{"client token on log append", "POST", aLogs, clientToken, []byte("x"), 403},
		{"executor token on log append", "POST", aLogs, executorToken, []byte("x"), 403},
		{"executor token on finish", "POST", aFinish, executorToken, finishBody, 403},
		{"other job's token on log append", "POST", aLogs, b.Token, []byte("x"), 403},
		{"other job's token on finish", "POST", aFinish, b.Token, finishBody, 403},
		{"own token on log append", "POST", aLogs, a.Token, []byte("x"), 200},
		{"token after finish", "POST", fmt.Sprintf("%s/attempts/%d/%d/logs?offset=0", api.Prefix, done.Job.ID, done.Attempt), done.Token, []byte("x"), 401},
		{"executor token on metrics", "GET", "/metrics", executorToken, nil, 403},
		{"client token on metrics", "GET", "/metrics", clientToken, nil, 200},
		{"healthz without token", "GET", "/healthz", "", nil, 200},
		{"readyz without token", "GET", "/readyz", "", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, _ := e.raw(tt.method, tt.path, tt.token, "", tt.body)
			if status != tt.status {
				t.Errorf("status = %d (%+v), want %d", status, eb.Error, tt.status)
			}
			want := map[int]string{401: api.CodeUnauthorized, 403: api.CodeForbidden}[tt.status]
			if eb.Error.Code != want {
				t.Errorf("code = %q, want %q", eb.Error.Code, want)
			}
		})
	}

	t.Run("basic auth scheme", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.ts.URL+api.Prefix+"/jobs", nil)
		req.SetBasicAuth("user", clientToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("status = %d, want 401", resp.StatusCode)
		}
	})

	t.Run("typed client errors", func(t *testing.T) {
		_, err := api.NewClient(e.ts.URL, executorToken).List(ctx, api.ListOptions{})
		if !errors.Is(err, api.ErrForbidden) {
			t.Errorf("List with an executor token: %v, want ErrForbidden", err)
		}
		_, err = api.NewClient(e.ts.URL, "wrong-token-0123456789").Get(ctx, 1)
		if !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("Get with a wrong token: %v, want ErrUnauthorized", err)
		}
		_, err = e.exec.Finish(ctx, done.Token, ref(done), api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonExitCode})
		if !errors.Is(err, api.ErrUnauthorized) {
			t.Errorf("Finish again with the dead token: %v, want ErrUnauthorized", err)
		}
	})
}

func TestFinishValidation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(testSpec("q"))
	c := e.claim("exec", "q")
	path := fmt.Sprintf("%s/attempts/%d/%d/finish", api.Prefix, c.Job.ID, c.Attempt)
	tooMany := `{"outcome": "failed", "reason": "exit_code", "steps": [` + strings.Repeat(`{"name": "s"},`, 1000) + `{"name": "s"}]}`
	tests := []struct {
		name  string
		body  string
		code  string
		field string
	}{
		{"unknown outcome", `{"outcome": "won", "reason": "success"}`, api.CodeInvalid, "outcome"},
		{"unknown reason", `{"outcome": "succeeded", "reason": "luck"}`, api.CodeInvalid, "reason"},
		{"too many steps", tooMany, api.CodeInvalid, "steps"},
		{"unknown field", `{"outcome": "succeeded", "reason": "success", "exit": 0}`, api.CodeBadRequest, ""},
		{"wrong type", `{"outcome": 1, "reason": "success"}`, api.CodeBadRequest, "outcome"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, eb, _ := e.raw("POST", path, c.Token, "application/json", []byte(tt.body))
			if eb.Error.Code != tt.code || eb.Error.Field != tt.field {
				t.Errorf("error %+v, want code %q field %q", eb.Error, tt.code, tt.field)
			}
		})
	}
	// The attempt is still alive after the refused requests.
	if _, err := e.exec.Finish(context.Background(), c.Token, ref(c), api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
		t.Errorf("Finish: %v", err)
	}
}

func TestLogLimits(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.LogLimit = 1000 })
	ctx := context.Background()
	e.submit(testSpec("q"))
	c := e.claim("exec", "q")
	if c.LogLimit != 1000 {
		t.Errorf("claim log limit = %d, want 1000", c.LogLimit)
	}

	_, err := e.exec.AppendLog(ctx, c.Token, ref(c), 0, bytes.Repeat([]byte("x"), 1001))
	if !errors.Is(err, queue.ErrLogLimit) || !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("append over the log limit: %v, want ErrLogLimit and ErrTooLarge", err)
	}
	_, err = e.exec.AppendLog(ctx, c.Token, ref(c), 0, bytes.Repeat([]byte("x"), api.MaxLogChunkBytes+1))
	if !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("append over the chunk limit: %v, want ErrTooLarge", err)
	}
	_, err = e.exec.AppendLog(ctx, c.Token, ref(c), 5, []byte("gap"))
	if !errors.Is(err, queue.ErrLogGap) || errors.Is(err, queue.ErrInvalidState) {
		t.Errorf("append past the end: %v, want ErrLogGap only", err)
	}
	status, eb, _ := e.raw("POST", fmt.Sprintf("%s/attempts/%d/%d/logs", api.Prefix, c.Job.ID, c.Attempt), c.Token, "", []byte("x"))
	if status != 400 || eb.Error.Field != "offset" {
		t.Errorf("append without offset = %d %+v, want 400 naming offset", status, eb.Error)
	}
	if end := e.appendLog(c.Token, ref(c), 0, "fine"); end != 4 {
		t.Errorf("end = %d, want 4", end)
	}
	var buf bytes.Buffer
	_, err = e.client.Logs(ctx, c.Job.ID, api.LogOptions{Offset: 99}, &buf)
	if !errors.Is(err, api.ErrBadRequest) {
		t.Errorf("Logs past the end: %v, want ErrBadRequest", err)
	}
	_, err = e.client.Logs(ctx, c.Job.ID, api.LogOptions{Attempt: 2}, &buf)
	if !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("Logs of attempt 2: %v, want ErrNotFound", err)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.submit(testSpec("q"))
	c := e.claim("exec", "q")
	e.appendLog(c.Token, ref(c), 0, "12345")
	if _, err := e.exec.Finish(ctx, c.Token, ref(c), api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.ts.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+clientToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"airlock_jobs_submitted_total 1",
		`airlock_attempts_finished_total{outcome="succeeded"} 1`,
		"airlock_log_bytes_received_total 5",
		"airlock_claim_wait_seconds_count 1",
		"airlock_job_pickup_seconds_count 1",
		`airlock_http_request_duration_seconds_count{code="201",route="POST /api/v1/jobs"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	long := func(s string) string { return s + strings.Repeat("x", MinTokenLength) }
	base := func() Config {
		return Config{Store: nilStore{}, ClientTokens: []string{long("c")}, ExecutorTokens: []string{long("e")}}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"no store", func(c *Config) { c.Store = nil }, "store"},
		{"no client token", func(c *Config) { c.ClientTokens = nil }, "client token is required"},
		{"no executor token", func(c *Config) { c.ExecutorTokens = nil }, "executor token is required"},
		{"short token", func(c *Config) { c.ExecutorTokens = []string{"short"} }, "shorter than"},
		{"shared token", func(c *Config) { c.ExecutorTokens = c.ClientTokens }, "also a client token"},
		{"job token prefix", func(c *Config) { c.ClientTokens = []string{long("alj_")} }, "reserved"},
		{"claim wait over max", func(c *Config) { c.ClaimWait = 2 * time.Minute }, "maximum"},
		{"heartbeat not under lease", func(c *Config) { c.Lease = time.Second; c.HeartbeatInterval = time.Second }, "shorter than the lease"},
		{"negative", func(c *Config) { c.ReapInterval = -1 }, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// nilStore is a queue.Store that Validate can see is set; it is never called.
type nilStore struct{ queue.Store }

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("x: %w", queue.ErrStaleAttempt), 409, api.CodeStaleAttempt},
		{fmt.Errorf("x: %w", queue.ErrInvalidState), 409, api.CodeConflict},
		{fmt.Errorf("x: %w", queue.ErrLogGap), 409, api.CodeConflict},
		{fmt.Errorf("x: %w", queue.ErrLogLimit), 413, api.CodeTooLarge},
		{fmt.Errorf("x: %w", queue.ErrNotFound), 404, api.CodeNotFound},
		{fmt.Errorf("x: %w", queue.ErrUnknownToken), 401, api.CodeUnauthorized},
		{&job.ValidationError{Problems: []job.FieldError{{Field: "steps", Message: "m"}}}, 422, api.CodeInvalid},
		{errors.New("disk on fire"), 500, api.CodeInternal},
	}
	for _, tt := range tests {
		status, body := classify(tt.err)
		if status != tt.status || body.Code != tt.code {
			t.Errorf("classify(%v) = %d %q, want %d %q", tt.err, status, body.Code, tt.status, tt.code)
		}
		if status == 500 && strings.Contains(body.Message, "fire") {
			t.Errorf("500 message %q leaks the internal error", body.Message)
		}
		// And back again through the client's mapping.
		se := &api.StatusError{Status: status, Err: body}
		if sentinel := errors.Unwrap(tt.err); sentinel != nil && status != 500 && tt.err != queue.ErrLogGap {
			if errors.Is(sentinel, queue.ErrLogGap) || errors.Is(sentinel, queue.ErrUnknownToken) || errors.Is(sentinel, queue.ErrLogLimit) {
				continue // these map to codes shared with other errors; see TestLogLimits
			}
			if !errors.Is(se, sentinel) {
				t.Errorf("StatusError{%d %s} does not match %v", status, body.Code, sentinel)
			}
		}
	}
}
