package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/airlock-run/airlock/internal/queue"
)

// DumpJobs implements queue.Dumper.
func (s *Store) DumpJobs(ctx context.Context, fn func(queue.JobDump) error) error {
	var after int64
	for {
		var page []dumpedJob
		err := s.read(ctx, func(tx txn) error {
			rows, err := tx.QueryContext(ctx, `SELECT id, queue, priority, spec, state, reason, message, cancel_requested,
				attempt, attempt_base, max_attempts, created_at, started_at, finished_at, lease_until
				FROM jobs WHERE id > ? ORDER BY id LIMIT 100`, after)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var (
					j                                 dumpedJob
					spec                              string
					created, started, finished, lease int64
				)
				if err := rows.Scan(&j.ID, &j.Queue, &j.Priority, &spec, &j.State, &j.Reason, &j.Message, &j.CancelRequested,
					&j.Attempt, &j.AttemptBase, &j.MaxAttempts, &created, &started, &finished, &lease); err != nil {
					return err
				}
				if err := json.Unmarshal([]byte(spec), &j.Spec); err != nil {
					return fmt.Errorf("decoding spec of job %d: %w", j.ID, err)
				}
				j.CreatedAt, j.StartedAt, j.FinishedAt, j.LeaseUntil = fromNanos(created), fromNanos(started), fromNanos(finished), fromNanos(lease)
				page = append(page, j)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			for i := range page {
				if page[i].Attempts, page[i].logSizes, err = dumpAttempts(ctx, tx, page[i].ID); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("dumping jobs: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		for _, j := range page {
			for i, a := range j.Attempts {
				// The log files are outside the transaction; nothing writes
				// them while the store is not in use.
				data, missing, err := s.logs.read(j.ID, a.Number, 0, j.logSizes[i])
				if err != nil {
					return fmt.Errorf("dumping the log of job %d attempt %d: %w", j.ID, a.Number, err)
				}
				if missing > 0 {
					s.logger.Warn("log shorter than recorded; the missing bytes move as NUL bytes", "job_id", j.ID, "attempt", a.Number, "missing", missing)
				}
				j.Attempts[i].Log = data
			}
			if err := fn(j.JobDump); err != nil {
				return err
			}
		}
		after = page[len(page)-1].ID
	}
}

// dumpedJob is a job read, with its attempts' committed log sizes.
type dumpedJob struct {
	queue.JobDump
	logSizes []int64
}

func dumpAttempts(ctx context.Context, tx txn, jobID int64) ([]queue.AttemptDump, []int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT number, executor, token_hash, started_at, finished_at, lease_until,
		outcome, reason, message, ended_by, steps, log_size, egress_denied
		FROM attempts WHERE job_id = ? ORDER BY number`, jobID)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var (
		out   []queue.AttemptDump
		sizes []int64
	)
	for rows.Next() {
		var (
			a                        queue.AttemptDump
			started, finished, lease int64
			steps                    *string
			logSize                  int64
		)
		if err := rows.Scan(&a.Number, &a.Executor, &a.TokenHash, &started, &finished, &lease,
			&a.Outcome, &a.Reason, &a.Message, &a.EndedBy, &steps, &logSize, &a.EgressDenied); err != nil {
			return nil, nil, err
		}
		if steps != nil && *steps != "" {
			if err := json.Unmarshal([]byte(*steps), &a.Steps); err != nil {
				return nil, nil, fmt.Errorf("decoding steps of job %d attempt %d: %w", jobID, a.Number, err)
			}
		}
		a.StartedAt, a.FinishedAt, a.LeaseUntil = fromNanos(started), fromNanos(finished), fromNanos(lease)
		out = append(out, a)
		sizes = append(sizes, logSize)
	}
	return out, sizes, rows.Err()
}

// DumpRest implements queue.Dumper.
func (s *Store) DumpRest(ctx context.Context) (queue.StoreDump, error) {
	var d queue.StoreDump
	var err error
	if d.Repositories, err = s.Repositories(ctx); err != nil {
		return d, err
	}
	if d.Executors, err = s.Executors(ctx); err != nil {
		return d, err
	}
	return d, nil
}
