package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// Executor routes (claim, heartbeat) and attempt routes (log append, finish).

// Limits of executor requests.
const (
	maxClaimQueues   = 100
	maxFinishSteps   = 1000
	maxFinishMessage = 16 << 10
)

func (s *Server) handleClaim(w http.ResponseWriter, r *http.Request) {
	var req api.ClaimRequest
	if err := decodeJSON(w, r, s.cfg.MaxRequestBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	queues, err := checkClaim(req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	wait := s.cfg.ClaimWait
	if req.WaitMS > 0 {
		wait = min(time.Duration(req.WaitMS)*time.Millisecond, MaxClaimWait)
	}
	ctx := r.Context()
	var token string
	start := time.Now()
	c, err := s.claims.claim(ctx, queues, wait, s.closing, func() (*queue.Claim, error) {
		var hash []byte
		token, hash = newJobToken() // fresh per store attempt: a refused claim burns its token
		return s.tryClaim(ctx, queue.ClaimParams{
			Queues: queues, Executor: req.Executor, Lease: s.cfg.Lease, TokenHash: hash,
		})
	})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("claiming: %w", err))
		return
	}
	if c == nil {
		s.metrics.claimEmpty.Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.metrics.claimWait.Observe(time.Since(start).Seconds())
	if c.Attempt == 1 {
		s.metrics.pickup.Observe(s.now().Sub(c.Job.CreatedAt).Seconds())
	}
	s.watch.wake(c.Job.ID)
	s.log.Debug("job claimed", "job_id", c.Job.ID, "attempt", c.Attempt, "executor", req.Executor.Name)
	secrets, _ := s.secretsFor(c.Job.Spec)
	writeJSON(w, http.StatusOK, api.ClaimResponse{
		Job:         toAPIJob(c.Job),
		Attempt:     c.Attempt,
		Token:       token,
		Secrets:     secrets,
		LeaseMS:     s.cfg.Lease.Milliseconds(),
		HeartbeatMS: s.cfg.HeartbeatInterval.Milliseconds(),
		LogLimit:    s.cfg.LogLimit,
	})
}

// checkClaim validates a claim request and returns its queues, deduplicated.
func checkClaim(req api.ClaimRequest) ([]string, error) {
	if req.Executor.Name == "" {
		return nil, invalid("executor.name", "executor name is required")
	}
	if len(req.Queues) == 0 {
		return nil, invalid("queues", "at least one queue is required")
	}
	if len(req.Queues) > maxClaimQueues {
		return nil, invalid("queues", "at most %d queues, not %d", maxClaimQueues, len(req.Queues))
	}
	if req.WaitMS < 0 {
		return nil, invalid("waitMs", "waitMs %d is negative", req.WaitMS)
	}
	var queues []string
	for i, q := range req.Queues {
		if q == "" {
			return nil, invalid(fmt.Sprintf("queues[%d]", i), "queue name is empty")
		}
		if !slices.Contains(queues, q) {
			queues = append(queues, q)
		}
	}
	return queues, nil
}

// tryClaim asks the store for a job once. A job naming a secret the
// coordinator no longer has is not handed out: its attempt ends errored
// (system_error), which re-queues it while attempts remain.
func (s *Server) tryClaim(ctx context.Context, p queue.ClaimParams) (*queue.Claim, error) {
	c, err := s.store.Claim(ctx, p)
	if err != nil || c == nil {
		return c, err
	}
	if _, missing := s.secretsFor(c.Job.Spec); missing != "" {
		ref := queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
		msg := fmt.Sprintf("secret %q is not configured on the coordinator", missing)
		s.log.Warn("ending attempt: missing secret", "job_id", ref.JobID, "attempt", ref.Attempt, "secret", missing)
		j, err := s.store.Finish(context.WithoutCancel(ctx), queue.FinishParams{
			Attempt: ref, Outcome: job.OutcomeErrored, Reason: job.ReasonSystemError, Message: msg,
		})
		if err != nil {
			return nil, fmt.Errorf("ending attempt %d of job %d: %w", ref.Attempt, ref.JobID, err)
		}
		s.afterFinish(j)
		return nil, nil
	}
	return c, nil
}

// secretsFor returns the values of spec's secrets, and the first name it
// has no value for.
func (s *Server) secretsFor(spec job.Spec) (map[string]string, string) {
	if len(spec.Secrets) == 0 {
		return nil, ""
	}
	out := make(map[string]string, len(spec.Secrets))
	for _, name := range spec.Secrets {
		v, ok := s.cfg.Secrets[name]
		if !ok {
			return nil, name
		}
		out[name] = v
	}
	return out, ""
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var req api.HeartbeatRequest
	if err := decodeJSON(w, r, s.cfg.MaxRequestBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Executor.Name == "" {
		s.writeError(w, r, invalid("executor.name", "executor name is required"))
		return
	}
	res, err := s.store.Heartbeat(r.Context(), queue.HeartbeatParams{
		Executor: req.Executor, Attempts: req.Attempts, Lease: s.cfg.Lease,
	})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("heartbeat of %s: %w", req.Executor.Name, err))
		return
	}
	out := api.HeartbeatResponse{Cancel: res.Cancel, Unknown: res.Unknown}
	if out.Cancel == nil {
		out.Cancel = []queue.AttemptRef{}
	}
	if out.Unknown == nil {
		out.Unknown = []queue.AttemptRef{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAppendLog(w http.ResponseWriter, r *http.Request) {
	ref, err := attemptFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := r.URL.Query().Get("offset")
	offset, err := strconv.ParseInt(v, 10, 64)
	if err != nil || offset < 0 {
		s.writeError(w, r, newHTTPError(http.StatusBadRequest, api.CodeBadRequest, "offset",
			"offset %q is not a non-negative integer", v))
		return
	}
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 && n <= MaxLogChunkBytes {
		buf.Grow(int(n))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxLogChunkBytes)); err != nil {
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) {
			err = badRequest("reading request body: %v", err)
		}
		s.writeError(w, r, err)
		return
	}
	end, err := s.store.AppendLog(r.Context(), queue.AppendLogParams{
		Attempt: ref, Offset: offset, Data: buf.Bytes(), Limit: s.cfg.LogLimit,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.metrics.logBytes.Add(float64(buf.Len()))
	s.watch.wake(ref.JobID)
	writeJSON(w, http.StatusOK, api.AppendLogResponse{End: end})
}

func (s *Server) handleFinish(w http.ResponseWriter, r *http.Request) {
	ref, err := attemptFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req api.FinishRequest
	if err := decodeJSON(w, r, s.cfg.MaxRequestBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := checkFinish(req); err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Finish(r.Context(), queue.FinishParams{
		Attempt: ref, Outcome: req.Outcome, Reason: req.Reason, Message: req.Message, Steps: req.Steps,
		EgressDenied: req.EgressDenied,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.metrics.finished.WithLabelValues(string(req.Outcome)).Inc()
	s.log.Debug("attempt finished", "job_id", ref.JobID, "attempt", ref.Attempt,
		"outcome", req.Outcome, "reason", req.Reason, "state", j.State)
	s.afterFinish(j)
	writeJSON(w, http.StatusOK, toAPIJob(j))
}

// afterFinish wakes the job's followers and, if the job went back to the
// queue, a claimer.
func (s *Server) afterFinish(j *queue.Job) {
	s.watch.wake(j.ID)
	if j.State == job.StateQueued {
		s.claims.notify(j.Queue)
	}
}

func checkFinish(req api.FinishRequest) error {
	if !req.Outcome.Valid() {
		return invalid("outcome", "unknown outcome %q", req.Outcome)
	}
	if !req.Reason.Valid() {
		return invalid("reason", "unknown reason %q", req.Reason)
	}
	if len(req.Steps) > maxFinishSteps {
		return invalid("steps", "at most %d steps, not %d", maxFinishSteps, len(req.Steps))
	}
	if len(req.Message) > maxFinishMessage {
		return invalid("message", "message is %d bytes, over the limit of %d", len(req.Message), maxFinishMessage)
	}
	return nil
}
