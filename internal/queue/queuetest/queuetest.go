// Package queuetest is the conformance suite of queue.Store. Every
// implementation runs it from its own tests:
//
//	func TestStore(t *testing.T) {
//		queuetest.Exercise(t, func(t *testing.T, clock *queuetest.Clock) queue.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "q.db"), sqlite.Options{Now: clock.Now})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite speaks only the queue.Store interface and the contract in its doc
// comments. Each case opens a fresh, empty store with its own manual Clock
// and runs in parallel with the others. Times are compared to the
// millisecond-aligned values the clock hands out, so an implementation that
// stores microseconds passes too. A bug fixed in one implementation becomes a
// case here.
package queuetest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// Clock is a manual clock for the store under test: its time moves only when
// Advance is called. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// start is where every case's clock begins: a whole second, in UTC.
var start = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// lease is the lease every case claims and heartbeats with.
const lease = 30 * time.Second

// Exercise runs the whole suite against one implementation. open must return
// a fresh, empty store that reads the time from clock.Now, and arrange (with
// t.Cleanup) for it to be closed; it is called once per case, from parallel
// subtests.
func Exercise(t *testing.T, open func(t *testing.T, clock *Clock) queue.Store) {
	t.Helper()
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Submit", submitCases},
		{"Claim", claimCases},
		{"Lease", leaseCases},
		{"Finish", finishCases},
		{"Cancel", cancelCases},
		{"Retry", retryCases},
		{"Log", logCases},
		{"List", listCases},
		{"Context", contextCases},
		{"Repository", repositoryCases},
		{"Retention", retentionCases},
		{"Concurrency", concurrencyCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, setup(t, open))
				})
			}
		})
	}
}

// testCase is one sentence of the contract.
type testCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

// harness is one case's store, clock and helpers.
type harness struct {
	t     *testing.T
	ctx   context.Context
	store queue.Store
	clock *Clock
}

func setup(t *testing.T, open func(t *testing.T, clock *Clock) queue.Store) *harness {
	t.Helper()
	clock := NewClock(start)
	return &harness{t: t, ctx: t.Context(), store: open(t, clock), clock: clock}
}

// specFor returns a realistic, validated spec.
func specFor(queueName string, priority, maxAttempts int) job.Spec {
	return job.Spec{
		Version: job.SpecVersion,
		Queue:   queueName,
		Steps: []job.Step{{
			Name:    "build",
			Image:   "registry.example.com/go:1.22",
			Run:     "go build ./...",
			Env:     map[string]string{"CGO_ENABLED": "0"},
			Timeout: job.Duration(10 * time.Minute),
		}},
		Resources:   job.Resources{CPUs: 2, Memory: 4 << 30},
		Network:     job.NetworkInternet,
		Timeout:     job.Duration(30 * time.Minute),
		MaxAttempts: maxAttempts,
		Priority:    priority,
	}
}

// submit stores a job of queue "default", priority 0, with maxAttempts.
func (h *harness) submit(maxAttempts int) *queue.Job {
	h.t.Helper()
	return h.submitSpec(specFor("default", 0, maxAttempts))
}

func (h *harness) submitSpec(spec job.Spec) *queue.Job {
	h.t.Helper()
	j, err := h.store.Submit(h.ctx, queue.SubmitParams{Spec: spec})
	if err != nil {
		h.t.Fatalf("Submit: %v", err)
	}
	return j
}

var tokenCounter atomic.Uint64

// newToken returns the hash of a job token no other claim has used.
func newToken() []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], tokenCounter.Add(1))
	sum := sha256.Sum256(append([]byte("queuetest token "), b[:]...))
	return sum[:]
}

func executor(name string) queue.ExecutorInfo {
	return queue.ExecutorInfo{Name: name, Version: "test", OS: "linux", Arch: "amd64", Runtime: "shell",
		Queues: []string{"default"}, MaxJobs: 4}
}

// claimed is a claim together with the token hash it was made with.
type claimed struct {
	*queue.Claim
	token    []byte
	executor string
}

func (c claimed) ref() queue.AttemptRef {
	return queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
}

// tryClaim claims for executor name from queues (default "default").
func (h *harness) tryClaim(name string, queues ...string) (claimed, bool) {
	h.t.Helper()
	if len(queues) == 0 {
		queues = []string{"default"}
	}
	token := newToken()
	c, err := h.store.Claim(h.ctx, queue.ClaimParams{Queues: queues, Executor: executor(name), Lease: lease, TokenHash: token})
	if err != nil {
		h.t.Fatalf("Claim: %v", err)
	}
	if c == nil {
		return claimed{}, false
	}
	return claimed{Claim: c, token: token, executor: name}, true
}

// claim is tryClaim that insists on getting a job.
func (h *harness) claim(name string, queues ...string) claimed {
	h.t.Helper()
	c, ok := h.tryClaim(name, queues...)
	if !ok {
		h.t.Fatalf("Claim(%v) = nil, want a job", queues)
	}
	return c
}

func (h *harness) get(id int64) *queue.Job {
	h.t.Helper()
	j, err := h.store.Get(h.ctx, id)
	if err != nil {
		h.t.Fatalf("Get(%d): %v", id, err)
	}
	return j
}

func (h *harness) finish(ref queue.AttemptRef, o job.Outcome, r job.Reason) *queue.Job {
	h.t.Helper()
	j, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: ref, Outcome: o, Reason: r})
	if err != nil {
		h.t.Fatalf("Finish(%+v, %s): %v", ref, o, err)
	}
	return j
}

func (h *harness) heartbeat(name string, refs ...queue.AttemptRef) *queue.HeartbeatResult {
	h.t.Helper()
	res, err := h.store.Heartbeat(h.ctx, queue.HeartbeatParams{Executor: executor(name), Attempts: refs, Lease: lease})
	if err != nil {
		h.t.Fatalf("Heartbeat: %v", err)
	}
	return res
}

func (h *harness) reap() []queue.Reaped {
	h.t.Helper()
	r, err := h.store.ReapExpired(h.ctx)
	if err != nil {
		h.t.Fatalf("ReapExpired: %v", err)
	}
	return r
}

func (h *harness) appendLog(ref queue.AttemptRef, off int64, data string) int64 {
	h.t.Helper()
	end, err := h.store.AppendLog(h.ctx, queue.AppendLogParams{Attempt: ref, Offset: off, Data: []byte(data)})
	if err != nil {
		h.t.Fatalf("AppendLog(%+v, %d): %v", ref, off, err)
	}
	return end
}

func (h *harness) readLog(p queue.ReadLogParams) *queue.LogChunk {
	h.t.Helper()
	c, err := h.store.ReadLog(h.ctx, p)
	if err != nil {
		h.t.Fatalf("ReadLog(%+v): %v", p, err)
	}
	return c
}

// status is the part of a job most cases check.
type status struct {
	State           job.State
	Reason          job.Reason
	CancelRequested bool
	Attempt         int
}

func statusOf(j *queue.Job) status {
	return status{State: j.State, Reason: j.Reason, CancelRequested: j.CancelRequested, Attempt: j.Attempt}
}

// checkStatus compares a job's status with want, both as returned and as Get
// reads it afterwards.
func (h *harness) checkStatus(what string, got *queue.Job, want status) {
	h.t.Helper()
	if diff := cmp.Diff(want, statusOf(got)); diff != "" {
		h.t.Errorf("%s: job status mismatch (-want +got):\n%s", what, diff)
	}
	if diff := cmp.Diff(want, statusOf(h.get(got.ID))); diff != "" {
		h.t.Errorf("%s: job status from Get mismatch (-want +got):\n%s", what, diff)
	}
}
