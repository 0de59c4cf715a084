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

const msec = time.Millisecond

// checkStale asserts that an attempt which is no longer live can do nothing:
// its heartbeat reports it unknown, and its token, log and finish are refused.
func (h *harness) checkStale(c claimed) {
	h.t.Helper()
	ref := c.ref()
	if got := h.heartbeat(c.executor, ref); !cmp.Equal(got.Unknown, []queue.AttemptRef{ref}) {
		h.t.Errorf("Heartbeat of stale %+v: Unknown = %v, want it listed", ref, got.Unknown)
	}
	if _, err := h.store.AttemptForToken(h.ctx, c.token); !errors.Is(err, queue.ErrUnknownToken) {
		h.t.Errorf("AttemptForToken of stale %+v: error = %v, want ErrUnknownToken", ref, err)
	}
	if _, err := h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: ref, Data: []byte("zombie")}); !errors.Is(err, queue.ErrStaleAttempt) {
		h.t.Errorf("AppendLog of stale %+v: error = %v, want ErrStaleAttempt", ref, err)
	}
	if _, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); !errors.Is(err, queue.ErrStaleAttempt) {
		h.t.Errorf("Finish(succeeded) of stale %+v: error = %v, want ErrStaleAttempt", ref, err)
	}
}

var leaseCases = []testCase{
	{"a job token authenticates its live attempt only", func(t *testing.T, h *harness) {
		h.submit(1)
		c := h.claim("e1")
		got, err := h.store.AttemptForToken(h.ctx, c.token)
		if err != nil {
			t.Fatalf("AttemptForToken: %v", err)
		}
		if got != c.ref() {
			t.Errorf("AttemptForToken = %+v, want %+v", got, c.ref())
		}
		if _, err := h.store.AttemptForToken(h.ctx, newToken()); !errors.Is(err, queue.ErrUnknownToken) {
			t.Errorf("AttemptForToken(never minted) error = %v, want ErrUnknownToken", err)
		}
		h.finish(c.ref(), job.OutcomeSucceeded, job.ReasonSuccess)
		if _, err := h.store.AttemptForToken(h.ctx, c.token); !errors.Is(err, queue.ErrUnknownToken) {
			t.Errorf("AttemptForToken after finish error = %v, want ErrUnknownToken", err)
		}
	}},
	{"a heartbeat extends the lease", func(t *testing.T, h *harness) {
		h.submit(3)
		c := h.claim("e1")
		h.clock.Advance(20 * time.Second)
		if got := h.heartbeat("e1", c.ref()); len(got.Unknown)+len(got.Cancel) != 0 {
			t.Errorf("Heartbeat = %+v, want nothing to stop", got)
		}
		h.clock.Advance(20 * time.Second) // 40s after the claim, 20s after the heartbeat
		if r := h.reap(); len(r) != 0 {
			t.Errorf("ReapExpired inside the extended lease = %+v, want nothing", r)
		}
		j := h.get(c.Job.ID)
		if want := start.Add(20 * time.Second).Add(lease); !j.Attempts[0].LeaseUntil.Equal(want) {
			t.Errorf("LeaseUntil = %v, want %v", j.Attempts[0].LeaseUntil, want)
		}
		h.clock.Advance(10*time.Second + msec)
		want := []queue.Reaped{{Attempt: c.ref(), NewState: job.StateQueued}}
		if diff := cmp.Diff(want, h.reap()); diff != "" {
			t.Errorf("ReapExpired after the lease (-want +got):\n%s", diff)
		}
	}},
	{"a lease is not reaped before it ends", func(t *testing.T, h *harness) {
		h.submit(1)
		h.claim("e1")
		h.clock.Advance(lease)
		if r := h.reap(); len(r) != 0 {
			t.Errorf("ReapExpired at the lease's last instant = %+v, want nothing", r)
		}
	}},
	{"an expired lease re-queues the job and counts the attempt", func(t *testing.T, h *harness) {
		h.submit(3)
		first := h.claim("e1")
		h.appendLog(first.ref(), 0, "first try\n")
		h.clock.Advance(lease + msec)
		want := []queue.Reaped{{Attempt: first.ref(), NewState: job.StateQueued}}
		if diff := cmp.Diff(want, h.reap()); diff != "" {
			t.Errorf("ReapExpired (-want +got):\n%s", diff)
		}
		if r := h.reap(); len(r) != 0 {
			t.Errorf("second ReapExpired = %+v, want nothing", r)
		}
		j := h.get(first.Job.ID)
		h.checkStatus("after reap", j, status{State: job.StateQueued, Attempt: 1})
		a := j.Attempts[0]
		if a.FinishedAt.IsZero() || a.Outcome != job.OutcomeErrored || a.Reason != job.ReasonLeaseExpired || a.LogSize != 10 {
			t.Errorf("reaped attempt = %+v, want finished, errored, lease_expired, 10 log bytes", a)
		}
		h.checkStale(first)

		second := h.claim("e2")
		if second.Job.ID != first.Job.ID || second.Attempt != 2 {
			t.Fatalf("re-claim = job %d attempt %d, want job %d attempt 2", second.Job.ID, second.Attempt, first.Job.ID)
		}
		h.checkStale(first)
		if got := h.heartbeat("e1", first.ref()); !cmp.Equal(got.Unknown, []queue.AttemptRef{first.ref()}) {
			t.Errorf("zombie heartbeat: Unknown = %v, want %v", got.Unknown, first.ref())
		}
		h.appendLog(second.ref(), 0, "second\n")
		j = h.finish(second.ref(), job.OutcomeSucceeded, job.ReasonSuccess)
		h.checkStatus("after second attempt", j, status{State: job.StateSucceeded, Reason: job.ReasonSuccess, Attempt: 2})
		if got := len(h.get(j.ID).Attempts); got != 2 {
			t.Errorf("%d attempts recorded, want 2", got)
		}
	}},
	{"a job whose leases keep expiring ends errored when its attempts are used up", func(t *testing.T, h *harness) {
		id := h.submit(2).ID
		for attempt, want := range []job.State{job.StateQueued, job.StateErrored} {
			c := h.claim("e1")
			if c.Attempt != attempt+1 {
				t.Fatalf("claim = attempt %d, want %d", c.Attempt, attempt+1)
			}
			h.clock.Advance(lease + msec)
			if diff := cmp.Diff([]queue.Reaped{{Attempt: c.ref(), NewState: want}}, h.reap()); diff != "" {
				t.Errorf("ReapExpired of attempt %d (-want +got):\n%s", attempt+1, diff)
			}
		}
		j := h.get(id)
		h.checkStatus("after two expired leases", j, status{State: job.StateErrored, Reason: job.ReasonLeaseExpired, Attempt: 2})
		if !strings.Contains(j.Message, "2") {
			t.Errorf("Message = %q, want it to say how many attempts were used (2)", j.Message)
		}
		if !j.FinishedAt.Equal(h.clock.Now()) {
			t.Errorf("FinishedAt = %v, want %v", j.FinishedAt, h.clock.Now())
		}
		if c, ok := h.tryClaim("e1"); ok {
			t.Errorf("Claim of an errored job's queue = job %d, want nil", c.Job.ID)
		}
	}},
	{"a heartbeat from another executor's name is unknown", func(t *testing.T, h *harness) {
		h.submit(3)
		c := h.claim("e1")
		want := &queue.HeartbeatResult{Unknown: []queue.AttemptRef{c.ref()}}
		if diff := cmp.Diff(want, h.heartbeat("intruder", c.ref()), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Heartbeat from another executor (-want +got):\n%s", diff)
		}
		// It must not have extended the lease either.
		h.clock.Advance(lease + msec)
		if diff := cmp.Diff([]queue.Reaped{{Attempt: c.ref(), NewState: job.StateQueued}}, h.reap()); diff != "" {
			t.Errorf("ReapExpired (-want +got):\n%s", diff)
		}
	}},
	{"a heartbeat sorts an executor's attempts into kept, cancelled and unknown", func(t *testing.T, h *harness) {
		h.submit(1)
		h.submit(1)
		h.submit(1)
		keep, cancel, done := h.claim("e1"), h.claim("e1"), h.claim("e1")
		h.finish(done.ref(), job.OutcomeFailed, job.ReasonExitCode)
		if _, err := h.store.Cancel(h.ctx, cancel.Job.ID); err != nil {
			t.Fatal(err)
		}
		neverSeen := queue.AttemptRef{JobID: keep.Job.ID, Attempt: 7}
		h.clock.Advance(time.Second)
		got := h.heartbeat("e1", keep.ref(), cancel.ref(), done.ref(), neverSeen)
		want := &queue.HeartbeatResult{
			Cancel:  []queue.AttemptRef{cancel.ref()},
			Unknown: []queue.AttemptRef{done.ref(), neverSeen},
		}
		sortRefs := cmpopts.SortSlices(func(a, b queue.AttemptRef) bool {
			return a.JobID < b.JobID || a.JobID == b.JobID && a.Attempt < b.Attempt
		})
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), sortRefs); diff != "" {
			t.Errorf("Heartbeat (-want +got):\n%s", diff)
		}
		execs, err := h.store.Executors(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(execs) != 1 || !execs[0].LastSeen.Equal(h.clock.Now()) {
			t.Errorf("Executors = %+v, want e1 last seen at %v", execs, h.clock.Now())
		}
	}},
	{"executors are listed most recent first", func(t *testing.T, h *harness) {
		for _, name := range []string{"e1", "e2", "e3"} {
			h.heartbeat(name)
			h.clock.Advance(time.Second)
		}
		h.heartbeat("e1")
		execs, err := h.store.Executors(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var want []queue.ExecutorInfo
		for i, name := range []string{"e1", "e3", "e2"} {
			e := executor(name)
			e.LastSeen = h.clock.Now().Add(-time.Duration(i) * time.Second)
			want = append(want, e)
		}
		if diff := cmp.Diff(want, execs); diff != "" {
			t.Errorf("Executors (-want +got):\n%s", diff)
		}
	}},
	{"the reaper cancels a cancel-requested job whose executor died", func(t *testing.T, h *harness) {
		h.submit(3)
		c := h.claim("e1")
		if _, err := h.store.Cancel(h.ctx, c.Job.ID); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(lease + msec)
		if diff := cmp.Diff([]queue.Reaped{{Attempt: c.ref(), NewState: job.StateCanceled}}, h.reap()); diff != "" {
			t.Errorf("ReapExpired (-want +got):\n%s", diff)
		}
		h.checkStatus("after reap", h.get(c.Job.ID), status{State: job.StateCanceled, Reason: job.ReasonCanceled, Attempt: 1})
		h.checkStale(c)
	}},
}
