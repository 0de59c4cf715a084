// The attempt lifecycle: claim, lease, heartbeat, finish, reap.
//
// A claim turns the best queued job of the asked-for queues into a running
// one and inserts attempt number jobs.attempt+1 with the caller's token hash
// and a lease. From then on jobs.attempt names the current attempt, and an
// attempt is "live" exactly when it is the current one, the job is running,
// and attempts.finished_at is NULL. Everything an executor does names an
// attempt and is refused (ErrStaleAttempt) unless it is live; everything that
// ends an attempt — Finish, the reaper — sets finished_at and clears
// token_hash in the same transaction that moves the job on, so a token dies
// with its attempt.
//
// Each of these first locks the job's row, then reads the attempt rows (see
// the package comment), except Claim, which is one statement that locks the
// rows it claims with SKIP LOCKED.
//
// The attempt budget is attempt - attempt_base: a user retry sets
// attempt_base = attempt, so numbers keep counting up (they stay unique within
// a job, and each has its own log) while MaxAttempts starts afresh.

package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// qClaim claims the best queued job of queues $1 in one statement. The head
// of each queue is one index seek on jobs_claim that skips rows other
// transactions hold; the best head wins, and the same statement starts its
// job, inserts the attempt and records the executor. It returns no row when
// every queue is empty (or all its queued jobs are locked).
const qClaim = `
WITH head AS MATERIALIZED (
	SELECT h.id AS head_id
	FROM unnest($1::text[]) AS q (name),
	LATERAL (
		SELECT id, priority FROM jobs
		WHERE state = 'queued' AND queue = q.name
		ORDER BY priority DESC, id
		LIMIT 1
		FOR NO KEY UPDATE SKIP LOCKED
	) AS h
	ORDER BY h.priority DESC, h.id
	LIMIT 1
), started AS (
	UPDATE jobs SET state = 'running', attempt = attempt + 1,
		started_at = COALESCE(started_at, $2::timestamptz), lease_until = $3::timestamptz, reason = '', message = ''
	FROM head WHERE id = head.head_id
	RETURNING ` + jobColumns + `
), new_attempt AS (
	INSERT INTO attempts (job_id, number, executor, token_hash, started_at, lease_until)
	SELECT id, attempt, $4::text, $5::bytea, $2::timestamptz, $3::timestamptz FROM started
), seen AS (
	INSERT INTO executors (name, info, last_seen)
	SELECT $4::text, $6::json, $2::timestamptz FROM started
	ON CONFLICT (name) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen
)
SELECT ` + jobColumns + ` FROM started`

// qClaimByToken finds the claim a token hash was minted for while its
// attempt is live.
const qClaimByToken = `SELECT ` + jobColumns + `, (SELECT number FROM attempts WHERE token_hash = $1)
	FROM jobs WHERE id = (SELECT job_id FROM attempts WHERE token_hash = $1)`

// Claim implements queue.Store. See the package comment for how a claim
// whose commit outcome is unknown is resolved.
func (s *Store) Claim(ctx context.Context, p queue.ClaimParams) (*queue.Claim, error) {
	queues, err := p.Check()
	if err != nil {
		return nil, err
	}
	var token any // NULL, which UNIQUE ignores, when there is none
	if len(p.TokenHash) > 0 {
		token = p.TokenHash
	}

	var (
		// uncertain says an earlier try may have committed: the next one
		// must look for its attempt first.
		uncertain bool
		// fence is the server session of that try. Until it is gone, the
		// try may yet commit, so it is ended before the attempt is looked
		// for.
		fence *session
	)
	for n := 1; ; n++ {
		if err = ctx.Err(); err != nil {
			break
		}
		if fence != nil {
			if err = s.endSession(ctx, *fence); err == nil {
				fence = nil
			}
		}
		if err == nil && uncertain {
			var c *queue.Claim
			if c, err = s.claimByToken(ctx, p.TokenHash); c != nil {
				s.logger.Info("found the claim whose commit was interrupted", "job_id", c.Job.ID,
					"attempt", c.Attempt, "executor", p.Executor.Name)
				return c, nil
			}
			uncertain = err != nil
		}
		if err == nil {
			var (
				c    *queue.Claim
				sent *session
			)
			c, sent, err = s.claimOnce(ctx, p, queues, token)
			if err == nil {
				if c != nil {
					s.logger.Debug("claimed job", "job_id", c.Job.ID, "attempt", c.Attempt, "executor", p.Executor.Name)
				}
				return c, nil
			}
			if sent != nil && isConnLost(err) && !pgconn.SafeToRetry(err) {
				// The claim statement is its own transaction, and the
				// server may have run it to its commit.
				if token == nil {
					return nil, fmt.Errorf("claiming a job: connection lost, outcome unknown (no token hash to look the claim up by): %w", err)
				}
				uncertain, fence = true, sent
			}
		}
		again := false
		switch {
		case ctx.Err() != nil:
		case isTransient(err), isConnLost(err), errors.Is(err, errSessionLingers):
			again = true
		}
		limit := maxTries
		if uncertain {
			limit = maxResolveTries
		}
		if !again || n >= limit {
			break
		}
		s.logger.Debug("retrying claim", "try", n, "uncertain", uncertain, "error", err)
		if err = sleep(ctx, backoff(n)); err != nil {
			break
		}
	}
	if uncertain {
		// Should the try have committed after all, its lease expires and
		// the reaper puts the job back.
		return nil, fmt.Errorf("claiming a job: outcome unknown after a lost connection: %w", err)
	}
	return nil, fmt.Errorf("claiming a job: %w", err)
}

// claimOnce is one try of Claim. It returns the session it sent the claim
// on, if it got that far.
func (s *Store) claimOnce(ctx context.Context, p queue.ClaimParams, queues []string, token any) (*queue.Claim, *session, error) {
	now := s.now()
	info, err := executorInfo(p.Executor, now)
	if err != nil {
		return nil, nil, err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Release()
	sess, err := sessionOf(conn.Conn())
	if err != nil {
		return nil, nil, err
	}
	j, err := scanJob(conn.QueryRow(ctx, qClaim, queues, now, now.Add(p.Lease), p.Executor.Name, token, info))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, &sess, err
	}
	return &queue.Claim{Job: j, Attempt: j.Attempt}, &sess, nil
}

// claimByToken returns the claim a token hash was minted for, or nil.
func (s *Store) claimByToken(ctx context.Context, tokenHash []byte) (*queue.Claim, error) {
	var n int
	j, err := scanJob(s.pool.QueryRow(ctx, qClaimByToken, tokenHash), &n)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &queue.Claim{Job: j, Attempt: n}, nil
}

// AttemptForToken implements queue.Store.
func (s *Store) AttemptForToken(ctx context.Context, tokenHash []byte) (queue.AttemptRef, error) {
	if len(tokenHash) == 0 {
		return queue.AttemptRef{}, fmt.Errorf("looking up job token: %w", queue.ErrUnknownToken)
	}
	var ref queue.AttemptRef
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		err := q.QueryRow(ctx, `SELECT a.job_id, a.number FROM attempts a JOIN jobs j ON j.id = a.job_id
			WHERE a.token_hash = $1 AND a.finished_at IS NULL AND j.state = 'running' AND j.attempt = a.number`,
			tokenHash).Scan(&ref.JobID, &ref.Attempt)
		if errors.Is(err, pgx.ErrNoRows) {
			return queue.ErrUnknownToken
		}
		return err
	})
	if err != nil {
		return queue.AttemptRef{}, fmt.Errorf("looking up job token: %w", err)
	}
	return ref, nil
}

// Heartbeat implements queue.Store.
func (s *Store) Heartbeat(ctx context.Context, p queue.HeartbeatParams) (*queue.HeartbeatResult, error) {
	if p.Lease <= 0 {
		return nil, fmt.Errorf("heartbeat of executor %s: lease %v is not positive", p.Executor.Name, p.Lease)
	}
	ids := make([]int64, 0, len(p.Attempts))
	for _, ref := range p.Attempts {
		ids = append(ids, ref.JobID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	var res *queue.HeartbeatResult
	err := s.tx(ctx, replayable, func(ctx context.Context, tx *txn) error {
		res = &queue.HeartbeatResult{}
		type jobRow struct {
			running         bool
			attempt         int
			cancelRequested bool
		}
		jobs := make(map[int64]jobRow, len(ids))
		if len(ids) > 0 {
			rows, err := tx.Query(ctx, `SELECT id, state, attempt, cancel_requested FROM jobs
				WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
			if err != nil {
				return err
			}
			for rows.Next() {
				var (
					id    int64
					state string
					r     jobRow
				)
				if err := rows.Scan(&id, &state, &r.attempt, &r.cancelRequested); err != nil {
					rows.Close()
					return err
				}
				r.running = state == string(job.StateRunning)
				jobs[id] = r
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		// The current attempts of the running jobs named, read after the
		// locks: their executor and whether they have ended.
		var candJobs []int64
		var candNumbers []int32
		for _, ref := range p.Attempts {
			if r, ok := jobs[ref.JobID]; ok && r.running && r.attempt == ref.Attempt {
				candJobs = append(candJobs, ref.JobID)
				candNumbers = append(candNumbers, int32(ref.Attempt))
			}
		}
		live := make(map[queue.AttemptRef]bool, len(candJobs))
		if len(candJobs) > 0 {
			rows, err := tx.Query(ctx, `SELECT job_id, number FROM attempts
				WHERE (job_id, number) IN (SELECT * FROM unnest($1::bigint[], $2::int[]))
					AND finished_at IS NULL AND executor = $3`, candJobs, candNumbers, p.Executor.Name)
			if err != nil {
				return err
			}
			for rows.Next() {
				var ref queue.AttemptRef
				if err := rows.Scan(&ref.JobID, &ref.Attempt); err != nil {
					rows.Close()
					return err
				}
				live[ref] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		var extendJobs []int64
		var extendNumbers []int32
		for _, ref := range p.Attempts {
			if !live[ref] {
				res.Unknown = append(res.Unknown, ref)
				continue
			}
			extendJobs = append(extendJobs, ref.JobID)
			extendNumbers = append(extendNumbers, int32(ref.Attempt))
			if jobs[ref.JobID].cancelRequested {
				res.Cancel = append(res.Cancel, ref)
			}
		}
		info, err := executorInfo(p.Executor, tx.now)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `WITH extend_jobs AS (
				UPDATE jobs SET lease_until = $1::timestamptz WHERE id = ANY($2::bigint[])
			), extend_attempts AS (
				UPDATE attempts SET lease_until = $1::timestamptz
				FROM unnest($2::bigint[], $3::int[]) AS r (job_id, number)
				WHERE attempts.job_id = r.job_id AND attempts.number = r.number
			)
			INSERT INTO executors (name, info, last_seen) VALUES ($4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen`,
			tx.now.Add(p.Lease), extendJobs, extendNumbers, p.Executor.Name, info, tx.now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of executor %s: %w", p.Executor.Name, err)
	}
	return res, nil
}

// qEndAttempt ends attempt $2 of job $1; its token dies with it.
const qEndAttempt = `UPDATE attempts SET finished_at = $3, outcome = $4, reason = $5, message = $6,
	steps = $7::json, egress_denied = $8, ended_by = $9, token_hash = NULL WHERE job_id = $1 AND number = $2`

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
	message := text(p.Message)
	var steps any // NULL when there are none
	if len(p.Steps) > 0 {
		b, err := json.Marshal(p.Steps)
		if err != nil {
			return nil, fmt.Errorf("finishing job %d attempt %d: encoding steps: %w", ref.JobID, ref.Attempt, err)
		}
		steps = string(b)
	}

	var j *queue.Job
	err := s.tx(ctx, replayable, func(ctx context.Context, tx *txn) error {
		l, err := lockJob(ctx, tx, ref.JobID)
		if err != nil {
			return err
		}
		var (
			finished         bool
			outcome, endedBy string
		)
		err = tx.QueryRow(ctx, `SELECT finished_at IS NOT NULL, outcome, ended_by FROM attempts
			WHERE job_id = $1 AND number = $2`, ref.JobID, ref.Attempt).Scan(&finished, &outcome, &endedBy)
		hasAttempt := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if !hasAttempt || finished || l.State != job.StateRunning || l.Attempt != ref.Attempt {
			// The executor's own earlier report, sent again: acknowledge it.
			if hasAttempt && finished && endedBy == "finish" && job.Outcome(outcome) == p.Outcome {
				j = l.Job
				return nil
			}
			return queue.ErrStaleAttempt
		}

		var (
			state      job.State
			jobReason  job.Reason
			jobMessage string
			finishedAt any // of the job; NULL while it is not terminal
		)
		end := queue.AfterFinish(queue.AttemptBudget{Used: ref.Attempt - l.base, MaxAttempts: l.MaxAttempts,
			CancelRequested: l.CancelRequested}, p.Outcome, reason, message)
		state, jobReason, jobMessage = end.State, end.Reason, end.Message
		if state.Terminal() {
			finishedAt = tx.now
		}
		if _, err := tx.Exec(ctx, qEndAttempt, ref.JobID, ref.Attempt, tx.now, p.Outcome, reason, message, steps,
			p.EgressDenied, "finish"); err != nil {
			return err
		}
		if j, err = scanJob(tx.QueryRow(ctx, qEndJob, ref.JobID, state, jobReason, jobMessage, finishedAt)); err != nil {
			return err
		}
		tx.notify(ChannelJob, strconv.FormatInt(ref.JobID, 10))
		if state == job.StateQueued {
			tx.notify(ChannelClaimable, j.Queue)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("finishing job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	return j, nil
}

// ReapExpired implements queue.Store. It locks the expired jobs (waiting for
// any transaction that holds one: a heartbeat that extends the lease takes
// the job out of the set), so an attempt is either reaped or heartbeated in
// time, never both, and never reaped twice.
func (s *Store) ReapExpired(ctx context.Context) ([]queue.Reaped, error) {
	var reaped []queue.Reaped
	err := s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		reaped = reaped[:0]
		type expired struct {
			id                         int64
			attempt, base, maxAttempts int
			cancelRequested            bool
			queue                      string
		}
		rows, err := tx.Query(ctx, `SELECT id, attempt, attempt_base, max_attempts, cancel_requested, queue
			FROM jobs WHERE state = 'running' AND lease_until < $1 ORDER BY id FOR NO KEY UPDATE`, tx.now)
		if err != nil {
			return err
		}
		var all []expired
		for rows.Next() {
			var e expired
			if err := rows.Scan(&e.id, &e.attempt, &e.base, &e.maxAttempts, &e.cancelRequested, &e.queue); err != nil {
				rows.Close()
				return err
			}
			all = append(all, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(all) == 0 {
			return nil
		}

		var (
			ids                      []int64
			numbers                  []int32
			states, reasons, message []string
			terminal                 []bool
		)
		for _, e := range all {
			var (
				state      job.State
				jobReason  job.Reason
				jobMessage string
			)
			end := queue.AfterLeaseExpiry(queue.AttemptBudget{Used: e.attempt - e.base, MaxAttempts: e.maxAttempts,
				CancelRequested: e.cancelRequested})
			state, jobReason, jobMessage = end.State, end.Reason, end.Message
			if state == job.StateQueued {
				tx.notify(ChannelClaimable, e.queue)
			}
			tx.notify(ChannelJob, strconv.FormatInt(e.id, 10))
			ids = append(ids, e.id)
			numbers = append(numbers, int32(e.attempt))
			states = append(states, string(state))
			reasons = append(reasons, string(jobReason))
			message = append(message, jobMessage)
			terminal = append(terminal, state.Terminal())
			reaped = append(reaped, queue.Reaped{
				Attempt:  queue.AttemptRef{JobID: e.id, Attempt: e.attempt},
				NewState: state,
			})
		}
		_, err = tx.Exec(ctx, `WITH r AS MATERIALIZED (
				SELECT * FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], $7::bool[])
					AS r (id, number, state, reason, message, terminal)
			), end_attempts AS (
				UPDATE attempts SET finished_at = $1, outcome = $8, reason = $9, message = $10,
					ended_by = 'reaper', token_hash = NULL
				FROM r WHERE attempts.job_id = r.id AND attempts.number = r.number
			)
			UPDATE jobs SET state = r.state, reason = r.reason, message = r.message,
				finished_at = CASE WHEN r.terminal THEN $1::timestamptz END,
				lease_until = NULL, cancel_requested = false
			FROM r WHERE jobs.id = r.id`,
			tx.now, ids, numbers, states, reasons, message, terminal,
			job.OutcomeErrored, job.ReasonLeaseExpired, "the executor stopped heartbeating")
		return err
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
