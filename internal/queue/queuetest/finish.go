package queuetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// terminal drives a fresh job into each terminal state.
var terminal = []struct {
	state job.State
	reach func(h *harness) *queue.Job
}{
	{job.StateSucceeded, func(h *harness) *queue.Job {
		h.submit(1)
		return h.finish(h.claim("e1").ref(), job.OutcomeSucceeded, job.ReasonSuccess)
	}},
	{job.StateFailed, func(h *harness) *queue.Job {
		h.submit(1)
		return h.finish(h.claim("e1").ref(), job.OutcomeFailed, job.ReasonExitCode)
	}},
	{job.StateCanceled, func(h *harness) *queue.Job {
		j, err := h.store.Cancel(h.ctx, h.submit(1).ID)
		if err != nil {
			h.t.Fatal(err)
		}
		return j
	}},
	{job.StateErrored, func(h *harness) *queue.Job {
		h.submit(1)
		return h.finish(h.claim("e1").ref(), job.OutcomeErrored, job.ReasonSystemError)
	}},
}

// reasonFor is a typical reason an executor reports with outcome o.
func reasonFor(o job.Outcome) job.Reason {
	switch o {
	case job.OutcomeSucceeded:
		return job.ReasonSuccess
	case job.OutcomeFailed:
		return job.ReasonExitCode
	case job.OutcomeCanceled:
		return job.ReasonCanceled
	default:
		return job.ReasonSystemError
	}
}

var finishCases = []testCase{
	{"finish records the outcome, reason, message, steps and egress denials", func(t *testing.T, h *harness) {
		for _, tc := range []struct {
			outcome job.Outcome
			reason  job.Reason
			want    job.State
		}{
			{job.OutcomeSucceeded, job.ReasonSuccess, job.StateSucceeded},
			{job.OutcomeFailed, job.ReasonExitCode, job.StateFailed},
			{job.OutcomeFailed, job.ReasonStepTimeout, job.StateFailed},
			{job.OutcomeFailed, job.ReasonOOM, job.StateFailed},
			{job.OutcomeFailed, job.ReasonImage, job.StateFailed},
			{job.OutcomeFailed, job.ReasonResources, job.StateFailed},
			{job.OutcomeCanceled, job.ReasonCanceled, job.StateCanceled},
			{job.OutcomeErrored, job.ReasonSystemError, job.StateErrored},
		} {
			h.submit(1)
			c := h.claim("e1")
			h.clock.Advance(1500 * msec)
			steps := []queue.StepResult{{Name: "build", ExitCode: 2, Signal: "SIGKILL", OOMKilled: true, TimedOut: true,
				StartedAt: start, FinishedAt: start.Add(time.Second), Duration: time.Second,
				Image: "registry.test/tools:1", ImageDigest: "sha256:" + strings.Repeat("ab", 32)}}
			got, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: c.ref(), Outcome: tc.outcome, Reason: tc.reason,
				Message: "step build: detail", Steps: steps, EgressDenied: 7})
			if err != nil {
				t.Fatalf("Finish(%s): %v", tc.outcome, err)
			}
			h.checkStatus(string(tc.outcome), got, status{State: tc.want, Reason: tc.reason, Attempt: 1})
			j := h.get(c.Job.ID)
			if j.Message != "step build: detail" || !j.FinishedAt.Equal(h.clock.Now()) {
				t.Errorf("%s: job Message %q FinishedAt %v, want the message and %v", tc.outcome, j.Message, j.FinishedAt, h.clock.Now())
			}
			want := []queue.Attempt{{Number: 1, Executor: "e1", StartedAt: h.clock.Now().Add(-1500 * msec),
				FinishedAt: h.clock.Now(), Outcome: tc.outcome, Reason: tc.reason, Message: "step build: detail", Steps: steps,
				EgressDenied: 7}}
			if diff := cmp.Diff(want, j.Attempts, cmpopts.IgnoreFields(queue.Attempt{}, "LeaseUntil")); diff != "" {
				t.Errorf("%s: attempts (-want +got):\n%s", tc.outcome, diff)
			}
		}
	}},
	{"an errored outcome re-queues the job until its attempts are used up", func(t *testing.T, h *harness) {
		id := h.submit(3).ID
		for n := 1; n <= 3; n++ {
			c := h.claim("e1")
			if c.Attempt != n {
				t.Fatalf("claim = attempt %d, want %d", c.Attempt, n)
			}
			got := h.finish(c.ref(), job.OutcomeErrored, job.ReasonDrained)
			want := status{State: job.StateQueued, Attempt: n}
			if n == 3 {
				want = status{State: job.StateErrored, Reason: job.ReasonDrained, Attempt: 3}
			}
			h.checkStatus("after errored attempt", got, want)
		}
		j := h.get(id)
		if len(j.Attempts) != 3 {
			t.Fatalf("%d attempts, want 3", len(j.Attempts))
		}
		for _, a := range j.Attempts {
			if a.Outcome != job.OutcomeErrored || a.Reason != job.ReasonDrained {
				t.Errorf("attempt %d: %s/%s, want errored/drained", a.Number, a.Outcome, a.Reason)
			}
		}
	}},
	{"finishing the same attempt twice with the same outcome is a no-op", func(t *testing.T, h *harness) {
		for _, o := range []job.Outcome{job.OutcomeSucceeded, job.OutcomeFailed, job.OutcomeCanceled, job.OutcomeErrored} {
			h.submit(2)
			c := h.claim("e1")
			first := h.finish(c.ref(), o, reasonFor(o))
			h.clock.Advance(time.Second)
			again := h.finish(c.ref(), o, reasonFor(o))
			if diff := cmp.Diff(first, again, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s: second Finish returned a different job (-first +second):\n%s", o, diff)
			}
			if diff := cmp.Diff(first, h.get(c.Job.ID), cmpopts.IgnoreFields(queue.Job{}, "Attempts")); diff != "" {
				t.Errorf("%s: job changed by the second Finish (-first +now):\n%s", o, diff)
			}
		}
	}},
	{"finishing a finished attempt with another outcome is refused", func(t *testing.T, h *harness) {
		h.submit(1)
		c := h.claim("e1")
		h.finish(c.ref(), job.OutcomeFailed, job.ReasonExitCode)
		_, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: c.ref(), Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
		if !errors.Is(err, queue.ErrStaleAttempt) {
			t.Errorf("Finish(succeeded) after failed: error = %v, want ErrStaleAttempt", err)
		}
		h.checkStatus("after refused finish", h.get(c.Job.ID), status{State: job.StateFailed, Reason: job.ReasonExitCode, Attempt: 1})
	}},
	{"finishing with an unknown outcome is refused", func(t *testing.T, h *harness) {
		h.submit(1)
		c := h.claim("e1")
		if _, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: c.ref(), Outcome: "exploded", Reason: job.ReasonSuccess}); err == nil {
			t.Error("Finish with outcome \"exploded\" succeeded, want an error")
		}
		h.checkStatus("after refused finish", h.get(c.Job.ID), status{State: job.StateRunning, Attempt: 1})
	}},
	{"a superseded attempt can neither log nor finish", func(t *testing.T, h *harness) {
		h.submit(3)
		first := h.claim("e1")
		h.finish(first.ref(), job.OutcomeErrored, job.ReasonSystemError)
		h.checkStale(first)
		second := h.claim("e2")
		h.checkStale(first)
		for _, o := range []job.Outcome{job.OutcomeSucceeded, job.OutcomeFailed, job.OutcomeCanceled} {
			if _, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: first.ref(), Outcome: o, Reason: reasonFor(o)}); !errors.Is(err, queue.ErrStaleAttempt) {
				t.Errorf("Finish(%s) of superseded attempt: error = %v, want ErrStaleAttempt", o, err)
			}
		}
		if _, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: queue.AttemptRef{JobID: first.Job.ID, Attempt: 3},
			Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); !errors.Is(err, queue.ErrStaleAttempt) {
			t.Errorf("Finish of a future attempt: error = %v, want ErrStaleAttempt", err)
		}
		h.checkStatus("second attempt untouched", h.get(second.Job.ID), status{State: job.StateRunning, Attempt: 2})
		if got := h.heartbeat("e2", second.ref()); len(got.Unknown)+len(got.Cancel) != 0 {
			t.Errorf("live attempt's Heartbeat = %+v, want nothing to stop", got)
		}
	}},
	{"a cancel-requested job that errors ends canceled", func(t *testing.T, h *harness) {
		h.submit(3)
		c := h.claim("e1")
		if _, err := h.store.Cancel(h.ctx, c.Job.ID); err != nil {
			t.Fatal(err)
		}
		got := h.finish(c.ref(), job.OutcomeErrored, job.ReasonSystemError)
		h.checkStatus("errored after cancel", got, status{State: job.StateCanceled, Reason: job.ReasonCanceled, Attempt: 1})
	}},
	{"a cancel-requested job that succeeds or fails keeps its outcome", func(t *testing.T, h *harness) {
		for _, o := range []job.Outcome{job.OutcomeSucceeded, job.OutcomeFailed} {
			h.submit(3)
			c := h.claim("e1")
			if _, err := h.store.Cancel(h.ctx, c.Job.ID); err != nil {
				t.Fatal(err)
			}
			got := h.finish(c.ref(), o, reasonFor(o))
			if got.State != job.State(o) {
				t.Errorf("Finish(%s) after cancel: state %s, want %s", o, got.State, o)
			}
		}
	}},
}

var cancelCases = []testCase{
	{"cancelling a queued job cancels it at once", func(t *testing.T, h *harness) {
		j := h.submit(3)
		h.clock.Advance(time.Second)
		got, err := h.store.Cancel(h.ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		h.checkStatus("after cancel", got, status{State: job.StateCanceled, Reason: job.ReasonCanceled})
		if !got.FinishedAt.Equal(h.clock.Now()) {
			t.Errorf("FinishedAt = %v, want %v", got.FinishedAt, h.clock.Now())
		}
		if c, ok := h.tryClaim("e1"); ok {
			t.Errorf("Claim after cancel = job %d, want nil", c.Job.ID)
		}
	}},
	{"cancelling a running job asks its executor to stop", func(t *testing.T, h *harness) {
		h.submit(3)
		c := h.claim("e1")
		got, err := h.store.Cancel(h.ctx, c.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		running := status{State: job.StateRunning, CancelRequested: true, Attempt: 1}
		h.checkStatus("after cancel", got, running)
		again, err := h.store.Cancel(h.ctx, c.Job.ID)
		if err != nil {
			t.Fatalf("second Cancel: %v", err)
		}
		h.checkStatus("after second cancel", again, running)

		want := &queue.HeartbeatResult{Cancel: []queue.AttemptRef{c.ref()}}
		if diff := cmp.Diff(want, h.heartbeat("e1", c.ref()), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Heartbeat (-want +got):\n%s", diff)
		}
		h.appendLog(c.ref(), 0, "stopping\n") // the attempt stays live until it reports
		got = h.finish(c.ref(), job.OutcomeCanceled, job.ReasonCanceled)
		h.checkStatus("after finish", got, status{State: job.StateCanceled, Reason: job.ReasonCanceled, Attempt: 1})
	}},
	{"cancelling a finished job is refused", func(t *testing.T, h *harness) {
		for _, tc := range terminal {
			j := tc.reach(h)
			if j.State != tc.state {
				t.Fatalf("setup reached %s, want %s", j.State, tc.state)
			}
			if _, err := h.store.Cancel(h.ctx, j.ID); !errors.Is(err, queue.ErrInvalidState) {
				t.Errorf("Cancel of a %s job: error = %v, want ErrInvalidState", tc.state, err)
			}
			h.checkStatus("after refused cancel", h.get(j.ID), statusOf(j))
		}
	}},
	{"cancelling a missing job is not found", func(t *testing.T, h *harness) {
		if _, err := h.store.Cancel(h.ctx, 4242); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Cancel(missing) error = %v, want ErrNotFound", err)
		}
	}},
}

var retryCases = []testCase{
	{"retrying a finished job queues it with a fresh attempt budget", func(t *testing.T, h *harness) {
		for _, tc := range terminal {
			j := tc.reach(h)
			h.clock.Advance(time.Second)
			got, err := h.store.Retry(h.ctx, j.ID)
			if err != nil {
				t.Fatalf("Retry of a %s job: %v", tc.state, err)
			}
			h.checkStatus("after retry of "+string(tc.state), got, status{State: job.StateQueued, Attempt: j.Attempt})
			if !got.FinishedAt.IsZero() || got.Message != "" {
				t.Errorf("after retry of %s: FinishedAt %v, Message %q; want both cleared", tc.state, got.FinishedAt, got.Message)
			}
			// The budget (MaxAttempts 1) starts afresh: one more attempt,
			// numbered after the old ones, and an error ends the job again.
			c := h.claim("e1")
			if c.Job.ID != j.ID || c.Attempt != j.Attempt+1 {
				t.Fatalf("claim after retry = job %d attempt %d, want job %d attempt %d", c.Job.ID, c.Attempt, j.ID, j.Attempt+1)
			}
			got = h.finish(c.ref(), job.OutcomeErrored, job.ReasonSystemError)
			h.checkStatus("errored after retry of "+string(tc.state), got,
				status{State: job.StateErrored, Reason: job.ReasonSystemError, Attempt: j.Attempt + 1})
		}
	}},
	{"a retried job gets its whole budget again", func(t *testing.T, h *harness) {
		id := h.submit(2).ID
		for range 2 {
			h.finish(h.claim("e1").ref(), job.OutcomeErrored, job.ReasonSystemError)
		}
		if _, err := h.store.Retry(h.ctx, id); err != nil {
			t.Fatal(err)
		}
		c := h.claim("e1")
		h.checkStatus("first errored attempt after retry", h.finish(c.ref(), job.OutcomeErrored, job.ReasonSystemError),
			status{State: job.StateQueued, Attempt: 3})
		c = h.claim("e1")
		h.clock.Advance(lease + msec)
		if diff := cmp.Diff([]queue.Reaped{{Attempt: c.ref(), NewState: job.StateErrored}}, h.reap()); diff != "" {
			t.Errorf("ReapExpired of attempt 4 (-want +got):\n%s", diff)
		}
		if got := len(h.get(id).Attempts); got != 4 {
			t.Errorf("%d attempts, want 4", got)
		}
	}},
	{"retrying a cancel-requested job after it ended clears the request", func(t *testing.T, h *harness) {
		h.submit(1)
		c := h.claim("e1")
		if _, err := h.store.Cancel(h.ctx, c.Job.ID); err != nil {
			t.Fatal(err)
		}
		h.finish(c.ref(), job.OutcomeCanceled, job.ReasonCanceled)
		got, err := h.store.Retry(h.ctx, c.Job.ID)
		if err != nil {
			t.Fatal(err)
		}
		h.checkStatus("after retry", got, status{State: job.StateQueued, Attempt: 1})
		c = h.claim("e1")
		if got := h.heartbeat("e1", c.ref()); len(got.Cancel) != 0 {
			t.Errorf("Heartbeat after retry: Cancel = %v, want none", got.Cancel)
		}
	}},
	{"retrying a queued or running job is refused", func(t *testing.T, h *harness) {
		queued := h.submit(1)
		if _, err := h.store.Retry(h.ctx, queued.ID); !errors.Is(err, queue.ErrInvalidState) {
			t.Errorf("Retry of a queued job: error = %v, want ErrInvalidState", err)
		}
		c := h.claim("e1")
		if _, err := h.store.Retry(h.ctx, c.Job.ID); !errors.Is(err, queue.ErrInvalidState) {
			t.Errorf("Retry of a running job: error = %v, want ErrInvalidState", err)
		}
		h.checkStatus("after refused retries", h.get(c.Job.ID), status{State: job.StateRunning, Attempt: 1})
	}},
	{"retrying a missing job is not found", func(t *testing.T, h *harness) {
		if _, err := h.store.Retry(h.ctx, 4242); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Retry(missing) error = %v, want ErrNotFound", err)
		}
	}},
}
