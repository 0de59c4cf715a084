package queuetest

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// listAll pages through a listing with the given page size and returns the
// IDs in the order they came.
func (h *harness) listAll(p queue.ListParams) []int64 {
	h.t.Helper()
	var ids []int64
	for pages := 0; ; pages++ {
		if pages > 1000 {
			h.t.Fatalf("List(%+v): no last page after 1000 pages", p)
		}
		res, err := h.store.List(h.ctx, p)
		if err != nil {
			h.t.Fatalf("List(%+v): %v", p, err)
		}
		if p.Limit > 0 && len(res.Jobs) > p.Limit {
			h.t.Errorf("List(%+v) returned %d jobs, more than the limit", p, len(res.Jobs))
		}
		for _, j := range res.Jobs {
			if j.Attempts != nil {
				h.t.Errorf("List filled in the attempts of job %d", j.ID)
			}
			ids = append(ids, j.ID)
		}
		if res.NextCursor == "" {
			return ids
		}
		p.Cursor = res.NextCursor
	}
}

var listCases = []testCase{
	{"listing returns jobs newest first", func(t *testing.T, h *harness) {
		var want []int64
		for range 5 {
			want = append(want, h.submit(1).ID)
		}
		slices.Reverse(want)
		res, err := h.store.List(h.ctx, queue.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, j := range res.Jobs {
			got = append(got, j.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("List order (-want +got):\n%s", diff)
		}
		if res.NextCursor != "" {
			t.Errorf("NextCursor = %q on the only page, want empty", res.NextCursor)
		}
	}},
	{"listing filters by state and by queue", func(t *testing.T, h *harness) {
		// Queue a: one queued, one running, one succeeded. Queue b: one queued, one canceled.
		a1 := h.submitSpec(specFor("a", 0, 1))
		a2 := h.submitSpec(specFor("a", 0, 1))
		a3 := h.submitSpec(specFor("a", 0, 1))
		b1 := h.submitSpec(specFor("b", 0, 1))
		b2 := h.submitSpec(specFor("b", 0, 1))
		h.finish(h.claim("e1", "a").ref(), job.OutcomeSucceeded, job.ReasonSuccess) // a1
		h.claim("e1", "a")                                                          // a2
		if _, err := h.store.Cancel(h.ctx, b2.ID); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			p    queue.ListParams
			want []int64
		}{
			{"all", queue.ListParams{}, []int64{b2.ID, b1.ID, a3.ID, a2.ID, a1.ID}},
			{"queued", queue.ListParams{States: []job.State{job.StateQueued}}, []int64{b1.ID, a3.ID}},
			{"running or succeeded", queue.ListParams{States: []job.State{job.StateRunning, job.StateSucceeded}}, []int64{a2.ID, a1.ID}},
			{"queue a", queue.ListParams{Queues: []string{"a"}}, []int64{a3.ID, a2.ID, a1.ID}},
			{"queues a and b", queue.ListParams{Queues: []string{"b", "a"}}, []int64{b2.ID, b1.ID, a3.ID, a2.ID, a1.ID}},
			{"queued in b", queue.ListParams{States: []job.State{job.StateQueued}, Queues: []string{"b"}}, []int64{b1.ID}},
			{"failed", queue.ListParams{States: []job.State{job.StateFailed}}, nil},
			{"unknown queue", queue.ListParams{Queues: []string{"z"}}, nil},
			{"canceled, paged by one", queue.ListParams{States: []job.State{job.StateCanceled}, Limit: 1}, []int64{b2.ID}},
		} {
			if diff := cmp.Diff(tc.want, h.listAll(tc.p)); diff != "" {
				t.Errorf("%s: listed IDs (-want +got):\n%s", tc.name, diff)
			}
		}
	}},
	{"paging through a listing visits every job once", func(t *testing.T, h *harness) {
		var want []int64
		for i := range 23 {
			q := "a"
			if i%3 == 0 {
				q = "b"
			}
			want = append(want, h.submitSpec(specFor(q, i%4, 1)).ID)
		}
		slices.Reverse(want)
		for _, limit := range []int{1, 5, 22, 23, 24} {
			if diff := cmp.Diff(want, h.listAll(queue.ListParams{Limit: limit})); diff != "" {
				t.Errorf("limit %d: listed IDs (-want +got):\n%s", limit, diff)
			}
		}
		// A page boundary does not drift when new jobs arrive between pages.
		first, err := h.store.List(h.ctx, queue.ListParams{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		h.submit(1)
		rest := h.listAll(queue.ListParams{Limit: 10, Cursor: first.NextCursor})
		if diff := cmp.Diff(want[10:], rest); diff != "" {
			t.Errorf("pages after a new submission (-want +got):\n%s", diff)
		}
	}},
	{"a listing holds 50 jobs by default", func(t *testing.T, h *harness) {
		for range 51 {
			h.submit(1)
		}
		res, err := h.store.List(h.ctx, queue.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Jobs) != 50 || res.NextCursor == "" {
			t.Errorf("List() = %d jobs, cursor %q; want 50 and a cursor", len(res.Jobs), res.NextCursor)
		}
	}},
	{"a listing with a malformed cursor is refused", func(t *testing.T, h *harness) {
		h.submit(1)
		if res, err := h.store.List(h.ctx, queue.ListParams{Cursor: "!!not a cursor!!"}); !errors.Is(err, queue.ErrBadCursor) {
			n := 0
			if res != nil {
				n = len(res.Jobs)
			}
			t.Errorf("List(bad cursor) = %d jobs, error %v; want ErrBadCursor", n, err)
		}
	}},
}

var contextCases = []testCase{
	{"a cancelled context abandons every call without applying it", func(t *testing.T, h *harness) {
		h.submit(3)
		h.submit(3)
		c := h.claim("e1")
		ref := c.ref()
		other := h.listAll(queue.ListParams{States: []job.State{job.StateQueued}})[0]
		h.appendLog(ref, 0, "abc")

		ctx, cancel := context.WithCancel(h.ctx)
		cancel()
		for name, call := range map[string]func() error{
			"Submit": func() error {
				_, err := h.store.Submit(ctx, queue.SubmitParams{Spec: specFor("default", 0, 1)})
				return err
			},
			"Get":  func() error { _, err := h.store.Get(ctx, other); return err },
			"List": func() error { _, err := h.store.List(ctx, queue.ListParams{}); return err },
			"Claim": func() error {
				_, err := h.store.Claim(ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: executor("e2"),
					Lease: lease, TokenHash: newToken()})
				return err
			},
			"AttemptForToken": func() error { _, err := h.store.AttemptForToken(ctx, c.token); return err },
			"Heartbeat": func() error {
				_, err := h.store.Heartbeat(ctx, queue.HeartbeatParams{Executor: executor("e1"), Attempts: []queue.AttemptRef{ref}, Lease: lease})
				return err
			},
			"AppendLog": func() error {
				_, err := h.store.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Offset: 3, Data: []byte("def")})
				return err
			},
			"ReadLog": func() error { _, err := h.store.ReadLog(ctx, queue.ReadLogParams{JobID: ref.JobID}); return err },
			"Finish": func() error {
				_, err := h.store.Finish(ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
				return err
			},
			"Cancel":      func() error { _, err := h.store.Cancel(ctx, other); return err },
			"Retry":       func() error { _, err := h.store.Retry(ctx, ref.JobID); return err },
			"ReapExpired": func() error { _, err := h.store.ReapExpired(ctx); return err },
			"Executors":   func() error { _, err := h.store.Executors(ctx); return err },
		} {
			if err := call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: error = %v, want context.Canceled", name, err)
			}
		}
		// Nothing was applied.
		if got := h.listAll(queue.ListParams{}); len(got) != 2 {
			t.Errorf("%d jobs after a cancelled Submit, want 2", len(got))
		}
		h.checkStatus("claimed job", h.get(ref.JobID), status{State: job.StateRunning, Attempt: 1})
		h.checkStatus("queued job", h.get(other), status{State: job.StateQueued})
		h.checkLog(ref, "abc")
	}},
}
