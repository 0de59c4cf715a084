package executor_test

// The executor against the real coordinator over real HTTP, on a real SQLite
// store, running steps with the real shell runtime. The misbehaviours the
// real coordinator cannot be made to show are in executor_test.go, against
// a fake.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/coordinator"
	"github.com/airlock-run/airlock/internal/executor"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
	"github.com/airlock-run/airlock/internal/sandbox/shell"
)

const (
	clientToken   = "client-token-0123456789abcdef"
	executorToken = "executor-token-0123456789abcdef"
	npmSecret     = "npm_Zx8/secret+value=="
)

type realEnv struct {
	t      *testing.T
	client *api.Client
	exec   *executor.Executor
}

func setupReal(t *testing.T, mod func(*executor.Config)) *realEnv {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "queue.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	srv, err := coordinator.New(coordinator.Config{
		Store:             store,
		ClientTokens:      []string{clientToken},
		ExecutorTokens:    []string{executorToken},
		Secrets:           map[string]string{"NPM_TOKEN": npmSecret},
		Lease:             5 * time.Second,
		HeartbeatInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	srv.Start(ctx)
	t.Cleanup(func() {
		srv.Stop(ctx)
		ts.Close()
	})
	rt, err := shell.New(shell.Options{Root: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer // read only after the executor has stopped
	cfg := executor.Config{
		Version:   "v0.0.0-test",
		Queues:    []string{"default"},
		Runtime:   rt,
		ClaimWait: 5 * time.Second,
		KillGrace: 500 * time.Millisecond,
		Backoff:   executor.Backoff{Min: 5 * time.Millisecond, Max: 100 * time.Millisecond},
		Logger:    slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := executor.New(cfg, api.NewClient(ts.URL, executorToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := e.StopAndCancel(sctx); err != nil {
			t.Errorf("StopAndCancel: %v", err)
		}
		if t.Failed() {
			t.Logf("executor log:\n%s", logs.String())
		}
	})
	return &realEnv{t: t, client: api.NewClient(ts.URL, clientToken), exec: e}
}

func (env *realEnv) submit(spec job.Spec) *api.Job {
	env.t.Helper()
	spec.Version = job.SpecVersion
	spec.Queue = "default"
	j, err := env.client.Submit(context.Background(), spec)
	if err != nil {
		env.t.Fatalf("submitting: %v", err)
	}
	return j
}

// followLog returns the job's latest attempt's log once it is final.
func (env *realEnv) followLog(id int64) string {
	env.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if _, err := env.client.Logs(ctx, id, api.LogOptions{Follow: true}, &buf); err != nil {
		env.t.Fatalf("following log of job %d: %v", id, err)
	}
	return buf.String()
}

func (env *realEnv) get(id int64) *api.Job {
	env.t.Helper()
	j, err := env.client.Get(context.Background(), id)
	if err != nil {
		env.t.Fatalf("getting job %d: %v", id, err)
	}
	return j
}

// waitRunning polls until the job's step has started: from outside the
// executor package there is no signal to wait on.
func (env *realEnv) waitRunning(id int64) {
	env.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if len(env.exec.Running()) > 0 && env.get(id).State == job.StateRunning {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	env.t.Fatalf("job %d did not start running", id)
}

func TestRealCoordinatorRunsJob(t *testing.T) {
	t.Parallel()
	env := setupReal(t, nil)
	j := env.submit(job.Spec{
		Secrets: []string{"NPM_TOKEN"},
		Files:   map[string]job.File{"in/data.txt": job.InlineFile("payload")},
		Steps: []job.Step{
			{Name: "show", Run: `cat in/data.txt; echo; echo "token=$NPM_TOKEN"`},
			{Name: "fail", Run: "echo failing; exit 7"},
			{Name: "never", Run: "echo never-run"},
		},
	})
	log := env.followLog(j.ID)
	got := env.get(j.ID)
	if got.State != job.StateFailed || got.Reason != job.ReasonExitCode || got.Message != `step "fail" exited with code 7` {
		t.Errorf("job: got %s/%s %q, want failed/exit_code naming the step", got.State, got.Reason, got.Message)
	}
	if len(got.Attempts) != 1 {
		t.Fatalf("attempts: got %d, want 1", len(got.Attempts))
	}
	a := got.Attempts[0]
	if a.Executor != env.exec.Name() {
		t.Errorf("attempt executor: got %q, want %q", a.Executor, env.exec.Name())
	}
	if len(a.Steps) != 2 || a.Steps[0].Name != "show" || a.Steps[1].ExitCode != 7 {
		t.Errorf("attempt steps: got %+v, want show (0) and fail (7)", a.Steps)
	}
	for _, want := range []string{"payload\n", "token=[REDACTED]\n", "==> step fail (2/3)", "==> job failed"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q; log:\n%s", want, log)
		}
	}
	for _, bad := range []string{npmSecret, "never-run"} {
		if strings.Contains(log, bad) {
			t.Errorf("log contains %q; log:\n%s", bad, log)
		}
	}

	list, err := env.client.Executors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, e := range list.Executors {
		if e.Name == env.exec.Name() {
			found = true
			if e.Runtime != "shell" || e.Version != "v0.0.0-test" || e.MaxJobs != 1 || e.OS == "" || e.Arch == "" {
				t.Errorf("executor as the coordinator sees it: got %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("executors: %q not listed in %+v", env.exec.Name(), list.Executors)
	}
}

func TestRealCoordinatorCancel(t *testing.T) {
	t.Parallel()
	env := setupReal(t, nil)
	j := env.submit(job.Spec{Steps: []job.Step{{Name: "wait", Run: "echo waiting; sleep 30"}}})
	env.waitRunning(j.ID)
	asked := time.Now()
	if _, err := env.client.Cancel(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	env.followLog(j.ID)
	took := time.Since(asked)
	got := env.get(j.ID)
	if got.State != job.StateCanceled || got.Reason != job.ReasonCanceled {
		t.Errorf("job: got %s/%s %q, want canceled", got.State, got.Reason, got.Message)
	}
	if took > 3*time.Second {
		t.Errorf("cancellation took %s, want about one heartbeat (200ms) plus the kill grace (500ms)", took)
	}
}

func TestRealCoordinatorDrainRequeues(t *testing.T) {
	t.Parallel()
	env := setupReal(t, nil)
	j := env.submit(job.Spec{Steps: []job.Step{{Name: "wait", Run: "sleep 30"}}})
	env.waitRunning(j.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := env.exec.Stop(ctx); err == nil {
		t.Error("Stop: got nil, want an error saying a job was cancelled")
	}
	got := env.get(j.ID)
	if got.State != job.StateQueued || len(got.Attempts) != 1 || got.Attempts[0].Reason != job.ReasonDrained {
		t.Errorf("job: got %s with attempts %+v, want queued again after a drained attempt", got.State, got.Attempts)
	}
}

func TestRealCoordinatorClaimsInParallel(t *testing.T) {
	t.Parallel()
	const maxJobs, jobs = 4, 24
	env := setupReal(t, func(c *executor.Config) { c.MaxJobs, c.MaxClaimsInFlight = maxJobs, maxJobs })
	var ids []int64
	for i := range jobs {
		ids = append(ids, env.submit(job.Spec{Steps: []job.Step{{Name: "quick", Run: fmt.Sprintf("echo job-%d", i)}}}).ID)
	}
	for i, id := range ids {
		if log := env.followLog(id); !strings.Contains(log, fmt.Sprintf("job-%d\n", i)) {
			t.Errorf("job %d: log lacks its output:\n%s", id, log)
		}
		if got := env.get(id); got.State != job.StateSucceeded || len(got.Attempts) != 1 {
			t.Errorf("job %d: got %s after %d attempts, want succeeded after 1", id, got.State, len(got.Attempts))
		}
	}
	list, err := env.client.Executors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Executors {
		if e.Name == env.exec.Name() && (e.MaxJobs != maxJobs || e.Running > maxJobs) {
			t.Errorf("executor as the coordinator sees it: running %d of %d, want at most %d of %d", e.Running, e.MaxJobs, maxJobs, maxJobs)
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
