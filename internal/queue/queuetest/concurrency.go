package queuetest

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// ledger records, from the callers' side, everything that happened to
// attempts during a concurrent run.
type ledger struct {
	mu       sync.Mutex
	claimed  map[queue.AttemptRef]string // executor
	reaped   map[queue.AttemptRef]int    // how many times
	finished map[queue.AttemptRef]bool   // Finish(succeeded) returned nil
	unknown  map[queue.AttemptRef]bool   // a heartbeat said so
	errs     []error
}

func (l *ledger) do(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
}

func (l *ledger) fail(err error) { l.do(func() { l.errs = append(l.errs, err) }) }

var concurrencyCases = []testCase{
	{"the reaper running alongside heartbeats, claims and finishes keeps every job consistent", func(t *testing.T, h *harness) {
		const (
			jobs      = 30
			executors = 4
			rounds    = 60
			reapers   = 2
		)
		for range jobs {
			h.submit(1000) // never errored: every expiry re-queues
		}
		l := &ledger{
			claimed:  make(map[queue.AttemptRef]string),
			reaped:   make(map[queue.AttemptRef]int),
			finished: make(map[queue.AttemptRef]bool),
			unknown:  make(map[queue.AttemptRef]bool),
		}
		var executorsDone sync.WaitGroup
		for i := range executors {
			executorsDone.Go(func() {
				name := fmt.Sprintf("e%d", i)
				held := make(map[queue.AttemptRef]bool)
				for round := range rounds {
					if len(held) < 3 {
						c, err := h.store.Claim(h.ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: executor(name),
							Lease: lease, TokenHash: newToken()})
						if err != nil {
							l.fail(fmt.Errorf("Claim: %w", err))
							return
						}
						if c != nil {
							ref := queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
							held[ref] = true
							l.do(func() { l.claimed[ref] = name })
						}
					}
					refs := slices.Collect(maps.Keys(held))
					res, err := h.store.Heartbeat(h.ctx, queue.HeartbeatParams{Executor: executor(name), Attempts: refs, Lease: lease})
					if err != nil {
						l.fail(fmt.Errorf("Heartbeat: %w", err))
						return
					}
					for _, ref := range res.Unknown {
						delete(held, ref)
						l.do(func() { l.unknown[ref] = true })
					}
					if round%4 == 3 && len(held) > 0 {
						ref := slices.Collect(maps.Keys(held))[0]
						delete(held, ref)
						_, err := h.store.Finish(h.ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
						switch {
						case err == nil:
							l.do(func() { l.finished[ref] = true })
						case !errors.Is(err, queue.ErrStaleAttempt):
							l.fail(fmt.Errorf("Finish(%+v): %w", ref, err))
							return
						}
					}
				}
			})
		}
		done := make(chan struct{})
		var reapersDone sync.WaitGroup
		for range reapers {
			reapersDone.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					h.clock.Advance(rand.N(12 * time.Second))
					rs, err := h.store.ReapExpired(h.ctx)
					if err != nil {
						l.fail(fmt.Errorf("ReapExpired: %w", err))
						return
					}
					l.do(func() {
						for _, r := range rs {
							l.reaped[r.Attempt]++
							if r.NewState != job.StateQueued {
								l.errs = append(l.errs, fmt.Errorf("reaped %+v to %s, want queued", r.Attempt, r.NewState))
							}
						}
					})
				}
			})
		}
		executorsDone.Wait()
		close(done)
		reapersDone.Wait()
		for _, err := range l.errs {
			t.Error(err)
		}
		t.Logf("%d attempts: %d reaped, %d finished, %d heartbeats answered unknown",
			len(l.claimed), len(l.reaped), len(l.finished), len(l.unknown))

		for ref, n := range l.reaped {
			if n != 1 {
				t.Errorf("attempt %+v reaped %d times", ref, n)
			}
			if l.finished[ref] {
				t.Errorf("attempt %+v both reaped and finished", ref)
			}
			if _, ok := l.claimed[ref]; !ok {
				t.Errorf("attempt %+v reaped but never claimed", ref)
			}
		}
		for ref := range l.unknown {
			if l.reaped[ref] == 0 {
				t.Errorf("heartbeat called %+v unknown, but it was never reaped", ref)
			}
		}

		// Every job agrees with the ledger.
		attempts := 0
		for _, id := range h.listAll(queue.ListParams{}) {
			j := h.get(id)
			attempts += len(j.Attempts)
			if len(j.Attempts) != j.Attempt {
				t.Errorf("job %d: Attempt %d but %d attempts recorded", id, j.Attempt, len(j.Attempts))
			}
			for i, a := range j.Attempts {
				ref := queue.AttemptRef{JobID: id, Attempt: a.Number}
				last := i == len(j.Attempts)-1
				if a.Number != i+1 {
					t.Errorf("job %d: attempt #%d is numbered %d", id, i+1, a.Number)
				}
				if a.Executor != l.claimed[ref] {
					t.Errorf("job %d attempt %d: executor %q, but %q claimed it", id, a.Number, a.Executor, l.claimed[ref])
				}
				switch {
				case a.FinishedAt.IsZero():
					if !last || j.State != job.StateRunning {
						t.Errorf("job %d is %s but attempt %d of %d is unfinished", id, j.State, a.Number, len(j.Attempts))
					}
					if l.reaped[ref] > 0 || l.finished[ref] {
						t.Errorf("job %d attempt %d is unfinished but the ledger ended it", id, a.Number)
					}
				case a.Reason == job.ReasonLeaseExpired:
					if l.reaped[ref] != 1 {
						t.Errorf("job %d attempt %d ended by lease expiry, but the reaper did not report it", id, a.Number)
					}
				case a.Outcome == job.OutcomeSucceeded:
					if !l.finished[ref] || !last || j.State != job.StateSucceeded {
						t.Errorf("job %d (%s) attempt %d of %d succeeded, but the ledger says finished=%v",
							id, j.State, a.Number, len(j.Attempts), l.finished[ref])
					}
				default:
					t.Errorf("job %d attempt %d ended %s/%s, which nobody asked for", id, a.Number, a.Outcome, a.Reason)
				}
			}
			if j.State == job.StateRunning && (len(j.Attempts) == 0 || !j.Attempts[len(j.Attempts)-1].FinishedAt.IsZero()) {
				t.Errorf("job %d is running without a live attempt", id)
			}
		}
		if attempts != len(l.claimed) {
			t.Errorf("%d attempts recorded, %d claims made", attempts, len(l.claimed))
		}

		// Once every lease is over, nothing stays running.
		h.clock.Advance(2 * lease)
		for _, r := range h.reap() {
			if r.NewState != job.StateQueued {
				t.Errorf("final reap moved %+v to %s, want queued", r.Attempt, r.NewState)
			}
		}
		if running := h.listAll(queue.ListParams{States: []job.State{job.StateRunning}}); len(running) != 0 {
			t.Errorf("jobs %v still running after every lease ended", running)
		}
	}},
}
