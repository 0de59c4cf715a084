package postgres

// Loading a queue moved from another store (queue.Loader, for airlock
// migrate-store): rows go in as they are, IDs included.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/airlock-run/airlock/internal/queue"
)

var _ queue.Loader = (*Store)(nil)

// loadChunk is the size of the log chunks a loaded log is cut into.
const loadChunk = 1 << 20

// timeOrNull is t, or NULL for the zero time.
func timeOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// Empty implements queue.Loader.
func (s *Store) Empty(ctx context.Context) (bool, error) {
	var n int
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		return q.QueryRow(ctx, `SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs LIMIT 1) j)
			+ (SELECT count(*) FROM (SELECT 1 FROM repositories LIMIT 1) r)
			+ (SELECT count(*) FROM (SELECT 1 FROM executors LIMIT 1) e)`).Scan(&n)
	})
	return n == 0, err
}

// LoadJob implements queue.Loader.
func (s *Store) LoadJob(ctx context.Context, j queue.JobDump) error {
	spec, err := json.Marshal(j.Spec)
	if err != nil {
		return err
	}
	return s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		if _, err := tx.Exec(ctx, `INSERT INTO jobs (id, queue, priority, spec, state, reason, message, cancel_requested,
				attempt, attempt_base, max_attempts, created_at, started_at, finished_at, lease_until)
			OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			j.ID, j.Queue, j.Priority, string(spec), string(j.State), string(j.Reason), text(j.Message), j.CancelRequested,
			j.Attempt, j.AttemptBase, j.MaxAttempts, j.CreatedAt, timeOrNull(j.StartedAt), timeOrNull(j.FinishedAt),
			timeOrNull(j.LeaseUntil)); err != nil {
			return fmt.Errorf("inserting the job: %w", err)
		}
		for _, a := range j.Attempts {
			var steps any
			if a.Steps != nil {
				b, err := json.Marshal(a.Steps)
				if err != nil {
					return err
				}
				steps = string(b)
			}
			var token any
			if a.TokenHash != nil {
				token = a.TokenHash
			}
			if _, err := tx.Exec(ctx, `INSERT INTO attempts (job_id, number, executor, token_hash, started_at, finished_at,
					lease_until, outcome, reason, message, ended_by, steps, log_size, egress_denied)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
				j.ID, a.Number, a.Executor, token, a.StartedAt, timeOrNull(a.FinishedAt), a.LeaseUntil,
				string(a.Outcome), string(a.Reason), text(a.Message), a.EndedBy, steps, int64(len(a.Log)), a.EgressDenied); err != nil {
				return fmt.Errorf("inserting attempt %d: %w", a.Number, err)
			}
			for off := 0; off < len(a.Log); off += loadChunk {
				end := min(off+loadChunk, len(a.Log))
				if _, err := tx.Exec(ctx, `INSERT INTO log_chunks (job_id, attempt, byte_offset, data) VALUES ($1, $2, $3, $4)`,
					j.ID, a.Number, int64(off), a.Log[off:end]); err != nil {
					return fmt.Errorf("inserting the log of attempt %d: %w", a.Number, err)
				}
			}
		}
		return nil
	})
}

// LoadRest implements queue.Loader.
func (s *Store) LoadRest(ctx context.Context, d queue.StoreDump) error {
	return s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		for _, r := range d.Repositories {
			remote, err := json.Marshal(r.Remote)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO repositories (name, remote, created_at, updated_at) VALUES ($1, $2, $3, $4)`,
				r.Name, string(remote), r.CreatedAt, r.UpdatedAt); err != nil {
				return fmt.Errorf("inserting repository %q: %w", r.Name, err)
			}
		}
		for _, e := range d.Executors {
			info, err := executorInfo(e, e.LastSeen)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO executors (name, info, last_seen) VALUES ($1, $2, $3)`,
				e.Name, info, e.LastSeen); err != nil {
				return fmt.Errorf("inserting executor %q: %w", e.Name, err)
			}
		}
		// New jobs continue after the largest ID loaded.
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('jobs', 'id'),
			COALESCE((SELECT max(id) FROM jobs), 1), (SELECT max(id) FROM jobs) IS NOT NULL)`); err != nil {
			return fmt.Errorf("moving the job ID sequence: %w", err)
		}
		return nil
	})
}
