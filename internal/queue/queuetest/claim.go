package queuetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

var submitCases = []testCase{
	{"a submitted job is queued with its spec", func(t *testing.T, h *harness) {
		spec := specFor("gpu", 7, 3)
		spec.Files = map[string]job.File{"config/input.json": job.InlineFile(`{"a":1}`)}
		spec.Secrets = []string{"NPM_TOKEN"}
		got := h.submitSpec(spec)
		want := &queue.Job{ID: got.ID, Queue: "gpu", Priority: 7, Spec: spec, State: job.StateQueued,
			MaxAttempts: 3, CreatedAt: start}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Submit returned (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, h.get(got.ID), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Get returned (-want +got):\n%s", diff)
		}
	}},
	{"jobs get distinct increasing IDs", func(t *testing.T, h *harness) {
		a, b := h.submit(1), h.submit(1)
		if b.ID <= a.ID {
			t.Errorf("second job's ID %d is not above the first's %d", b.ID, a.ID)
		}
	}},
	{"getting a missing job is not found", func(t *testing.T, h *harness) {
		j := h.submit(1)
		if _, err := h.store.Get(h.ctx, j.ID+1000); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Get(missing) error = %v, want ErrNotFound", err)
		}
	}},
	{"every operation on a missing job is not found", func(t *testing.T, h *harness) {
		missing := h.submit(1).ID + 1000
		ref := queue.AttemptRef{JobID: missing, Attempt: 1}
		for name, call := range map[string]func() error{
			"Cancel": func() error { _, err := h.store.Cancel(h.ctx, missing); return err },
			"Retry":  func() error { _, err := h.store.Retry(h.ctx, missing); return err },
			"Finish": func() error {
				_, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
				return err
			},
			"AppendLog": func() error {
				_, err := h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: ref, Data: []byte("x")})
				return err
			},
			"ReadLog": func() error { _, err := h.store.ReadLog(h.ctx, queue.ReadLogParams{JobID: missing}); return err },
		} {
			if err := call(); !errors.Is(err, queue.ErrNotFound) {
				t.Errorf("%s(missing job) error = %v, want ErrNotFound", name, err)
			}
		}
		if got := h.heartbeat("e1", ref); !cmp.Equal(got.Unknown, []queue.AttemptRef{ref}) {
			t.Errorf("Heartbeat(missing job) Unknown = %v, want %v", got.Unknown, ref)
		}
	}},
}

var claimCases = []testCase{
	{"a claim on an empty queue returns nothing", func(t *testing.T, h *harness) {
		if c, ok := h.tryClaim("e1"); ok {
			t.Errorf("Claim on an empty store = job %d, want nil", c.Job.ID)
		}
		h.submitSpec(specFor("other", 0, 1))
		if c, ok := h.tryClaim("e1", "default"); ok {
			t.Errorf("Claim of an empty queue = job %d, want nil", c.Job.ID)
		}
	}},
	{"a claim without queues is refused", func(t *testing.T, h *harness) {
		h.submit(1)
		c, err := h.store.Claim(h.ctx, queue.ClaimParams{Executor: executor("e1"), Lease: lease, TokenHash: newToken()})
		if err == nil {
			t.Errorf("Claim with no queues = %v, nil; want an error", c)
		}
	}},
	{"a claim starts an attempt and records the executor", func(t *testing.T, h *harness) {
		submitted := h.submit(3)
		h.clock.Advance(5 * msec)
		c := h.claim("e1")
		if c.Job.ID != submitted.ID || c.Attempt != 1 {
			t.Fatalf("Claim = job %d attempt %d, want job %d attempt 1", c.Job.ID, c.Attempt, submitted.ID)
		}
		now := start.Add(5 * msec)
		want := &queue.Job{ID: submitted.ID, Queue: "default", Spec: submitted.Spec, State: job.StateRunning,
			Attempt: 1, MaxAttempts: 3, CreatedAt: start, StartedAt: now}
		if diff := cmp.Diff(want, c.Job, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("claimed job (-want +got):\n%s", diff)
		}
		want.Attempts = []queue.Attempt{{Number: 1, Executor: "e1", StartedAt: now, LeaseUntil: now.Add(lease)}}
		if diff := cmp.Diff(want, h.get(submitted.ID), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Get after claim (-want +got):\n%s", diff)
		}
		execs, err := h.store.Executors(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantExec := executor("e1")
		wantExec.LastSeen = now
		if diff := cmp.Diff([]queue.ExecutorInfo{wantExec}, execs); diff != "" {
			t.Errorf("Executors after claim (-want +got):\n%s", diff)
		}
		if c, ok := h.tryClaim("e2"); ok {
			t.Errorf("second Claim = job %d, want nil: the only job is running", c.Job.ID)
		}
	}},
	{"claims take the highest priority first, then the oldest", func(t *testing.T, h *harness) {
		low1 := h.submitSpec(specFor("default", 0, 1))
		high1 := h.submitSpec(specFor("default", 10, 1))
		neg := h.submitSpec(specFor("default", -5, 1))
		low2 := h.submitSpec(specFor("default", 0, 1))
		high2 := h.submitSpec(specFor("default", 10, 1))
		mid := h.submitSpec(specFor("default", 3, 1))
		want := []int64{high1.ID, high2.ID, mid.ID, low1.ID, low2.ID, neg.ID}
		var got []int64
		for {
			c, ok := h.tryClaim("e1")
			if !ok {
				break
			}
			got = append(got, c.Job.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("claim order (-want +got):\n%s", diff)
		}
	}},
	{"priority wins across the queues of one claim", func(t *testing.T, h *harness) {
		a := h.submitSpec(specFor("a", 1, 1))
		b := h.submitSpec(specFor("b", 2, 1))
		c := h.submitSpec(specFor("c", 2, 1))
		want := []int64{b.ID, c.ID, a.ID}
		var got []int64
		for range 3 {
			got = append(got, h.claim("e1", "a", "b", "c").Job.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("claim order over queues a, b, c (-want +got):\n%s", diff)
		}
	}},
	{"a claimer only gets jobs from its own queues", func(t *testing.T, h *harness) {
		b := h.submitSpec(specFor("b", 100, 1))
		a := h.submitSpec(specFor("a", 0, 1))
		if got := h.claim("e1", "a").Job.ID; got != a.ID {
			t.Errorf("claim of queue a = job %d, want %d", got, a.ID)
		}
		if c, ok := h.tryClaim("e1", "a"); ok {
			t.Errorf("claim of queue a = job %d (queue %s), want nil", c.Job.ID, c.Job.Queue)
		}
		if got := h.claim("e2", "b", "z").Job.ID; got != b.ID {
			t.Errorf("claim of queues b, z = job %d, want %d", got, b.ID)
		}
	}},
	{"no job is claimed twice by concurrent claimers", func(t *testing.T, h *harness) {
		const jobs, claimers = 500, 16
		ids := make(map[int64]bool)
		for range jobs {
			ids[h.submit(1).ID] = true
		}
		var (
			mu      sync.Mutex
			claims  = make(map[int64]int)
			wg      sync.WaitGroup
			errs    = make(chan error, claimers)
			perExec = make([]int, claimers)
		)
		for i := range claimers {
			wg.Go(func() {
				name := fmt.Sprintf("e%d", i)
				for {
					c, err := h.store.Claim(h.ctx, queue.ClaimParams{Queues: []string{"default"},
						Executor: executor(name), Lease: lease, TokenHash: newToken()})
					if err != nil {
						errs <- err
						return
					}
					if c == nil {
						return
					}
					mu.Lock()
					claims[c.Job.ID]++
					perExec[i]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Claim: %v", err)
		}
		for id, n := range claims {
			if n != 1 {
				t.Errorf("job %d claimed %d times", id, n)
			}
			if !ids[id] {
				t.Errorf("claimed job %d was never submitted", id)
			}
		}
		if len(claims) != jobs {
			t.Errorf("%d jobs claimed, want all %d", len(claims), jobs)
		}
		res, err := h.store.List(h.ctx, queue.ListParams{States: []job.State{job.StateQueued}})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Jobs) != 0 {
			t.Errorf("%d jobs still queued after every claimer gave up", len(res.Jobs))
		}
		t.Logf("claims per claimer: %v", perExec)
	}},
}
