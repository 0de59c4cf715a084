package queue

import (
	"context"
	"time"

	"github.com/airlock-run/airlock/internal/job"
)

// Moving a queue from one store to another (airlock migrate-store: SQLite to
// PostgreSQL when one machine is no longer enough) needs more than the Store
// interface shows: the bookkeeping behind it (leases, the retry budget's
// base, the token hashes of live attempts, who ended an attempt) must move
// too, so that the new store behaves exactly as the old one would have — a
// running job's executor keeps heartbeating with its token, a retried job
// keeps its fresh budget — and every ID stays the same.

// JobDump is one job with everything a store keeps about it.
type JobDump struct {
	ID              int64
	Queue           string
	Priority        int
	Spec            job.Spec
	State           job.State
	Reason          job.Reason
	Message         string
	CancelRequested bool
	Attempt         int // the current or last attempt's number
	AttemptBase     int // Attempt when the budget last started afresh (a user retry)
	MaxAttempts     int
	CreatedAt       time.Time
	StartedAt       time.Time // zero: never claimed
	FinishedAt      time.Time // zero: not terminal
	LeaseUntil      time.Time // of the current attempt while running
	Attempts        []AttemptDump
}

// AttemptDump is one attempt with its log.
type AttemptDump struct {
	Number       int
	Executor     string
	TokenHash    []byte // nil once the attempt ended
	StartedAt    time.Time
	FinishedAt   time.Time // zero while running
	LeaseUntil   time.Time
	Outcome      job.Outcome
	Reason       job.Reason
	Message      string
	EndedBy      string // "finish", "reaper" or ""
	Steps        []StepResult
	EgressDenied int64
	Log          []byte // the whole log (at most the per-attempt limit)
}

// StoreDump is what a store holds besides its jobs.
type StoreDump struct {
	Repositories []Repository
	Executors    []ExecutorInfo
}

// Dumper reads a whole store; the store must not change meanwhile (stop the
// coordinator first).
type Dumper interface {
	// DumpJobs calls fn with every job, in ascending ID order.
	DumpJobs(ctx context.Context, fn func(JobDump) error) error
	// DumpRest returns the registrations and executors.
	DumpRest(ctx context.Context) (StoreDump, error)
}

// Loader writes what a Dumper read into an empty store.
type Loader interface {
	// Empty reports whether the store holds no job, no registration and no
	// executor.
	Empty(ctx context.Context) (bool, error)
	// LoadJob stores a job as it is, its ID included.
	LoadJob(ctx context.Context, j JobDump) error
	// LoadRest stores the registrations and executors, and makes new job
	// IDs continue after the largest one loaded.
	LoadRest(ctx context.Context, d StoreDump) error
}
