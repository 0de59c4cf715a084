// Package api holds the coordinator's wire types (JSON over HTTPS, under the
// versioned prefix /api/v1) and the typed Go client that the CLI and the
// executor use. docs/api.md documents every route with examples.
//
// Errors travel as {"error": {"code": "...", "message": "...", "field": "..."}}
// with one HTTP status per code; the client maps them back to the queue
// package's sentinels, so errors.Is works across the wire.
package api

import (
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// Prefix is the versioned path prefix of every route.
const Prefix = "/api/v1"

// Routes (relative to the coordinator's base URL).
//
// Client routes (client token):
//
//	POST /api/v1/jobs                       SubmitRequest → 201 Job
//	GET  /api/v1/jobs?state=&queue=&limit=&cursor=  → JobList
//	GET  /api/v1/jobs/{id}                  → Job
//	GET  /api/v1/jobs/{id}/logs?attempt=&offset=&follow=1  → text/plain stream
//	POST /api/v1/jobs/{id}/cancel           → Job
//	POST /api/v1/jobs/{id}/retry            → Job
//	GET  /api/v1/executors                  → ExecutorList
//	GET  /api/v1/jobs/{id}/artifacts        → ArtifactList
//	GET  /api/v1/jobs/{id}/artifacts/{attempt}  → application/gzip (a tar)
//	GET  /api/v1/repositories               → RepositoryList
//	PUT  /api/v1/repositories/{name}        job.Remote → Repository
//	GET  /api/v1/repositories/{name}        → Repository
//	DELETE /api/v1/repositories/{name}      → 204
//	HEAD /api/v1/files/sha256:{hex}         200 if uploaded, else 404
//	PUT  /api/v1/files/sha256:{hex}         the file's content → 201 FileUpload (200 if already there)
//
// Executor routes (executor token):
//
//	POST /api/v1/executor/claim             ClaimRequest → 200 ClaimResponse | 204
//	POST /api/v1/executor/heartbeat         HeartbeatRequest → HeartbeatResponse
//
// Attempt routes (job token minted at claim, bound to that attempt):
//
//	POST /api/v1/attempts/{jobID}/{attempt}/logs?offset=N   raw bytes → AppendLogResponse
//	POST /api/v1/attempts/{jobID}/{attempt}/finish          FinishRequest → Job
//	PUT  /api/v1/attempts/{jobID}/{attempt}/artifacts       tar.gz → Artifact
//	GET  /api/v1/attempts/{jobID}/{attempt}/files/sha256:{hex}   an uploaded file the job names
//	GET  /api/v1/attempts/{jobID}/{attempt}/git/{name}.git/info/refs?service=git-upload-pack
//	POST /api/v1/attempts/{jobID}/{attempt}/git/{name}.git/git-upload-pack
//	     the job's repository, read-only (git smart HTTP), for this job's repository only
//
// Unauthenticated: GET /healthz, GET /readyz.

// Header names.
const (
	// HeaderLogOffset carries, on a log read, the offset of the first byte of
	// the body; HeaderLogAttempt the attempt the log belongs to.
	HeaderLogOffset  = "X-Airlock-Log-Offset"
	HeaderLogAttempt = "X-Airlock-Log-Attempt"
)

// SubmitRequest submits a job.
type SubmitRequest struct {
	Spec job.Spec `json:"spec"`
}

// Job is a job as clients see it.
type Job struct {
	ID              int64      `json:"id"`
	Queue           string     `json:"queue"`
	Priority        int        `json:"priority"`
	State           job.State  `json:"state"`
	Reason          job.Reason `json:"reason,omitempty"`
	Message         string     `json:"message,omitempty"`
	CancelRequested bool       `json:"cancelRequested,omitempty"`
	Attempt         int        `json:"attempt"`
	MaxAttempts     int        `json:"maxAttempts"`
	CreatedAt       time.Time  `json:"createdAt"`
	StartedAt       *time.Time `json:"startedAt,omitempty"`
	FinishedAt      *time.Time `json:"finishedAt,omitempty"`
	Spec            job.Spec   `json:"spec"`
	Attempts        []Attempt  `json:"attempts,omitempty"`
}

// Attempt is one try at running a job.
type Attempt struct {
	Number     int                `json:"number"`
	Executor   string             `json:"executor"`
	StartedAt  time.Time          `json:"startedAt"`
	FinishedAt *time.Time         `json:"finishedAt,omitempty"`
	Outcome    job.Outcome        `json:"outcome,omitempty"`
	Reason     job.Reason         `json:"reason,omitempty"`
	Message    string             `json:"message,omitempty"`
	Steps      []queue.StepResult `json:"steps,omitempty"`
	LogSize    int64              `json:"logSize"`
	// EgressDenied counts connection attempts the egress policy dropped.
	EgressDenied int64 `json:"egressDenied,omitempty"`
}

// JobList is one page of jobs, newest first.
type JobList struct {
	Jobs       []Job  `json:"jobs"`
	NextCursor string `json:"nextCursor,omitempty"`
}

// Repository is a repository registered on the coordinator. Its credential
// names a coordinator secret; the secret's value is never returned.
type Repository = queue.Repository

// Artifact is what one attempt's artifacts globs collected: a gzip-compressed
// tar.
type Artifact struct {
	JobID     int64     `json:"jobId"`
	Attempt   int       `json:"attempt"`
	Size      int64     `json:"size"`   // bytes of the tar.gz
	SHA256    string    `json:"sha256"` // of the tar.gz, hex
	CreatedAt time.Time `json:"createdAt"`
}

// ArtifactList lists a job's artifacts by attempt.
type ArtifactList struct {
	Artifacts []Artifact `json:"artifacts"`
}

// FileUpload is an uploaded job file.
type FileUpload struct {
	Digest string `json:"digest"` // "sha256:<hex>", what a spec's files[...].blob names
	Size   int64  `json:"size"`
}

// HeaderSHA256 carries, on an artifact or file download, the SHA-256 of the body.
const HeaderSHA256 = "X-Airlock-SHA256"

// RepositoryList lists the registered repositories by name.
type RepositoryList struct {
	Repositories []Repository `json:"repositories"`
}

// ExecutorList lists the executors that have been seen.
type ExecutorList struct {
	Executors []queue.ExecutorInfo `json:"executors"`
}

// ClaimRequest asks for a job. The coordinator holds the request open up to
// Wait (at most 60s, default 30s) until a job is available.
type ClaimRequest struct {
	Executor queue.ExecutorInfo `json:"executor"`
	Queues   []string           `json:"queues"`
	WaitMS   int64              `json:"waitMs,omitempty"`
}

// ClaimResponse hands a job attempt to an executor.
type ClaimResponse struct {
	Job     Job    `json:"job"`
	Attempt int    `json:"attempt"`
	Token   string `json:"token"` // job token for the attempt routes; dead when the attempt ends
	// Secrets are the values of the job's spec.secrets, injected as env and
	// redacted from every log byte.
	Secrets map[string]string `json:"secrets,omitempty"`
	// LeaseMS is how long the attempt lives without a heartbeat;
	// HeartbeatMS how often the coordinator expects one.
	LeaseMS     int64 `json:"leaseMs"`
	HeartbeatMS int64 `json:"heartbeatMs"`
	// LogLimit is the most log bytes the coordinator keeps for the attempt.
	LogLimit int64 `json:"logLimit"`
}

// HeartbeatRequest reports an executor's running attempts.
type HeartbeatRequest struct {
	Executor queue.ExecutorInfo `json:"executor"`
	Attempts []queue.AttemptRef `json:"attempts"`
}

// HeartbeatResponse says what the executor must stop.
type HeartbeatResponse struct {
	Cancel  []queue.AttemptRef `json:"cancel"`
	Unknown []queue.AttemptRef `json:"unknown"`
}

// AppendLogResponse acknowledges a log chunk.
type AppendLogResponse struct {
	End int64 `json:"end"` // the log's size after the append
}

// FinishRequest ends an attempt.
type FinishRequest struct {
	Outcome job.Outcome        `json:"outcome"`
	Reason  job.Reason         `json:"reason"`
	Message string             `json:"message,omitempty"`
	Steps   []queue.StepResult `json:"steps,omitempty"`
	// EgressDenied counts connection attempts the job's egress policy dropped.
	EgressDenied int64 `json:"egressDenied,omitempty"`
}

// Error is the JSON error body.
type Error struct {
	Code    string `json:"code"`            // one of the Code* constants
	Message string `json:"message"`         // human-readable, names the field or limit
	Field   string `json:"field,omitempty"` // JSON path of the offending field, if any
}

// ErrorBody wraps Error on the wire.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error codes and their statuses.
const (
	CodeBadRequest   = "bad_request"    // 400: malformed JSON, bad query parameter
	CodeUnauthorized = "unauthorized"   // 401: missing or unknown token
	CodeForbidden    = "forbidden"      // 403: token of the wrong kind or scope
	CodeNotFound     = "not_found"      // 404
	CodeStaleAttempt = "stale_attempt"  // 409: the attempt is no longer current
	CodeConflict     = "conflict"       // 409: not allowed in the job's state / log gap
	CodeTooLarge     = "too_large"      // 413: request body or log over its limit
	CodeInvalid      = "invalid"        // 422: well-formed but invalid (spec validation)
	CodeInternal     = "internal_error" // 500
)
