// Package queue defines the job queue seam, Store, and the domain types it
// speaks in. Implementations live in sub-packages named for what they wrap
// (sqlite/, later postgres/); every one of them passes queuetest.Exercise.
//
// # Attempts and fencing
//
// Every claim starts a new attempt of a job: (JobID, Attempt) names it and a
// job token (only its SHA-256 is given to the store) authenticates it. Every
// mutation an executor makes — heartbeat, log append, finish — names the
// attempt, and the store refuses it with ErrStaleAttempt unless that attempt is
// still the job's current one and the job is still running. A zombie executor
// whose lease expired can therefore never overwrite what a newer attempt wrote.
//
// # Leases
//
// A claim and every heartbeat set the attempt's lease to now+Lease. ReapExpired
// re-queues running jobs whose lease is over while attempts remain, errors them
// once MaxAttempts is used up, and cancels them if cancellation was requested.
// Time comes from the clock given to the implementation, never from time.Now
// directly, so lease tests never sleep.
package queue

import (
	"context"
	"errors"
	"time"

	"github.com/airlock-run/airlock/internal/job"
)

// Sentinel errors. Implementations wrap them; callers test with errors.Is.
// The HTTP edge maps each to one status code and the client maps it back.
var (
	ErrNotFound     = errors.New("job not found")                       // 404
	ErrStaleAttempt = errors.New("attempt is no longer current")        // 409
	ErrInvalidState = errors.New("operation not allowed in this state") // 409
	ErrLogGap       = errors.New("log chunk leaves a gap")              // 409
	ErrLogLimit     = errors.New("log exceeds the per-attempt limit")   // 413
	ErrUnknownToken = errors.New("unknown or expired job token")        // 401
	ErrBadCursor    = errors.New("invalid list cursor")                 // 400
)

// Store is the durable job queue.
//
// Concurrency: every method is safe for concurrent use by many goroutines and,
// for networked implementations, by many processes; in particular no job is
// ever handed to two concurrent Claim calls.
//
// Context: cancelling ctx abandons the call; a mutation is then either fully
// applied or not applied at all (every method is one transaction).
//
// Errors: the sentinels above, wrapped; anything else is a storage failure.
type Store interface {
	// Submit stores a new queued job. The spec must already be validated.
	Submit(ctx context.Context, p SubmitParams) (*Job, error)
	// Get returns one job with its attempts. ErrNotFound if it does not exist.
	Get(ctx context.Context, id int64) (*Job, error)
	// List returns jobs newest first, filtered and paginated by an opaque cursor.
	List(ctx context.Context, p ListParams) (*ListResult, error)

	// Claim hands the highest-priority, oldest queued job of the given queues
	// to an executor, starting a new attempt. It returns (nil, nil) at once
	// when no job is available; waiting is the caller's business.
	Claim(ctx context.Context, p ClaimParams) (*Claim, error)
	// AttemptForToken returns the live attempt that a job token's hash
	// authenticates, or ErrUnknownToken once the attempt has ended.
	AttemptForToken(ctx context.Context, tokenHash []byte) (AttemptRef, error)
	// Heartbeat extends the leases of an executor's attempts and says which of
	// them must be cancelled and which the store no longer recognises (ended,
	// superseded or never seen): the executor must kill those.
	Heartbeat(ctx context.Context, p HeartbeatParams) (*HeartbeatResult, error)
	// AppendLog appends a chunk to an attempt's log at byte offset p.Offset.
	// A chunk that ends at or before the current end is a no-op (a resend); one
	// that overlaps it appends only the new part; one that starts past the end
	// is ErrLogGap. Returns the new end offset.
	AppendLog(ctx context.Context, p AppendLogParams) (int64, error)
	// ReadLog returns up to p.Limit bytes of an attempt's log from p.Offset.
	ReadLog(ctx context.Context, p ReadLogParams) (*LogChunk, error)
	// Finish ends an attempt with the executor's outcome. Finishing the same
	// attempt again with the same outcome is a no-op that returns the job;
	// finishing a stale attempt is ErrStaleAttempt. An errored outcome
	// re-queues the job while attempts remain. A running job whose
	// cancellation was requested ends canceled unless it succeeded or failed.
	Finish(ctx context.Context, p FinishParams) (*Job, error)

	// Cancel ends a queued job at once (canceled) and asks a running job's
	// executor to stop (the job stays running with CancelRequested until the
	// executor reports or the lease expires). Cancelling a finished job is
	// ErrInvalidState.
	Cancel(ctx context.Context, id int64) (*Job, error)
	// Retry moves a finished job back to queued with a fresh attempt budget.
	// Retrying a queued or running job is ErrInvalidState.
	Retry(ctx context.Context, id int64) (*Job, error)
	// ReapExpired handles every running job whose lease ended before now.
	ReapExpired(ctx context.Context) ([]Reaped, error)

	// DeleteJob removes a finished job with its attempts and logs (retention).
	// ErrNotFound if it does not exist; ErrInvalidState unless it is
	// terminal. Its blobs are the caller's business.
	DeleteJob(ctx context.Context, id int64) error

	// Executors returns what each executor last reported, most recent first.
	Executors(ctx context.Context) ([]ExecutorInfo, error)

	// PutRepository registers a repository, or replaces the registration
	// of that name (keeping its CreatedAt). The remote must already be
	// validated (job.ValidateRemote).
	PutRepository(ctx context.Context, r job.Remote) (*Repository, error)
	// Repository returns a registration; ErrNotFound if there is none.
	Repository(ctx context.Context, name string) (*Repository, error)
	// Repositories lists the registrations by name.
	Repositories(ctx context.Context) ([]Repository, error)
	// DeleteRepository removes a registration; ErrNotFound if there is none.
	DeleteRepository(ctx context.Context, name string) error

	// Close releases the store's resources.
	Close() error
}

// Repository is a repository registered on the coordinator.
type Repository struct {
	job.Remote
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Job is a job as the store holds it.
type Job struct {
	ID              int64
	Queue           string
	Priority        int
	Spec            job.Spec
	State           job.State
	Reason          job.Reason // set once terminal
	Message         string     // human detail for the reason
	CancelRequested bool
	Attempt         int // number of the current or last attempt; 0 before the first claim
	MaxAttempts     int
	CreatedAt       time.Time
	StartedAt       time.Time // zero until first claimed
	FinishedAt      time.Time // zero until terminal
	Attempts        []Attempt // filled by Get, not by List
}

// Attempt is one try at running a job.
type Attempt struct {
	Number     int
	Executor   string
	StartedAt  time.Time
	FinishedAt time.Time // zero while running
	LeaseUntil time.Time
	Outcome    job.Outcome // empty while running
	Reason     job.Reason
	Message    string
	Steps      []StepResult
	LogSize    int64
	// EgressDenied counts the attempt's connection attempts that its egress
	// policy dropped (packets of new connections, every protocol).
	EgressDenied int64
}

// StepResult is what one step did.
type StepResult struct {
	Name       string        `json:"name"`
	ExitCode   int           `json:"exitCode"`
	Signal     string        `json:"signal,omitempty"`
	OOMKilled  bool          `json:"oomKilled,omitempty"`
	TimedOut   bool          `json:"timedOut,omitempty"`
	StartedAt  time.Time     `json:"startedAt"`
	FinishedAt time.Time     `json:"finishedAt"`
	Duration   time.Duration `json:"durationNanos"`
	// Image is the reference the step named, and ImageDigest what it
	// resolved to when the step ran ("" for runtimes without images).
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"imageDigest,omitempty"`
}

// AttemptRef names one attempt of one job.
type AttemptRef struct {
	JobID   int64 `json:"jobId"`
	Attempt int   `json:"attempt"`
}

// SubmitParams are the inputs of Store.Submit.
type SubmitParams struct {
	Spec job.Spec // validated; Queue, Priority and MaxAttempts are read from it
}

// ListParams filter and paginate Store.List.
type ListParams struct {
	States []job.State // any of these; empty means all
	Queues []string    // any of these; empty means all
	// FinishedBefore, when set, keeps only terminal jobs that finished
	// before it (what a retention policy deletes).
	FinishedBefore time.Time
	Limit          int    // default 50, at most 1000
	Cursor         string // from ListResult.NextCursor; empty for the first page
}

// ListResult is one page of jobs.
type ListResult struct {
	Jobs       []*Job
	NextCursor string // empty on the last page
}

// ClaimParams are the inputs of Store.Claim.
type ClaimParams struct {
	Queues    []string      // at least one
	Executor  ExecutorInfo  // recorded as the attempt's executor and upserted
	Lease     time.Duration // how long the attempt lives without a heartbeat
	TokenHash []byte        // SHA-256 of the job token minted for this attempt
}

// Claim is a job handed to an executor.
type Claim struct {
	Job     *Job
	Attempt int
}

// HeartbeatParams are the inputs of Store.Heartbeat.
type HeartbeatParams struct {
	Executor ExecutorInfo
	Attempts []AttemptRef
	Lease    time.Duration
}

// HeartbeatResult tells the executor what to stop.
type HeartbeatResult struct {
	Cancel  []AttemptRef // cancellation was requested
	Unknown []AttemptRef // not current, not running, or not this executor's
}

// AppendLogParams are the inputs of Store.AppendLog.
type AppendLogParams struct {
	Attempt AttemptRef
	Offset  int64
	Data    []byte
	Limit   int64 // ErrLogLimit if the log would grow past this; 0 = no limit
}

// ReadLogParams are the inputs of Store.ReadLog.
type ReadLogParams struct {
	JobID   int64
	Attempt int // 0 means the job's latest attempt
	Offset  int64
	Limit   int // default and maximum 1 MiB
}

// LogChunk is a slice of an attempt's log.
type LogChunk struct {
	Attempt    int // the attempt actually read (resolves 0)
	Data       []byte
	NextOffset int64
	Size       int64 // the log's total size right now
	// Final is true when the attempt has ended and NextOffset == Size: no more
	// bytes will ever be appended.
	Final bool
}

// FinishParams are the inputs of Store.Finish.
type FinishParams struct {
	Attempt AttemptRef
	Outcome job.Outcome
	Reason  job.Reason
	Message string
	Steps   []StepResult
	// EgressDenied is the attempt's count of denied connection attempts.
	EgressDenied int64
}

// Reaped is one attempt the reaper ended.
type Reaped struct {
	Attempt  AttemptRef
	NewState job.State // queued (retry), errored (attempts used up) or canceled
}

// ExecutorInfo is what an executor says about itself.
type ExecutorInfo struct {
	Name     string    `json:"name"`
	Version  string    `json:"version,omitempty"`
	OS       string    `json:"os,omitempty"`
	Arch     string    `json:"arch,omitempty"`
	Runtime  string    `json:"runtime,omitempty"`
	Queues   []string  `json:"queues,omitempty"`
	MaxJobs  int       `json:"maxJobs,omitempty"`
	Running  int       `json:"running"`
	LastSeen time.Time `json:"lastSeen"` // set by the store
}
