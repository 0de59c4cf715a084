package executor

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/shell"
)

// testEnv is an executor wired to a fake coordinator and a real shell runtime.
type testEnv struct {
	t    *testing.T
	fake *fakeCoordinator
	exec *Executor
	rt   *shell.Runtime
	logs *logRecorder
}

func setup(t *testing.T, opts ...func(*Config)) *testEnv {
	t.Helper()
	return setupWith(t, nil, opts...)
}

// setupWith is setup with the executor's client wrapped by wrap, if not nil.
func setupWith(t *testing.T, wrap func(*api.Client) Coordinator, opts ...func(*Config)) *testEnv {
	t.Helper()
	fake := newFakeCoordinator(t)
	logs := &logRecorder{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("executor log:\n%s", logs.String())
		}
	})
	rt, err := shell.New(shell.Options{Root: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Version:   "v1.2.3-test",
		Queues:    []string{"default"},
		Runtime:   rt,
		ClaimWait: 5 * time.Second,
		KillGrace: 500 * time.Millisecond,
		Backoff:   Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, o := range opts {
		o(&cfg)
	}
	var c Coordinator = api.NewClient(fake.srv.URL, fakeExecutorToken)
	if wrap != nil {
		c = wrap(c.(*api.Client))
	}
	e, err := New(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	e.testSignals.Init()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.StopAndCancel(ctx); err != nil {
			t.Errorf("StopAndCancel: %v", err)
		}
	})
	return &testEnv{t: t, fake: fake, exec: e, rt: rt, logs: logs}
}

func (env *testEnv) start() {
	env.t.Helper()
	if err := env.exec.Start(context.Background()); err != nil {
		env.t.Fatal(err)
	}
}

// logRecorder collects the executor's log lines.
type logRecorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logRecorder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func step(name, run string) job.Step { return job.Step{Name: name, Run: run} }

func spec(steps ...job.Step) job.Spec {
	return job.Spec{Version: job.SpecVersion, Queue: "default", Steps: steps}
}

// stepResults drops what varies between runs.
func stepResults(steps []queue.StepResult) []queue.StepResult {
	var out []queue.StepResult
	for _, s := range steps {
		// Duration is measured on the monotonic clock, which the wire drops.
		if d := s.Duration - s.FinishedAt.Sub(s.StartedAt); s.StartedAt.IsZero() || s.Duration < 0 || d > 50*time.Millisecond || d < -50*time.Millisecond {
			s.Name += " (bad times)"
		}
		s.StartedAt, s.FinishedAt, s.Duration = time.Time{}, time.Time{}, 0
		out = append(out, s)
	}
	return out
}

func TestRunsJobAndReportsSuccess(t *testing.T) {
	t.Parallel()
	env := setup(t)
	s := spec(
		step("hello", `echo "hello from $AIRLOCK_STEP"; cat config/input.json; echo oops >&2; stat -c 'mode=%a mtime=%Y' bin/run; ./bin/run`),
		step("env", `echo "job=$AIRLOCK_JOB_ID attempt=$AIRLOCK_ATTEMPT both=$BOTH job_only=$JOB_ONLY"`),
	)
	s.Env = map[string]string{"BOTH": "job", "JOB_ONLY": "j"}
	s.Steps[1].Env = map[string]string{"BOTH": "step"}
	s.Files = map[string]job.File{"config/input.json": job.InlineFile(`{"answer": 42}`), "bin/run": {Content: "#!/bin/sh\necho ran", Mode: 0o750, ModTime: time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)}}
	j := env.fake.push(s, nil)
	env.start()

	fin := env.fake.waitFinished(j)
	if got, want := fin.Outcome, job.OutcomeSucceeded; got != want {
		t.Fatalf("outcome: got %q, want %q (%s)", got, want, fin.Message)
	}
	if got, want := fin.Reason, job.ReasonSuccess; got != want {
		t.Errorf("reason: got %q, want %q", got, want)
	}
	wantSteps := []queue.StepResult{{Name: "hello"}, {Name: "env"}}
	if diff := cmp.Diff(wantSteps, stepResults(fin.Steps)); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	log := env.fake.logOf(j)
	for _, want := range []string{
		"==> step hello (1/2)\n",
		"hello from hello\n",
		`{"answer": 42}`,
		"oops\n",
		"mode=750 mtime=1580702706\nran\n",
		"==> step env (2/2)\n",
		fmt.Sprintf("job=%d attempt=1 both=step job_only=j\n", j.id),
		"==> step env exited with code 0",
		"==> job succeeded",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q; log:\n%s", want, log)
		}
	}
	if rep := env.exec.testSignals.jobDone.WaitOrTimeout(t); !rep.Reported {
		t.Errorf("report: got %+v, want reported", rep)
	}
	if got := env.exec.Running(); len(got) != 0 {
		t.Errorf("Running after the job: got %v, want none", got)
	}
}

func TestFailingStepStopsTheJob(t *testing.T) {
	t.Parallel()
	env := setup(t)
	j := env.fake.push(spec(
		step("setup", "echo setting up"),
		step("build", "echo building; exit 3"),
		step("test", "echo never-run"),
	), nil)
	env.start()

	fin := env.fake.waitFinished(j)
	want := api.FinishRequest{
		Outcome: job.OutcomeFailed,
		Reason:  job.ReasonExitCode,
		Message: `step "build" exited with code 3`,
		Steps:   []queue.StepResult{{Name: "setup"}, {Name: "build", ExitCode: 3}},
	}
	fin.Steps = stepResults(fin.Steps)
	if diff := cmp.Diff(want, fin); diff != "" {
		t.Errorf("finish (-want +got):\n%s", diff)
	}
	if log := env.fake.logOf(j); strings.Contains(log, "never-run") || !strings.Contains(log, "building") {
		t.Errorf("log: want the build step's output and not the test step's; got:\n%s", log)
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	slow := step("slow", "echo started; sleep 30")
	stepTimeout := slow
	stepTimeout.Timeout = job.Duration(300 * time.Millisecond)
	jobTimeout := spec(step("quick", "true"), slow)
	jobTimeout.Timeout = job.Duration(500 * time.Millisecond)
	for _, tc := range []struct {
		name    string
		spec    job.Spec
		cfg     func(*Config)
		reason  job.Reason
		message string
		steps   int
	}{
		{"step timeout", spec(stepTimeout), nil, job.ReasonStepTimeout, `step "slow" timed out after 300ms`, 1},
		{"default step timeout", spec(slow), func(c *Config) { c.DefaultStepTimeout = 300 * time.Millisecond },
			job.ReasonStepTimeout, `step "slow" timed out after 300ms`, 1},
		{"job timeout", jobTimeout, nil, job.ReasonJobTimeout, `job timed out after 500ms during step "slow"`, 2},
		{"default job timeout", spec(slow), func(c *Config) { c.DefaultJobTimeout = 400 * time.Millisecond },
			job.ReasonJobTimeout, `job timed out after 400ms during step "slow"`, 1},
		{"max job timeout", jobTimeout, func(c *Config) { c.MaxJobTimeout = 400 * time.Millisecond },
			job.ReasonJobTimeout, `job timed out after 400ms during step "slow"`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var opts []func(*Config)
			if tc.cfg != nil {
				opts = append(opts, tc.cfg)
			}
			env := setup(t, opts...)
			j := env.fake.push(tc.spec, nil)
			env.start()
			fin := env.fake.waitFinished(j)
			if fin.Outcome != job.OutcomeFailed || fin.Reason != tc.reason || fin.Message != tc.message {
				t.Errorf("finish: got %s/%s %q, want failed/%s %q", fin.Outcome, fin.Reason, fin.Message, tc.reason, tc.message)
			}
			if len(fin.Steps) != tc.steps {
				t.Fatalf("steps: got %d, want %d", len(fin.Steps), tc.steps)
			}
			last := fin.Steps[len(fin.Steps)-1]
			if !last.TimedOut || last.Name != "slow" {
				t.Errorf("last step: got %+v, want slow, timed out", last)
			}
			if last.Duration > 5*time.Second {
				t.Errorf("slow step took %s: the timeout did not stop it", last.Duration)
			}
		})
	}
}

func TestSecretsAreInjectedAndRedacted(t *testing.T) {
	t.Parallel()
	env := setup(t)
	const secret = "s3cr3t/V@lue+with=odd&chars"
	half := len(secret) / 2
	s := spec(step("leak", fmt.Sprintf(`
[ "$API_TOKEN" = '%s' ] && echo token-injected
echo "plain: $API_TOKEN"
printf 'base64: %%s\n' "$(printf %%s "$API_TOKEN" | base64 -w0)"
echo 'url: %s'
printf 'split: %s'; sleep 0.4; printf '%s\n'
echo done`, secret, url.QueryEscape(secret), secret[:half], secret[half:])))
	s.Secrets = []string{"API_TOKEN"}
	j := env.fake.push(s, map[string]string{"API_TOKEN": secret})
	env.start()

	fin := env.fake.waitFinished(j)
	if fin.Outcome != job.OutcomeSucceeded {
		t.Fatalf("outcome: got %s/%s %q, want succeeded", fin.Outcome, fin.Reason, fin.Message)
	}
	log := env.fake.logOf(j)
	for _, leaked := range []string{
		secret,
		base64.StdEncoding.EncodeToString([]byte(secret)),
		url.QueryEscape(secret),
		secret[:half+2], // the split write, whichever way it was cut
		secret[half-2:],
	} {
		if strings.Contains(log, leaked) {
			t.Errorf("log contains %q; log:\n%s", leaked, log)
		}
	}
	for _, want := range []string{
		"token-injected\n",
		"plain: [REDACTED]\n",
		"base64: [REDACTED]\n",
		"url: [REDACTED]\n",
		"split: [REDACTED]\n",
		"done\n",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q; log:\n%s", want, log)
		}
	}
}

func TestCancelViaHeartbeat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  string
		log  string // what the step prints as it is stopped
	}{
		{"exits on SIGTERM", "sleep 30", ""},
		{"ignores SIGTERM", "trap '' TERM; sleep 30 & wait; sleep 30", ""},
		{"cleans up on SIGTERM", "trap 'echo cleaning-up; exit 1' TERM; sleep 30 & wait", "cleaning-up\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := setup(t)
			j := env.fake.push(spec(step("wait", tc.run), step("after", "echo never")), nil)
			env.start()
			env.exec.testSignals.stepStarted.WaitOrTimeout(t)

			asked := time.Now()
			env.fake.requestCancel(j)
			fin := env.fake.waitFinished(j)
			took := time.Since(asked)

			if fin.Outcome != job.OutcomeCanceled || fin.Reason != job.ReasonCanceled {
				t.Errorf("finish: got %s/%s %q, want canceled/canceled", fin.Outcome, fin.Reason, fin.Message)
			}
			if len(fin.Steps) != 1 {
				t.Errorf("steps: got %d, want 1 (the second never runs)", len(fin.Steps))
			}
			if log := env.fake.logOf(j); !strings.Contains(log, tc.log) || strings.Contains(log, "never") {
				t.Errorf("log: want %q from the stopped step and nothing from the next; got:\n%s", tc.log, log)
			}
			t.Logf("cancellation took %s", took)
			// One heartbeat interval plus the kill grace, and some slack
			// for a loaded machine running the race detector.
			hb := time.Duration(env.fake.heartbeatMS) * time.Millisecond
			if limit := hb + env.exec.cfg.KillGrace + 1500*time.Millisecond; took > limit {
				t.Errorf("cancellation took %s, want at most %s", took, limit)
			}
		})
	}
}

func TestUnknownAttemptIsKilledWithoutReport(t *testing.T) {
	t.Parallel()
	env := setup(t)
	j := env.fake.push(spec(step("wait", "sleep 30")), nil)
	env.start()
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)

	env.fake.forget(j)
	rep := env.exec.testSignals.jobDone.WaitOrTimeout(t)
	if !rep.Lost || rep.Reported {
		t.Errorf("report: got %+v, want lost and not reported", rep)
	}
	if got := env.exec.Running(); len(got) != 0 {
		t.Errorf("Running: got %v, want none", got)
	}
	if _, calls := env.fake.jobState(j); calls != 0 {
		t.Errorf("finish calls: got %d, want 0", calls)
	}
	if _, err := os.Stat(env.rt.Root() + "/" + SandboxName(rep.Ref)); !os.IsNotExist(err) {
		t.Errorf("sandbox directory: got %v, want it removed", err)
	}
}

func TestMaxJobsIsRespected(t *testing.T) {
	t.Parallel()
	env := setup(t, func(c *Config) { c.MaxJobs = 2 })
	var jobs []*fakeJob
	for range 5 {
		jobs = append(jobs, env.fake.push(spec(step("nap", "sleep 0.2")), nil))
	}
	env.start()
	for _, j := range jobs {
		if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
			t.Errorf("job %d: got %s %q, want succeeded", j.id, fin.Outcome, fin.Message)
		}
	}
	env.fake.mu.Lock()
	maxRunning := env.fake.maxRunning
	env.fake.mu.Unlock()
	if maxRunning != 2 {
		t.Errorf("most jobs running at once: got %d, want 2", maxRunning)
	}
	for _, c := range env.fake.claimRequests() {
		if c.Executor.Running >= c.Executor.MaxJobs || c.Executor.MaxJobs != 2 {
			t.Errorf("claim with running=%d max=%d: claims must come only from a free slot", c.Executor.Running, c.Executor.MaxJobs)
		}
	}
}

func TestCoordinatorUnreachableAtStart(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.fake.set(func(f *fakeCoordinator) { f.down = true })
	env.start()
	for range 3 {
		env.exec.testSignals.claimFailed.WaitOrTimeout(t)
	}
	if log := env.logs.String(); !strings.Contains(log, "coordinator unreachable, retrying in") {
		t.Errorf("executor log lacks the unreachable line:\n%s", log)
	}

	env.fake.set(func(f *fakeCoordinator) { f.down = false })
	j := env.fake.push(spec(step("hi", "echo hi")), nil)
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
	if log := env.logs.String(); !strings.Contains(log, "coordinator reachable again") {
		t.Errorf("executor log lacks the recovery line:\n%s", log)
	}
}

func TestExecutorTokenRejected(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.fake.set(func(f *fakeCoordinator) { f.rejectClaims = true })
	env.start()
	for range 2 {
		env.exec.testSignals.claimFailed.WaitOrTimeout(t)
	}
	if log := env.logs.String(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "executor token rejected") {
		t.Errorf("executor log lacks the rejection as an ERROR:\n%s", log)
	}
	env.fake.set(func(f *fakeCoordinator) { f.rejectClaims = false })
	j := env.fake.push(spec(step("hi", "echo hi")), nil)
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
}

func TestFinishIsRetried(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.fake.set(func(f *fakeCoordinator) { f.failFinishes = 3 })
	j := env.fake.push(spec(step("hi", "echo hi")), nil)
	env.start()
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
	if rep := env.exec.testSignals.jobDone.WaitOrTimeout(t); !rep.Reported {
		t.Errorf("report: got %+v, want reported", rep)
	}
	if _, calls := env.fake.jobState(j); calls != 4 {
		t.Errorf("finish calls: got %d, want 4", calls)
	}
}

func TestHeartbeatFailuresDoNotStopJobs(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.fake.set(func(f *fakeCoordinator) { f.failHeartbeat = true })
	j := env.fake.push(spec(step("nap", "sleep 0.5; echo rested")), nil)
	env.start()
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
	if log := env.logs.String(); !strings.Contains(log, "heartbeat failed") {
		t.Errorf("executor log lacks the heartbeat failure:\n%s", log)
	}
}

func TestSlowHeartbeatsDoNotStopJobs(t *testing.T) {
	t.Parallel()
	env := setup(t)
	// Slower than the heartbeat timeout (2s at the least).
	env.fake.set(func(f *fakeCoordinator) { f.slowHeartbeat = 3 * time.Second })
	env.start()
	var jobs []*fakeJob
	for range 3 {
		jobs = append(jobs, env.fake.push(spec(step("quick", "echo quick")), nil))
	}
	for _, j := range jobs {
		if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
			t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
		}
	}
}

func TestStartContextCancelsJobs(t *testing.T) {
	t.Parallel()
	env := setup(t)
	j := env.fake.push(spec(step("forever", "sleep 30")), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := env.exec.Start(ctx); err != nil {
		t.Fatal(err)
	}
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)
	cancel()
	fin := env.fake.waitFinished(j)
	if fin.Outcome != job.OutcomeErrored || fin.Reason != job.ReasonDrained {
		t.Errorf("finish: got %s/%s %q, want errored/drained", fin.Outcome, fin.Reason, fin.Message)
	}
	if err := env.exec.Stop(context.Background()); err != nil {
		t.Errorf("Stop after the context ended: %v", err)
	}
	if err := env.exec.Start(context.Background()); err == nil {
		t.Error("second Start: got nil, want an error")
	}
}

func TestHeartbeatReportsRunningAttempts(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.start()
	// The first heartbeat goes out at start, with nothing running.
	if hb := env.exec.testSignals.heartbeat.WaitOrTimeout(t); len(hb.Attempts) != 0 {
		t.Errorf("first heartbeat: got attempts %v, want none", hb.Attempts)
	}
	j := env.fake.push(spec(step("wait", "sleep 30")), nil)
	ref := env.exec.testSignals.claimed.WaitOrTimeout(t)
	if ref.JobID != j.id || ref.Attempt != 1 {
		t.Errorf("claimed: got %+v, want job %d attempt 1", ref, j.id)
	}
	hb := env.exec.testSignals.heartbeat.WaitFor(t, func(hb api.HeartbeatRequest) bool { return len(hb.Attempts) > 0 })
	if diff := cmp.Diff([]queue.AttemptRef{ref}, hb.Attempts); diff != "" {
		t.Errorf("heartbeat attempts (-want +got):\n%s", diff)
	}
	if hb.Executor.Running != 1 {
		t.Errorf("heartbeat running: got %d, want 1", hb.Executor.Running)
	}
}

func TestExecutorInfo(t *testing.T) {
	t.Parallel()
	env := setup(t, func(c *Config) { c.MaxJobs = 3; c.Queues = []string{"default", "gpu"} })
	env.start()
	hb := env.exec.testSignals.heartbeat.WaitOrTimeout(t)
	host, _ := os.Hostname()
	got := env.fake.claimRequests()
	for len(got) == 0 {
		env.exec.testSignals.heartbeat.WaitOrTimeout(t)
		got = env.fake.claimRequests()
	}
	want := queue.ExecutorInfo{
		Name:    env.exec.Name(),
		Version: "v1.2.3-test",
		OS:      runtime.GOOS,
		Arch:    runtime.GOARCH,
		Runtime: "shell",
		Queues:  []string{"default", "gpu"},
		MaxJobs: 3,
	}
	if diff := cmp.Diff(want, got[0].Executor); diff != "" {
		t.Errorf("claim executor info (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, hb.Executor); diff != "" {
		t.Errorf("heartbeat executor info (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"default", "gpu"}, got[0].Queues); diff != "" {
		t.Errorf("claim queues (-want +got):\n%s", diff)
	}
	if got[0].WaitMS != 5000 {
		t.Errorf("claim wait: got %dms, want 5000ms", got[0].WaitMS)
	}
	if !strings.HasPrefix(env.exec.Name(), host+"-") || len(env.exec.Name()) != len(host)+7 {
		t.Errorf("name: got %q, want %q-<6 hex digits>", env.exec.Name(), host)
	}
}

func TestStopDrains(t *testing.T) {
	t.Parallel()
	env := setup(t)
	first := env.fake.push(spec(step("work", "sleep 0.5; echo finished-work")), nil)
	second := env.fake.push(spec(step("work", "echo second")), nil)
	env.start()
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := env.exec.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-first.done:
	default:
		t.Fatal("Stop returned before the running job was reported")
	}
	if fin := env.fake.waitFinished(first); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("running job: got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
	if !strings.Contains(env.fake.logOf(first), "finished-work") {
		t.Errorf("running job's log lacks its output:\n%s", env.fake.logOf(first))
	}
	if state, _ := env.fake.jobState(second); state != job.StateQueued {
		t.Errorf("queued job: got %s, want still queued (no claim while draining)", state)
	}
}

func TestStopCancelsAtDeadline(t *testing.T) {
	t.Parallel()
	env := setup(t)
	j := env.fake.push(spec(step("forever", "sleep 30")), nil)
	env.start()
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := env.exec.Stop(ctx)
	if err == nil {
		t.Error("Stop: got nil, want an error saying jobs were cancelled")
	}
	select {
	case <-j.done:
	default:
		t.Fatal("Stop returned before the cancelled job was reported")
	}
	if n := env.exec.testSignals.drainCanceled.WaitOrTimeout(t); n != 1 {
		t.Errorf("jobs cancelled at the deadline: got %d, want 1", n)
	}
	fin := env.fake.waitFinished(j)
	if fin.Outcome != job.OutcomeErrored || fin.Reason != job.ReasonDrained {
		t.Errorf("finish: got %s/%s %q, want errored/drained", fin.Outcome, fin.Reason, fin.Message)
	}
}

func TestStopAndCancel(t *testing.T) {
	t.Parallel()
	env := setup(t, func(c *Config) { c.MaxJobs = 2 })
	a := env.fake.push(spec(step("forever", "sleep 30")), nil)
	b := env.fake.push(spec(step("forever", "sleep 30")), nil)
	env.start()
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)

	start := time.Now()
	if err := env.exec.StopAndCancel(context.Background()); err != nil {
		t.Fatalf("StopAndCancel: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("StopAndCancel took %s", took)
	}
	for _, j := range []*fakeJob{a, b} {
		fin := env.fake.waitFinished(j)
		if fin.Outcome != job.OutcomeErrored || fin.Reason != job.ReasonDrained {
			t.Errorf("job %d: got %s/%s %q, want errored/drained", j.id, fin.Outcome, fin.Reason, fin.Message)
		}
	}
}

func TestRunDrainsOnSignal(t *testing.T) {
	t.Parallel()
	env := setup(t)
	j := env.fake.push(spec(step("work", "sleep 0.3; echo fine")), nil)
	sigs := make(chan os.Signal, 2)
	done := make(chan error, 1)
	go func() { done <- env.exec.Run(context.Background(), sigs) }()
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)
	sigs <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
}

func TestRunSecondSignalCancels(t *testing.T) {
	t.Parallel()
	env := setup(t, func(c *Config) { c.DrainTimeout = time.Hour })
	j := env.fake.push(spec(step("forever", "sleep 30")), nil)
	sigs := make(chan os.Signal, 2)
	done := make(chan error, 1)
	go func() { done <- env.exec.Run(context.Background(), sigs) }()
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGINT
	select {
	case err := <-done:
		if err == nil {
			t.Error("Run: got nil, want an error saying jobs were cancelled")
		}
	case <-time.After(testSignalTimeout):
		t.Fatal("Run did not return after the second signal")
	}
	fin := env.fake.waitFinished(j)
	if fin.Outcome != job.OutcomeErrored || fin.Reason != job.ReasonDrained {
		t.Errorf("finish: got %s/%s %q, want errored/drained", fin.Outcome, fin.Reason, fin.Message)
	}
}

func TestSystemErrors(t *testing.T) {
	t.Parallel()
	env := setup(t)
	// A sandbox of the attempt's name already open: the runtime refuses to
	// open it again.
	taken := env.fake.push(spec(step("hi", "echo hi")), nil)
	sb, err := env.rt.Open(context.Background(), sandboxParams(queue.AttemptRef{JobID: taken.id, Attempt: 1}))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	badDir := env.fake.push(spec(step("first", "echo ok"), job.Step{Name: "escape", Run: "pwd", Dir: "../../.."}), nil)
	badFile := spec(step("hi", "echo never-run"))
	badFile.Files = map[string]job.File{"ok.txt": job.InlineFile("fine"), "../outside.txt": job.InlineFile("nope")}
	badFiles := env.fake.push(badFile, nil)
	env.start()

	for _, tc := range []struct {
		j       *fakeJob
		message string
		steps   int
	}{
		{taken, "opening sandbox", 0},
		{badDir, `running step "escape"`, 2},
	} {
		fin := env.fake.waitFinished(tc.j)
		if fin.Outcome != job.OutcomeErrored || fin.Reason != job.ReasonSystemError || !strings.Contains(fin.Message, tc.message) {
			t.Errorf("job %d: got %s/%s %q, want errored/system_error containing %q", tc.j.id, fin.Outcome, fin.Reason, fin.Message, tc.message)
		}
		if len(fin.Steps) != tc.steps {
			t.Errorf("job %d: got %d steps, want %d", tc.j.id, len(fin.Steps), tc.steps)
		}
	}
	fin := env.fake.waitFinished(badFiles)
	if want := `job file "../outside.txt": unsafe entry: path escapes`; fin.Outcome != job.OutcomeFailed || fin.Reason != job.ReasonCheckout || !strings.Contains(fin.Message, want) {
		t.Errorf("job with an escaping file: got %s/%s %q, want failed/checkout containing %q", fin.Outcome, fin.Reason, fin.Message, want)
	}
	if log := env.fake.logOf(badFiles); strings.Contains(log, "never-run") {
		t.Errorf("a job whose files were refused ran its steps:\n%s", log)
	}
}

func TestLogThatCannotBeShippedDoesNotHangTheStep(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.fake.set(func(f *fakeCoordinator) { f.refuseLogs = true })
	j := env.fake.push(spec(step("chatty", "head -c 20000000 /dev/zero; echo end")), nil)
	env.start()
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
	if log := env.logs.String(); !strings.Contains(log, "job log incomplete") {
		t.Errorf("executor log lacks the log failure:\n%s", log)
	}
}

func TestLogIsCapped(t *testing.T) {
	t.Parallel()
	env := setup(t)
	env.fake.set(func(f *fakeCoordinator) { f.logLimit = 64 << 10 })
	j := env.fake.push(spec(step("chatty", "yes airlock | head -c 50000000; echo; echo the-very-end")), nil)
	env.start()
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
	log := env.fake.logOf(j)
	if len(log) > 64<<10 {
		t.Errorf("log is %d bytes, over the 64KiB limit", len(log))
	}
	for _, want := range []string{"==> step chatty (1/1)", "bytes omitted", "the-very-end", "==> job succeeded"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func sandboxParams(ref queue.AttemptRef) sandbox.OpenParams {
	return sandbox.OpenParams{Name: SandboxName(ref)}
}
