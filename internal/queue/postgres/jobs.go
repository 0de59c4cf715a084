package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// jobColumns are what scanJob reads, in its order.
const jobColumns = `id, queue, priority, spec, state, reason, message, cancel_requested,
	attempt, max_attempts, created_at, started_at, finished_at`

// scanner is what pgx.Row and pgx.Rows offer.
type scanner interface{ Scan(dest ...any) error }

func scanJob(sc scanner, extra ...any) (*queue.Job, error) {
	var (
		j                 queue.Job
		spec              []byte
		state, reason     string
		created           pgtype.Timestamptz
		started, finished pgtype.Timestamptz
	)
	dest := append([]any{&j.ID, &j.Queue, &j.Priority, &spec, &state, &reason, &j.Message, &j.CancelRequested,
		&j.Attempt, &j.MaxAttempts, &created, &started, &finished}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(spec, &j.Spec); err != nil {
		return nil, fmt.Errorf("decoding spec of job %d: %w", j.ID, err)
	}
	j.State, j.Reason = job.State(state), job.Reason(reason)
	j.CreatedAt, j.StartedAt, j.FinishedAt = ts(created), ts(started), ts(finished)
	return &j, nil
}

// loadJob reads one job without its attempts; ErrNotFound if it is missing.
func loadJob(ctx context.Context, q querier, id int64) (*queue.Job, error) {
	j, err := scanJob(q.QueryRow(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, queue.ErrNotFound
	}
	return j, err
}

// lockedJob is a job whose row the transaction has locked, with what the
// attempt rules need beyond queue.Job.
type lockedJob struct {
	*queue.Job
	base int // attempt_base
}

// lockJob locks a job's row for the rest of the transaction and reads it;
// ErrNotFound if it is missing. Statements after it see every change
// committed before the lock was granted.
func lockJob(ctx context.Context, tx *txn, id int64) (lockedJob, error) {
	var l lockedJob
	var err error
	l.Job, err = scanJob(tx.QueryRow(ctx, `SELECT `+jobColumns+`, attempt_base FROM jobs WHERE id = $1 FOR NO KEY UPDATE`, id), &l.base)
	if errors.Is(err, pgx.ErrNoRows) {
		return l, queue.ErrNotFound
	}
	return l, err
}

// Submit implements queue.Store.
func (s *Store) Submit(ctx context.Context, p queue.SubmitParams) (*queue.Job, error) {
	spec, err := json.Marshal(p.Spec)
	if err != nil {
		return nil, fmt.Errorf("submitting job: encoding spec: %w", err)
	}
	q, maxAttempts := p.QueueName(), p.MaxAttempts()
	var j *queue.Job
	err = s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		var err error
		j, err = scanJob(tx.QueryRow(ctx, `INSERT INTO jobs (queue, priority, spec, state, max_attempts, created_at)
			VALUES ($1, $2, $3, 'queued', $4, $5) RETURNING `+jobColumns,
			q, p.Spec.Priority, string(spec), maxAttempts, tx.now))
		if err == nil {
			tx.notify(ChannelClaimable, q)
		}
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
	err := s.tx(ctx, readOnly, func(ctx context.Context, tx *txn) error {
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
	rows, err := q.Query(ctx, `SELECT number, executor, started_at, finished_at, lease_until,
		outcome, reason, message, steps, log_size, egress_denied
		FROM attempts WHERE job_id = $1 ORDER BY number`, jobID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var as []queue.Attempt
	for rows.Next() {
		var (
			a                        queue.Attempt
			started, finished, lease pgtype.Timestamptz
			outcome, reason          string
			steps                    []byte
		)
		if err := rows.Scan(&a.Number, &a.Executor, &started, &finished, &lease,
			&outcome, &reason, &a.Message, &steps, &a.LogSize, &a.EgressDenied); err != nil {
			return nil, err
		}
		if steps != nil {
			if err := json.Unmarshal(steps, &a.Steps); err != nil {
				return nil, fmt.Errorf("decoding steps of attempt %d: %w", a.Number, err)
			}
		}
		a.Outcome, a.Reason = job.Outcome(outcome), job.Reason(reason)
		a.StartedAt, a.FinishedAt, a.LeaseUntil = ts(started), ts(finished), ts(lease)
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
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if p.Cursor != "" {
		before, err := queue.DecodeCursor(p.Cursor)
		if err != nil {
			return nil, fmt.Errorf("listing jobs: %w", err)
		}
		where = append(where, "id < "+arg(before))
	}
	if len(p.States) > 0 {
		where = append(where, "state = ANY("+arg(stateStrings(p.States))+")")
	}
	if len(p.Queues) > 0 {
		where = append(where, "queue = ANY("+arg(p.Queues)+")")
	}
	if !p.FinishedBefore.IsZero() {
		where = append(where, "state = ANY("+arg(stateStrings(job.TerminalStates))+") AND finished_at < "+arg(p.FinishedBefore))
	}
	query := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY id DESC LIMIT " + arg(limit+1) // one more tells whether there is a next page

	var res *queue.ListResult
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		res = &queue.ListResult{}
		rows, err := q.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			j, err := scanJob(rows)
			if err != nil {
				return err
			}
			res.Jobs = append(res.Jobs, j)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	if len(res.Jobs) > limit {
		res.Jobs = res.Jobs[:limit]
		res.NextCursor = queue.EncodeCursor(res.Jobs[limit-1].ID)
	}
	return res, nil
}

func stateStrings(states []job.State) []string {
	out := make([]string, len(states))
	for i, st := range states {
		out[i] = string(st)
	}
	return out
}

// qEndJob moves a job to a new state (terminal, or queued again) and forgets
// its lease and any cancel request.
const qEndJob = `UPDATE jobs SET state = $2, reason = $3, message = $4, finished_at = $5,
	lease_until = NULL, cancel_requested = false WHERE id = $1 RETURNING ` + jobColumns

// Cancel implements queue.Store.
func (s *Store) Cancel(ctx context.Context, id int64) (*queue.Job, error) {
	var j *queue.Job
	err := s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		l, err := lockJob(ctx, tx, id)
		if err != nil {
			return err
		}
		j = l.Job
		switch {
		case j.State == job.StateQueued:
			j, err = scanJob(tx.QueryRow(ctx, qEndJob, id, job.StateCanceled, job.ReasonCanceled, "", tx.now))
		case j.State == job.StateRunning:
			if j.CancelRequested {
				return nil // asked already
			}
			j, err = scanJob(tx.QueryRow(ctx, `UPDATE jobs SET cancel_requested = true WHERE id = $1 RETURNING `+jobColumns, id))
		default:
			return fmt.Errorf("job is %s: %w", j.State, queue.ErrInvalidState)
		}
		if err == nil {
			tx.notify(ChannelJob, strconv.FormatInt(id, 10))
		}
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
	err := s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		l, err := lockJob(ctx, tx, id)
		if err != nil {
			return err
		}
		if !l.State.Terminal() {
			return fmt.Errorf("job is %s: %w", l.State, queue.ErrInvalidState)
		}
		j, err = scanJob(tx.QueryRow(ctx, `UPDATE jobs SET state = 'queued', reason = '', message = '',
			cancel_requested = false, finished_at = NULL, lease_until = NULL, attempt_base = attempt
			WHERE id = $1 RETURNING `+jobColumns, id))
		if err == nil {
			tx.notify(ChannelClaimable, j.Queue)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("retrying job %d: %w", id, err)
	}
	return j, nil
}

// DeleteJob implements queue.Store. The job's attempts and log chunks go
// with it (ON DELETE CASCADE), in the same transaction.
func (s *Store) DeleteJob(ctx context.Context, id int64) error {
	err := s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM jobs WHERE id = $1 FOR UPDATE`, id).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return queue.ErrNotFound
		}
		if err != nil {
			return err
		}
		if st := job.State(state); !st.Terminal() {
			return fmt.Errorf("job is %s: %w", st, queue.ErrInvalidState)
		}
		_, err = tx.Exec(ctx, `DELETE FROM jobs WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting job %d: %w", id, err)
	}
	return nil
}

// Executors implements queue.Store.
func (s *Store) Executors(ctx context.Context) ([]queue.ExecutorInfo, error) {
	var out []queue.ExecutorInfo
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		out = nil
		rows, err := q.Query(ctx, `SELECT info, last_seen FROM executors ORDER BY last_seen DESC, name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				info []byte
				seen pgtype.Timestamptz
				e    queue.ExecutorInfo
			)
			if err := rows.Scan(&info, &seen); err != nil {
				return err
			}
			if err := json.Unmarshal(info, &e); err != nil {
				return fmt.Errorf("decoding info: %w", err)
			}
			e.LastSeen = ts(seen)
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("listing executors: %w", err)
	}
	return out, nil
}

// executorInfo encodes what an executor said about itself at now.
func executorInfo(e queue.ExecutorInfo, now time.Time) (string, error) {
	e.LastSeen = now.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("encoding executor info: %w", err)
	}
	return string(b), nil
}

const qUpsertExecutor = `INSERT INTO executors (name, info, last_seen) VALUES ($1, $2, $3)
	ON CONFLICT (name) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen`

// text makes free-form text storable in a text column, which holds neither
// NUL bytes nor invalid UTF-8: both become U+FFFD.
func text(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
