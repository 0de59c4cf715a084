package postgres_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/postgres"
	"github.com/airlock-run/airlock/internal/queue/queuetest"
)

// Every replica runs the reaper. Racing over the same expired attempts, they
// must end each one once: one re-queue (or one errored/canceled end) per
// attempt, whichever replica wins it.
func TestReapersOnEveryReplicaEndEachAttemptOnce(t *testing.T) {
	t.Parallel()
	const jobs, replicas, rounds = 120, 3, 4
	clock := queuetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	schema := newSchema(t)
	stores := make([]*postgres.Store, replicas)
	for i := range stores {
		stores[i] = open(t, dsn(), schema, postgres.Options{Now: clock.Now})
	}
	ctx := t.Context()
	for i := range jobs {
		sp := spec("default", 0)
		sp.MaxAttempts = 1 + i%2 // half re-queue, half end errored
		submit(t, stores[i%replicas], sp)
	}
	for i := range jobs {
		c, err := stores[i%replicas].Claim(ctx, claimParams(fmt.Sprintf("e%d", i), token(fmt.Sprintf("reap-%d", i))))
		if err != nil || c == nil {
			t.Fatalf("Claim %d = %v, %v", i, c, err)
		}
	}
	// Some cancellations requested, so that three kinds of end race.
	for id := int64(1); id <= jobs; id += 7 {
		if _, err := stores[0].Cancel(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Minute) // every lease is over

	var (
		mu     sync.Mutex
		reaped = map[queue.AttemptRef][]job.State{}
		wg     sync.WaitGroup
	)
	for r := range replicas {
		for range rounds {
			wg.Go(func() {
				got, err := stores[r].ReapExpired(ctx)
				if err != nil {
					t.Errorf("ReapExpired on replica %d: %v", r, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, rp := range got {
					reaped[rp.Attempt] = append(reaped[rp.Attempt], rp.NewState)
				}
			})
		}
	}
	wg.Wait()
	if len(reaped) != jobs {
		t.Errorf("%d attempts reaped, want %d", len(reaped), jobs)
	}
	for ref, states := range reaped {
		if len(states) != 1 {
			t.Errorf("attempt %+v reaped %d times: %v", ref, len(states), states)
		}
		j, err := stores[0].Get(ctx, ref.JobID)
		if err != nil {
			t.Fatal(err)
		}
		want := job.StateErrored
		switch {
		case ref.JobID%7 == 1:
			want = job.StateCanceled
		case j.MaxAttempts == 2:
			want = job.StateQueued
		}
		if j.State != want || j.State != states[0] || j.Attempt != 1 {
			t.Errorf("job %d after the reapers: %s (reported %v) after %d attempts, want %s after 1", ref.JobID, j.State, states, j.Attempt, want)
		}
	}
}
