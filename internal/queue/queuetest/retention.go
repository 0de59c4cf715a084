package queuetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

var retentionCases = []testCase{
	{"listing by finish time keeps only jobs finished before the cut-off", func(t *testing.T, h *harness) {
		old := h.submit(1)
		oldRun := h.claim("e1")
		h.finish(oldRun.ref(), job.OutcomeSucceeded, job.ReasonSuccess)
		canceled := h.submit(1)
		if _, err := h.store.Cancel(h.ctx, canceled.ID); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(time.Hour)
		cutoff := h.clock.Now()
		h.submit(1) // queued: never listed
		h.submit(1)
		h.claim("e1") // running: never listed
		recent := h.submit(1)
		h.clock.Advance(time.Minute)
		if _, err := h.store.Cancel(h.ctx, recent.ID); err != nil {
			t.Fatal(err)
		}

		got := h.listAll(queue.ListParams{FinishedBefore: cutoff, Limit: 1})
		if diff := cmp.Diff([]int64{canceled.ID, old.ID}, got); diff != "" {
			t.Errorf("jobs finished before the cut-off (-want +got):\n%s", diff)
		}
		got = h.listAll(queue.ListParams{FinishedBefore: h.clock.Now().Add(time.Second), States: []job.State{job.StateCanceled}})
		if diff := cmp.Diff([]int64{recent.ID, canceled.ID}, got); diff != "" {
			t.Errorf("canceled jobs finished before now (-want +got):\n%s", diff)
		}
	}},
	{"deleting a finished job removes it with its attempts and logs", func(t *testing.T, h *harness) {
		j := h.submit(2)
		first := h.claim("e1")
		h.appendLog(first.ref(), 0, "first attempt\n")
		h.finish(first.ref(), job.OutcomeErrored, job.ReasonSystemError)
		second := h.claim("e1")
		h.appendLog(second.ref(), 0, "second attempt\n")
		h.finish(second.ref(), job.OutcomeFailed, job.ReasonExitCode)
		kept := h.submit(1)

		if err := h.store.DeleteJob(h.ctx, j.ID); err != nil {
			t.Fatalf("DeleteJob: %v", err)
		}
		if _, err := h.store.Get(h.ctx, j.ID); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Get after DeleteJob: %v, want ErrNotFound", err)
		}
		for _, n := range []int{0, 1, 2} {
			if _, err := h.store.ReadLog(h.ctx, queue.ReadLogParams{JobID: j.ID, Attempt: n}); !errors.Is(err, queue.ErrNotFound) {
				t.Errorf("ReadLog(attempt %d) after DeleteJob: %v, want ErrNotFound", n, err)
			}
		}
		if got := h.listAll(queue.ListParams{}); !cmp.Equal(got, []int64{kept.ID}) {
			t.Errorf("List after DeleteJob = %v, want only %d", got, kept.ID)
		}
		if err := h.store.DeleteJob(h.ctx, j.ID); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("second DeleteJob: %v, want ErrNotFound", err)
		}
		// A new job never takes the deleted one's ID (its blobs may linger).
		if n := h.submit(1); n.ID <= kept.ID {
			t.Errorf("new job got ID %d, not above %d", n.ID, kept.ID)
		}
	}},
	{"queued and running jobs cannot be deleted", func(t *testing.T, h *harness) {
		queued := h.submit(1)
		running := h.submit(1)
		c := h.claim("e1")
		if c.Job.ID != queued.ID {
			queued, running = running, queued
		}
		for _, id := range []int64{queued.ID, running.ID} {
			if err := h.store.DeleteJob(h.ctx, id); !errors.Is(err, queue.ErrInvalidState) {
				t.Errorf("DeleteJob(%d): %v, want ErrInvalidState", id, err)
			}
			h.get(id)
		}
		if err := h.store.DeleteJob(h.ctx, 999999); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("DeleteJob(missing): %v, want ErrNotFound", err)
		}
	}},
}
