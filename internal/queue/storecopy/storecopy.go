// Package storecopy moves a whole job queue from one store to another — in
// practice from the embedded SQLite store to PostgreSQL, when a deployment
// outgrows one machine (airlock migrate-store). Everything moves as it is:
// job IDs, states, attempts with their logs and live tokens, the retry
// budgets, the repository registrations and the executors, so that clients'
// job IDs stay valid and a job that was running keeps running. The
// coordinator must be stopped while it runs; blobs (artifacts, uploads) are
// not in the queue store and stay where they are.
package storecopy

import (
	"context"
	"errors"
	"fmt"

	"github.com/airlock-run/airlock/internal/queue"
)

// ErrNotEmpty is a destination that already holds jobs, registrations or
// executors (one that heartbeated a coordinator already started on it).
var ErrNotEmpty = errors.New("the destination store is not empty")

// Stats says what moved.
type Stats struct {
	Jobs, Attempts, Repositories, Executors int
	LogBytes                                int64
}

// Copy moves everything src holds into dst, which must be empty. progress,
// if set, is called after each job.
func Copy(ctx context.Context, src queue.Dumper, dst queue.Loader, progress func(Stats)) (Stats, error) {
	var st Stats
	empty, err := dst.Empty(ctx)
	if err != nil {
		return st, fmt.Errorf("checking the destination: %w", err)
	}
	if !empty {
		return st, ErrNotEmpty
	}
	err = src.DumpJobs(ctx, func(j queue.JobDump) error {
		if err := dst.LoadJob(ctx, j); err != nil {
			return fmt.Errorf("loading job %d: %w", j.ID, err)
		}
		st.Jobs++
		st.Attempts += len(j.Attempts)
		for _, a := range j.Attempts {
			st.LogBytes += int64(len(a.Log))
		}
		if progress != nil {
			progress(st)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	rest, err := src.DumpRest(ctx)
	if err != nil {
		return st, fmt.Errorf("reading registrations and executors: %w", err)
	}
	if err := dst.LoadRest(ctx, rest); err != nil {
		return st, fmt.Errorf("loading registrations and executors: %w", err)
	}
	st.Repositories, st.Executors = len(rest.Repositories), len(rest.Executors)
	return st, nil
}
