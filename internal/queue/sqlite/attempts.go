// The attempt lifecycle: claim, lease, heartbeat, finish, reap.
//
// A claim turns the best queued job of the asked-for queues into a running
// one and inserts attempt number jobs.attempt+1 with the caller's token hash
// and a lease. From then on jobs.attempt names the current attempt, and an
// attempt is "live" exactly when it is the current one, the job is running,
// and attempts.finished_at is 0. Everything an executor does names an attempt
// and is refused (ErrStaleAttempt) unless it is live; everything that ends an
// attempt — Finish, the reaper — sets finished_at and clears token_hash in
// the same transaction that moves the job on, so a token dies with its
// attempt.
//
// The attempt budget is attempt - attempt_base: a user retry sets
// attempt_base = attempt, so numbers keep counting up (they stay unique within
// a job, and each has its own log) while MaxAttempts starts afresh.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

var (
	// qQueueHead is the best queued job of one queue: the first entry of its
	// range of the jobs_claim index.
	qQueueHead = prepared(`SELECT id, priority FROM jobs
		WHERE state = 'queued' AND queue = ? ORDER BY priority DESC, id LIMIT 1`)
	qStartJob = prepared(`UPDATE jobs SET state = 'running', attempt = attempt + 1,
		started_at = CASE WHEN started_at = 0 THEN ?1 ELSE started_at END,
		lease_until = ?2, executor = ?3, reason = '', message = ''
		WHERE id = ?4 AND state = 'queued' RETURNING ` + jobColumns)
	qInsertAttempt = prepared(`INSERT INTO attempts (job_id, number, executor, token_hash, started_at, lease_until)
		VALUES (?, ?, ?, ?, ?, ?)`)
	qAttemptForToken = prepared(`SELECT a.job_id, a.number FROM attempts a JOIN jobs j ON j.id = a.job_id
		WHERE a.token_hash = ? AND a.finished_at = 0 AND j.state = 'running' AND j.attempt = a.number`)
	qLiveAttempt = prepared(`SELECT j.state, j.attempt, j.attempt_base, j.max_attempts, j.cancel_requested,
			a.executor, a.finished_at, a.outcome, a.ended_by, a.log_size
		FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id AND a.number = ?
		WHERE j.id = ?`)
	qExtendJobLease     = prepared(`UPDATE jobs SET lease_until = ? WHERE id = ?`)
	qExtendAttemptLease = prepared(`UPDATE attempts SET lease_until = ? WHERE job_id = ? AND number = ?`)
	// qEndAttempt ends an attempt; its token dies with it.
	qEndAttempt = prepared(`UPDATE attempts SET finished_at = ?, outcome = ?, reason = ?, message = ?,
		steps = ?, egress_denied = ?, ended_by = ?, token_hash = NULL WHERE job_id = ? AND number = ?`)
	qExpired = prepared(`SELECT id, attempt, attempt_base, max_attempts, cancel_requested
		FROM jobs WHERE state = 'running' AND lease_until < ? ORDER BY id`)
)

// Claim implements queue.Store.
func (s *Store) Claim(ctx context.Context, p queue.ClaimParams) (*queue.Claim, error) {
	queues, err := p.Check()
	if err != nil {
		return nil, err
	}

	var c *queue.Claim
	err = s.write(ctx, func(tx txn, now int64) error {
		c = nil
		// The best job of each queue is the head of its index range; the best
		// of those heads wins. This stays a handful of index seeks however
		// long the queues are.
		var (
			bestID       int64
			bestPriority int
		)
		for _, q := range queues {
			var (
				id       int64
				priority int
			)
			err := tx.QueryRowContext(ctx, qQueueHead, q).Scan(&id, &priority)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if bestID == 0 || priority > bestPriority || (priority == bestPriority && id < bestID) {
				bestID, bestPriority = id, priority
			}
		}
		if bestID == 0 {
			return nil
		}

		lease := now + p.Lease.Nanoseconds()
		// The update returns the started job: no second read of the row.
		j, err := scanJob(tx.QueryRowContext(ctx, qStartJob, now, lease, p.Executor.Name, bestID))
		if err != nil {
			return err
		}
		attempt := j.Attempt
		if _, err := tx.ExecContext(ctx, qInsertAttempt, bestID, attempt, p.Executor.Name,
			nilIfEmpty(p.TokenHash), now, lease); err != nil {
			return err
		}
		if err := upsertExecutor(ctx, tx, p.Executor, now); err != nil {
			return err
		}
		c = &queue.Claim{Job: j, Attempt: attempt}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claiming a job: %w", err)
	}
	if c != nil {
		s.logger.Debug("claimed job", "job_id", c.Job.ID, "attempt", c.Attempt, "executor", p.Executor.Name)
	}
	return c, nil
}

// nilIfEmpty stores an absent token hash as NULL, which UNIQUE ignores.
func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// AttemptForToken implements queue.Store.
func (s *Store) AttemptForToken(ctx context.Context, tokenHash []byte) (queue.AttemptRef, error) {
	if len(tokenHash) == 0 {
		return queue.AttemptRef{}, fmt.Errorf("looking up job token: %w", queue.ErrUnknownToken)
	}
	var ref queue.AttemptRef
	err := s.rstmts[qAttemptForToken].QueryRowContext(ctx, tokenHash).Scan(&ref.JobID, &ref.Attempt)
	if errors.Is(err, sql.ErrNoRows) {
		return queue.AttemptRef{}, fmt.Errorf("looking up job token: %w", queue.ErrUnknownToken)
	}
	if err != nil {
		return queue.AttemptRef{}, fmt.Errorf("looking up job token: %w", err)
	}
	return ref, nil
}

// liveAttempt is what the fencing check reads about a job and one of its
// attempts.
type liveAttempt struct {
	found           bool // the job exists
	state           job.State
	current         int // jobs.attempt
	base            int
	maxAttempts     int
	cancelRequested bool
	// Of the named attempt; hasAttempt is false when there is no such row.
	hasAttempt bool
	executor   string
	finished   bool
	outcome    job.Outcome
	endedBy    string
	logSize    int64
}

// live reports whether the named attempt is the job's current, running one.
func (l liveAttempt) live(ref queue.AttemptRef) bool {
	return l.hasAttempt && !l.finished && l.state == job.StateRunning && l.current == ref.Attempt
}

func loadLiveAttempt(ctx context.Context, q querier, ref queue.AttemptRef) (liveAttempt, error) {
	var (
		l                          liveAttempt
		executor, outcome, endedBy sql.NullString
		finished, logSize          sql.NullInt64
	)
	err := q.QueryRowContext(ctx, qLiveAttempt, ref.Attempt, ref.JobID).Scan(
		&l.state, &l.current, &l.base, &l.maxAttempts, &l.cancelRequested,
		&executor, &finished, &outcome, &endedBy, &logSize)
	if errors.Is(err, sql.ErrNoRows) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	l.found = true
	l.hasAttempt = executor.Valid
	l.executor = executor.String
	l.finished = finished.Int64 != 0
	l.outcome = job.Outcome(outcome.String)
	l.endedBy = endedBy.String
	l.logSize = logSize.Int64
	return l, nil
}

// Heartbeat implements queue.Store.
func (s *Store) Heartbeat(ctx context.Context, p queue.HeartbeatParams) (*queue.HeartbeatResult, error) {
	if p.Lease <= 0 {
		return nil, fmt.Errorf("heartbeat of executor %s: lease %v is not positive", p.Executor.Name, p.Lease)
	}
	var res *queue.HeartbeatResult
	err := s.write(ctx, func(tx txn, now int64) error {
		res = &queue.HeartbeatResult{}
		lease := now + p.Lease.Nanoseconds()
		for _, ref := range p.Attempts {
			l, err := loadLiveAttempt(ctx, tx, ref)
			if err != nil {
				return err
			}
			if !l.live(ref) || l.executor != p.Executor.Name {
				res.Unknown = append(res.Unknown, ref)
				continue
			}
			if _, err := tx.ExecContext(ctx, qExtendJobLease, lease, ref.JobID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, qExtendAttemptLease, lease, ref.JobID, ref.Attempt); err != nil {
				return err
			}
			if l.cancelRequested {
				res.Cancel = append(res.Cancel, ref)
			}
		}
		return upsertExecutor(ctx, tx, p.Executor, now)
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of executor %s: %w", p.Executor.Name, err)
	}
	return res, nil
}

// Finish implements queue.Store.
func (s *Store) Finish(ctx context.Context, p queue.FinishParams) (*queue.Job, error) {
	ref := p.Attempt
	if !p.Outcome.Valid() {
		return nil, fmt.Errorf("finishing job %d attempt %d: unknown outcome %q", ref.JobID, ref.Attempt, p.Outcome)
	}
	reason := p.Reason
	if reason == "" {
		reason = p.Outcome.DefaultReason()
	}
	var steps any // NULL when there are none
	if len(p.Steps) > 0 {
		b, err := json.Marshal(p.Steps)
		if err != nil {
			return nil, fmt.Errorf("finishing job %d attempt %d: encoding steps: %w", ref.JobID, ref.Attempt, err)
		}
		steps = string(b)
	}

	var j *queue.Job
	err := s.write(ctx, func(tx txn, now int64) error {
		l, err := loadLiveAttempt(ctx, tx, ref)
		if err != nil {
			return err
		}
		if !l.found {
			return queue.ErrNotFound
		}
		if !l.live(ref) {
			// The executor's own earlier report, sent again: acknowledge it.
			if l.hasAttempt && l.finished && l.endedBy == "finish" && l.outcome == p.Outcome {
				j, err = loadJob(ctx, tx, ref.JobID)
				return err
			}
			return queue.ErrStaleAttempt
		}

		var (
			state      job.State
			jobReason  job.Reason
			jobMessage string
			finishedAt int64 // of the job; 0 while it is not terminal
		)
		end := queue.AfterFinish(queue.AttemptBudget{Used: ref.Attempt - l.base, MaxAttempts: l.maxAttempts,
			CancelRequested: l.cancelRequested}, p.Outcome, reason, p.Message)
		state, jobReason, jobMessage = end.State, end.Reason, end.Message
		if state.Terminal() {
			finishedAt = now
		}
		if _, err := tx.ExecContext(ctx, qEndAttempt, now, p.Outcome, reason, p.Message, steps, p.EgressDenied, "finish",
			ref.JobID, ref.Attempt); err != nil {
			return err
		}
		j, err = scanJob(tx.QueryRowContext(ctx, qEndJobReturning, state, jobReason, jobMessage, finishedAt, ref.JobID))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("finishing job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	return j, nil
}

// ReapExpired implements queue.Store. It runs as one write transaction, so it
// is serialized with claims, heartbeats and finishes: an attempt is either
// reaped or heartbeated in time, never both, and never reaped twice.
func (s *Store) ReapExpired(ctx context.Context) ([]queue.Reaped, error) {
	var reaped []queue.Reaped
	err := s.write(ctx, func(tx txn, now int64) error {
		reaped = reaped[:0]
		type expired struct {
			id                         int64
			attempt, base, maxAttempts int
			cancelRequested            bool
		}
		rows, err := tx.QueryContext(ctx, qExpired, now)
		if err != nil {
			return err
		}
		var all []expired
		for rows.Next() {
			var e expired
			if err := rows.Scan(&e.id, &e.attempt, &e.base, &e.maxAttempts, &e.cancelRequested); err != nil {
				rows.Close()
				return err
			}
			all = append(all, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}

		for _, e := range all {
			var (
				state      job.State
				jobReason  job.Reason
				jobMessage string
				finishedAt int64
			)
			end := queue.AfterLeaseExpiry(queue.AttemptBudget{Used: e.attempt - e.base, MaxAttempts: e.maxAttempts,
				CancelRequested: e.cancelRequested})
			state, jobReason, jobMessage = end.State, end.Reason, end.Message
			if state.Terminal() {
				finishedAt = now
			}
			if _, err := tx.ExecContext(ctx, qEndAttempt, now, job.OutcomeErrored, job.ReasonLeaseExpired,
				"the executor stopped heartbeating", nil, 0, "reaper", e.id, e.attempt); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, qEndJob, state, jobReason, jobMessage, finishedAt, e.id); err != nil {
				return err
			}
			reaped = append(reaped, queue.Reaped{
				Attempt:  queue.AttemptRef{JobID: e.id, Attempt: e.attempt},
				NewState: state,
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reaping expired attempts: %w", err)
	}
	for _, r := range reaped {
		s.logger.Info("reaped expired attempt", "job_id", r.Attempt.JobID, "attempt", r.Attempt.Attempt,
			"new_state", r.NewState)
	}
	return reaped, nil
}
