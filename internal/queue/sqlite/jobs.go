package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

const jobColumns = `id, queue, priority, spec, state, reason, message, cancel_requested,
	attempt, max_attempts, created_at, started_at, finished_at`

var (
	qLoadJob   = prepared(`SELECT ` + jobColumns + ` FROM jobs WHERE id = ?`)
	qInsertJob = prepared(`INSERT INTO jobs (queue, priority, spec, state, max_attempts, created_at)
		VALUES (?, ?, ?, 'queued', ?, ?) RETURNING ` + jobColumns)
	qLoadAttempts = prepared(`SELECT number, executor, started_at, finished_at, lease_until,
		outcome, reason, message, steps, log_size, egress_denied
		FROM attempts WHERE job_id = ? ORDER BY number`)
	// qEndJob moves a job to a new state (terminal, or queued again) and
	// forgets its lease and any cancel request.
	qEndJob = prepared(`UPDATE jobs SET state = ?, reason = ?, message = ?, finished_at = ?,
		lease_until = 0, cancel_requested = 0 WHERE id = ?`)
	qEndJobReturning = prepared(`UPDATE jobs SET state = ?, reason = ?, message = ?, finished_at = ?,
		lease_until = 0, cancel_requested = 0 WHERE id = ? RETURNING ` + jobColumns)
	qRequestCancel = prepared(`UPDATE jobs SET cancel_requested = 1 WHERE id = ?`)
	qRetry         = prepared(`UPDATE jobs SET state = 'queued', reason = '', message = '',
		cancel_requested = 0, finished_at = 0, lease_until = 0, attempt_base = attempt WHERE id = ?`)
	qExecutors      = prepared(`SELECT info, last_seen FROM executors ORDER BY last_seen DESC, name`)
	qUpsertExecutor = prepared(`INSERT INTO executors (name, info, last_seen) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen`)
)

// scanner is what *sql.Row and *sql.Rows offer.
type scanner interface{ Scan(dest ...any) error }

func scanJob(sc scanner) (*queue.Job, error) {
	var (
		j                          queue.Job
		spec                       string
		created, started, finished int64
	)
	if err := sc.Scan(&j.ID, &j.Queue, &j.Priority, &spec, &j.State, &j.Reason, &j.Message, &j.CancelRequested,
		&j.Attempt, &j.MaxAttempts, &created, &started, &finished); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(spec), &j.Spec); err != nil {
		return nil, fmt.Errorf("decoding spec of job %d: %w", j.ID, err)
	}
	j.CreatedAt, j.StartedAt, j.FinishedAt = fromNanos(created), fromNanos(started), fromNanos(finished)
	return &j, nil
}

// loadJob reads one job without its attempts; ErrNotFound if it is missing.
func loadJob(ctx context.Context, q querier, id int64) (*queue.Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, qLoadJob, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, queue.ErrNotFound
	}
	return j, err
}

// Submit implements queue.Store.
func (s *Store) Submit(ctx context.Context, p queue.SubmitParams) (*queue.Job, error) {
	spec, err := json.Marshal(p.Spec)
	if err != nil {
		return nil, fmt.Errorf("submitting job: encoding spec: %w", err)
	}
	q, maxAttempts := p.QueueName(), p.MaxAttempts()
	var j *queue.Job
	err = s.write(ctx, func(tx txn, now int64) error {
		var err error
		j, err = scanJob(tx.QueryRowContext(ctx, qInsertJob, q, p.Spec.Priority, string(spec), maxAttempts, now))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("submitting job: %w", err)
	}
	return j, nil
}

// Get implements queue.Store.
func (s *Store) Get(ctx context.Context, id int64) (*queue.Job, error) {
	var j *queue.Job
	err := s.read(ctx, func(tx txn) error {
		var err error
		if j, err = loadJob(ctx, tx, id); err != nil {
			return err
		}
		j.Attempts, err = loadAttempts(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("getting job %d: %w", id, err)
	}
	return j, nil
}

func loadAttempts(ctx context.Context, q querier, jobID int64) ([]queue.Attempt, error) {
	rows, err := q.QueryContext(ctx, qLoadAttempts, jobID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var as []queue.Attempt
	for rows.Next() {
		var (
			a                        queue.Attempt
			started, finished, lease int64
			steps                    sql.NullString
		)
		if err := rows.Scan(&a.Number, &a.Executor, &started, &finished, &lease,
			&a.Outcome, &a.Reason, &a.Message, &steps, &a.LogSize, &a.EgressDenied); err != nil {
			return nil, err
		}
		if steps.Valid {
			if err := json.Unmarshal([]byte(steps.String), &a.Steps); err != nil {
				return nil, fmt.Errorf("decoding steps of attempt %d: %w", a.Number, err)
			}
		}
		a.StartedAt, a.FinishedAt, a.LeaseUntil = fromNanos(started), fromNanos(finished), fromNanos(lease)
		as = append(as, a)
	}
	return as, rows.Err()
}

// List implements queue.Store. The cursor is the base64 of the last ID
// returned; the next page starts below it.
func (s *Store) List(ctx context.Context, p queue.ListParams) (*queue.ListResult, error) {
	limit := p.PageLimit()

	var (
		where []string
		args  []any
	)
	if p.Cursor != "" {
		before, err := queue.DecodeCursor(p.Cursor)
		if err != nil {
			return nil, fmt.Errorf("listing jobs: %w", err)
		}
		where = append(where, "id < ?")
		args = append(args, before)
	}
	if len(p.States) > 0 {
		where = append(where, "state IN ("+placeholders(len(p.States))+")")
		for _, st := range p.States {
			args = append(args, st)
		}
	}
	if len(p.Queues) > 0 {
		where = append(where, "queue IN ("+placeholders(len(p.Queues))+")")
		for _, q := range p.Queues {
			args = append(args, q)
		}
	}
	if !p.FinishedBefore.IsZero() {
		where = append(where, "state IN ("+placeholders(len(job.TerminalStates))+") AND finished_at < ?")
		for _, st := range job.TerminalStates {
			args = append(args, st)
		}
		args = append(args, p.FinishedBefore.UnixNano())
	}
	query := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit+1) // one more tells whether there is a next page

	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	defer rows.Close()
	res := &queue.ListResult{}
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("listing jobs: %w", err)
		}
		res.Jobs = append(res.Jobs, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	if len(res.Jobs) > limit {
		res.Jobs = res.Jobs[:limit]
		res.NextCursor = queue.EncodeCursor(res.Jobs[limit-1].ID)
	}
	return res, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// Cancel implements queue.Store.
func (s *Store) Cancel(ctx context.Context, id int64) (*queue.Job, error) {
	var j *queue.Job
	err := s.write(ctx, func(tx txn, now int64) error {
		var err error
		if j, err = loadJob(ctx, tx, id); err != nil {
			return err
		}
		switch {
		case j.State == job.StateQueued:
			_, err = tx.ExecContext(ctx, qEndJob, job.StateCanceled, job.ReasonCanceled, "", now, id)
		case j.State == job.StateRunning:
			if j.CancelRequested {
				return nil // asked already
			}
			_, err = tx.ExecContext(ctx, qRequestCancel, id)
		default:
			return fmt.Errorf("job is %s: %w", j.State, queue.ErrInvalidState)
		}
		if err != nil {
			return err
		}
		j, err = loadJob(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("canceling job %d: %w", id, err)
	}
	return j, nil
}

// Retry implements queue.Store. The attempt counter keeps counting, so that
// attempt numbers stay unique within a job; attempt_base moves up to it, so
// that the budget of MaxAttempts starts afresh.
func (s *Store) Retry(ctx context.Context, id int64) (*queue.Job, error) {
	var j *queue.Job
	err := s.write(ctx, func(tx txn, now int64) error {
		var err error
		if j, err = loadJob(ctx, tx, id); err != nil {
			return err
		}
		if !j.State.Terminal() {
			return fmt.Errorf("job is %s: %w", j.State, queue.ErrInvalidState)
		}
		if _, err := tx.ExecContext(ctx, qRetry, id); err != nil {
			return err
		}
		j, err = loadJob(ctx, tx, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("retrying job %d: %w", id, err)
	}
	return j, nil
}

// Executors implements queue.Store.
func (s *Store) Executors(ctx context.Context) ([]queue.ExecutorInfo, error) {
	rows, err := s.rstmts[qExecutors].QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing executors: %w", err)
	}
	defer rows.Close()
	var out []queue.ExecutorInfo
	for rows.Next() {
		var (
			info string
			seen int64
			e    queue.ExecutorInfo
		)
		if err := rows.Scan(&info, &seen); err != nil {
			return nil, fmt.Errorf("listing executors: %w", err)
		}
		if err := json.Unmarshal([]byte(info), &e); err != nil {
			return nil, fmt.Errorf("listing executors: decoding info: %w", err)
		}
		e.LastSeen = fromNanos(seen)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing executors: %w", err)
	}
	return out, nil
}

// upsertExecutor records what an executor said about itself at now.
func upsertExecutor(ctx context.Context, tx querier, e queue.ExecutorInfo, now int64) error {
	e.LastSeen = fromNanos(now)
	info, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encoding executor info: %w", err)
	}
	_, err = tx.ExecContext(ctx, qUpsertExecutor, e.Name, string(info), now)
	return err
}

var (
	qDeleteAttempts = prepared(`DELETE FROM attempts WHERE job_id = ?`)
	qDeleteJob      = prepared(`DELETE FROM jobs WHERE id = ?`)
)

// DeleteJob implements queue.Store. The rows go in one transaction; the log
// files after it commits (a crash in between leaves files no row points to,
// never a row without its log).
func (s *Store) DeleteJob(ctx context.Context, id int64) error {
	var attempts int
	err := s.write(ctx, func(tx txn, now int64) error {
		j, err := loadJob(ctx, tx, id)
		if err != nil {
			return err
		}
		if !j.State.Terminal() {
			return fmt.Errorf("job is %s: %w", j.State, queue.ErrInvalidState)
		}
		attempts = j.Attempt
		if _, err := tx.ExecContext(ctx, qDeleteAttempts, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, qDeleteJob, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting job %d: %w", id, err)
	}
	for n := 1; n <= attempts; n++ {
		if err := s.logs.remove(id, n); err != nil {
			return fmt.Errorf("deleting job %d: %w", id, err)
		}
	}
	return nil
}
