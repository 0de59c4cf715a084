package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

type claimResult struct {
	c   *api.ClaimResponse
	err error
	at  time.Time
}

// startClaim starts a long-poll claim and waits until it is parked in the
// hub, so whatever the test does next happens while it waits.
func (e *env) startClaim(executor string, waitMS int64, queues ...string) <-chan claimResult {
	e.t.Helper()
	before := e.srv.claims.waitingOn(queues[0])
	ch := make(chan claimResult, 1)
	go func() {
		c, err := e.exec.Claim(context.Background(), api.ClaimRequest{
			Executor: queue.ExecutorInfo{Name: executor}, Queues: queues, WaitMS: waitMS,
		})
		ch <- claimResult{c, err, time.Now()}
	}()
	waitFor(e.t, "the claim to wait", func() bool { return e.srv.claims.waitingOn(queues[0]) > before })
	return ch
}

func (e *env) result(ch <-chan claimResult) claimResult {
	e.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		e.t.Fatal("claim did not return")
		return claimResult{}
	}
}

// woken returns the claim's answer and fails the test unless it came within
// a second of since: without a wake-up it would come only at the 5s re-check.
func (e *env) woken(ch <-chan claimResult, since time.Time) claimResult {
	e.t.Helper()
	r := e.result(ch)
	if latency := r.at.Sub(since); latency > time.Second {
		e.t.Errorf("claim answered %v after the event that should wake it, want milliseconds", latency)
	}
	return r
}

func TestClaimWokenBySubmit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ch := e.startClaim("exec", 20_000, "other", "q")
	submitted := time.Now()
	j := e.submit(testSpec("q"))
	r := e.result(ch)
	if r.err != nil || r.c == nil {
		t.Fatalf("Claim = %v, %v; want the job", r.c, r.err)
	}
	if r.c.Job.ID != j.ID {
		t.Errorf("claimed job %d, want %d", r.c.Job.ID, j.ID)
	}
	// Without a wake-up the claim would answer only at the 5s re-check.
	if latency := r.at.Sub(submitted); latency > time.Second {
		t.Errorf("claim answered %v after the submit, want milliseconds", latency)
	} else {
		t.Logf("submit to claim answer: %v", latency)
	}
}

func TestClaimTimesOut(t *testing.T) {
	t.Parallel()
	e := setup(t)
	start := time.Now()
	c, err := e.exec.Claim(context.Background(), api.ClaimRequest{
		Executor: queue.ExecutorInfo{Name: "exec"}, Queues: []string{"q"}, WaitMS: 100,
	})
	if c != nil || err != nil {
		t.Fatalf("Claim = %v, %v; want nil, nil (204)", c, err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("claim answered after %v, before its 100ms wait", waited)
	}
	if n := e.srv.claims.waitingOn("q"); n != 0 {
		t.Errorf("%d claimers still registered after the timeout", n)
	}
}

func TestClaimRequestErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	tests := []struct {
		name  string
		req   api.ClaimRequest
		field string
	}{
		{"no name", api.ClaimRequest{Queues: []string{"q"}}, "executor.name"},
		{"no queues", api.ClaimRequest{Executor: queue.ExecutorInfo{Name: "x"}}, "queues"},
		{"empty queue", api.ClaimRequest{Executor: queue.ExecutorInfo{Name: "x"}, Queues: []string{"q", ""}}, "queues[1]"},
		{"negative wait", api.ClaimRequest{Executor: queue.ExecutorInfo{Name: "x"}, Queues: []string{"q"}, WaitMS: -1}, "waitMs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.exec.Claim(context.Background(), tt.req)
			var se *api.StatusError
			if !errors.As(err, &se) || !errors.Is(err, api.ErrInvalid) || se.Err.Field != tt.field {
				t.Errorf("Claim: %v, want ErrInvalid naming %s", err, tt.field)
			}
		})
	}
}

// TestClaimWakesOnePerJob checks that n submits wake n waiting claimers,
// each with its own job, and leave the others waiting.
func TestClaimWakesOnePerJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var chans []<-chan claimResult
	for range 4 {
		chans = append(chans, e.startClaim("exec", 500, "q"))
	}
	e.submit(testSpec("q"))
	e.submit(testSpec("q"))
	got := map[int64]bool{}
	empty := 0
	for _, ch := range chans {
		r := e.result(ch)
		switch {
		case r.err != nil:
			t.Errorf("Claim: %v", r.err)
		case r.c == nil:
			empty++
		case got[r.c.Job.ID]:
			t.Errorf("job %d handed out twice", r.c.Job.ID)
		default:
			got[r.c.Job.ID] = true
		}
	}
	if len(got) != 2 || empty != 2 {
		t.Errorf("%d claims got jobs and %d none, want 2 and 2", len(got), empty)
	}
}

// TestReaperRequeueWakesClaimer expires a lease with the clock: the reaper
// re-queues the job, which wakes a waiting claimer at once; the old attempt
// is fenced off.
func TestReaperRequeueWakesClaimer(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.ReapInterval = 5 * time.Millisecond })
	ctx := context.Background()
	e.submit(testSpec("q"))
	first := e.claim("exec-old", "q")
	e.appendLog(first.Token, ref(first), 0, "old attempt\n")

	ch := e.startClaim("exec-new", 20_000, "q")
	advanced := time.Now()
	e.clock.Advance(DefaultLease + time.Second)
	r := e.woken(ch, advanced)
	if r.err != nil || r.c == nil {
		t.Fatalf("Claim = %v, %v; want the re-queued job", r.c, r.err)
	}
	second := r.c
	if second.Job.ID != first.Job.ID || second.Attempt != 2 {
		t.Fatalf("claimed job %d attempt %d, want job %d attempt 2", second.Job.ID, second.Attempt, first.Job.ID)
	}

	// The old attempt's token died with it.
	_, err := e.exec.AppendLog(ctx, first.Token, ref(first), 12, []byte("zombie\n"))
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("append with the old token: %v, want ErrUnauthorized", err)
	}
	_, err = e.exec.Finish(ctx, first.Token, ref(first), api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Errorf("finish with the old token: %v, want ErrUnauthorized", err)
	}
	// The new token cannot write the old attempt either.
	_, err = e.exec.AppendLog(ctx, second.Token, ref(first), 12, []byte("x"))
	if !errors.Is(err, api.ErrForbidden) {
		t.Errorf("append to the old attempt with the new token: %v, want ErrForbidden", err)
	}
	// The old executor learns from its heartbeat that its attempt is gone.
	hb, err := e.exec.Heartbeat(ctx, api.HeartbeatRequest{
		Executor: queue.ExecutorInfo{Name: "exec-old"}, Attempts: []queue.AttemptRef{ref(first)},
	})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if diff := cmp.Diff([]queue.AttemptRef{ref(first)}, hb.Unknown); diff != "" {
		t.Errorf("heartbeat unknown (-want +got):\n%s", diff)
	}
	j, err := e.client.Get(ctx, first.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := j.Attempts[0].Reason; got != job.ReasonLeaseExpired {
		t.Errorf("first attempt reason = %q, want lease_expired", got)
	}
}

// TestReaperErrorsJob uses up the attempts: the job ends errored.
func TestReaperErrorsJob(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.ReapInterval = 5 * time.Millisecond })
	spec := testSpec("q")
	spec.MaxAttempts = 1
	j := e.submit(spec)
	e.claim("exec", "q")
	e.clock.Advance(DefaultLease + time.Second)
	waitFor(t, "the reaper to error the job", func() bool {
		got, err := e.client.Get(context.Background(), j.ID)
		return err == nil && got.State == job.StateErrored
	})
}

// TestErroredFinishWakesClaimer: an errored outcome re-queues the job and
// wakes a waiting claimer.
func TestErroredFinishWakesClaimer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(testSpec("q"))
	first := e.claim("exec-1", "q")
	ch := e.startClaim("exec-2", 20_000, "q")
	finished := time.Now()
	j, err := e.exec.Finish(context.Background(), first.Token, ref(first), api.FinishRequest{
		Outcome: job.OutcomeErrored, Reason: job.ReasonSystemError, Message: "disk full",
	})
	if err != nil || j.State != job.StateQueued {
		t.Fatalf("Finish(errored) = %+v, %v; want the job queued again", j, err)
	}
	r := e.woken(ch, finished)
	if r.err != nil || r.c == nil || r.c.Attempt != 2 {
		t.Fatalf("Claim = %+v, %v; want attempt 2", r.c, r.err)
	}
}

func TestRetryWakesClaimer(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(testSpec("q"))
	first := e.claim("exec", "q")
	if _, err := e.exec.Finish(context.Background(), first.Token, ref(first), api.FinishRequest{
		Outcome: job.OutcomeFailed, Reason: job.ReasonExitCode}); err != nil {
		t.Fatal(err)
	}
	ch := e.startClaim("exec", 20_000, "q")
	retried := time.Now()
	if _, err := e.client.Retry(context.Background(), first.Job.ID); err != nil {
		t.Fatal(err)
	}
	if r := e.woken(ch, retried); r.err != nil || r.c == nil || r.c.Job.ID != first.Job.ID {
		t.Fatalf("Claim = %+v, %v; want the retried job", r.c, r.err)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.submit(testSpec("q"))
	e.submit(testSpec("q"))
	keep := e.claim("exec", "q")
	stop := e.claim("exec", "q")
	if _, err := e.client.Cancel(ctx, stop.Job.ID); err != nil {
		t.Fatal(err)
	}
	bogus := queue.AttemptRef{JobID: 999, Attempt: 1}
	hb, err := e.exec.Heartbeat(ctx, api.HeartbeatRequest{
		Executor: queue.ExecutorInfo{Name: "exec", Running: 2},
		Attempts: []queue.AttemptRef{ref(keep), ref(stop), bogus},
	})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	want := &api.HeartbeatResponse{Cancel: []queue.AttemptRef{ref(stop)}, Unknown: []queue.AttemptRef{bogus}}
	if diff := cmp.Diff(want, hb); diff != "" {
		t.Errorf("Heartbeat (-want +got):\n%s", diff)
	}

	// Another executor naming this executor's attempt is told it is unknown.
	hb, err = e.exec.Heartbeat(ctx, api.HeartbeatRequest{
		Executor: queue.ExecutorInfo{Name: "impostor"}, Attempts: []queue.AttemptRef{ref(keep)},
	})
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if diff := cmp.Diff([]queue.AttemptRef{ref(keep)}, hb.Unknown); diff != "" {
		t.Errorf("impostor heartbeat unknown (-want +got):\n%s", diff)
	}

	// The heartbeat extends the lease: past the first lease, the job lives.
	e.clock.Advance(DefaultLease - time.Second)
	if _, err := e.exec.Heartbeat(ctx, api.HeartbeatRequest{
		Executor: queue.ExecutorInfo{Name: "exec"}, Attempts: []queue.AttemptRef{ref(keep)}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Second)
	e.srv.reapOnce(ctx)
	if j, err := e.client.Get(ctx, keep.Job.ID); err != nil || j.State != job.StateRunning {
		t.Errorf("after a heartbeat and the first lease's end: %+v, %v; want running", j, err)
	}
}

// TestClaimSecretsPerJob: a claim carries the secrets of its job only.
func TestClaimSecretsPerJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := testSpec("q")
	a.Secrets = []string{"OTHER"}
	e.submit(a)
	e.submit(testSpec("q"))
	if c := e.claim("exec", "q"); len(c.Secrets) != 1 || c.Secrets["OTHER"] != "other-secret" {
		t.Errorf("first claim secrets = %v, want only OTHER", c.Secrets)
	}
	if c := e.claim("exec", "q"); c.Secrets != nil {
		t.Errorf("second claim secrets = %v, want none", c.Secrets)
	}
}

// TestClaimMissingSecret: a job naming a secret the coordinator no longer
// has (it was submitted before the secret was removed) is never handed out;
// each attempt ends errored until the job is errored.
func TestClaimMissingSecret(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	spec := testSpec("q")
	spec.Secrets = []string{"GONE"}
	spec.MaxAttempts = 2
	spec.Normalize()
	j, err := e.store.Submit(ctx, queue.SubmitParams{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.exec.Claim(ctx, api.ClaimRequest{Executor: queue.ExecutorInfo{Name: "exec"}, Queues: []string{"q"}, WaitMS: 200})
	if c != nil || err != nil {
		t.Fatalf("Claim = %+v, %v; want nothing handed out", c, err)
	}
	got, err := e.client.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.StateErrored || len(got.Attempts) != 2 || got.Attempts[1].Reason != job.ReasonSystemError {
		t.Errorf("job = state %s, %d attempts (%+v); want errored after 2 system_error attempts", got.State, len(got.Attempts), got.Attempts)
	}
}
