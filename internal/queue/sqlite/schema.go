package sqlite

import (
	"context"
	"fmt"
)

// migrations are applied in order, each exactly once; schema_migrations
// records which. Never edit a migration that has shipped: append a new one.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE jobs (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,
	queue            TEXT    NOT NULL,
	priority         INTEGER NOT NULL,
	spec             TEXT    NOT NULL, -- job.Spec as JSON
	state            TEXT    NOT NULL,
	reason           TEXT    NOT NULL DEFAULT '',
	message          TEXT    NOT NULL DEFAULT '',
	cancel_requested INTEGER NOT NULL DEFAULT 0,
	attempt          INTEGER NOT NULL DEFAULT 0, -- number of the current or last attempt
	attempt_base     INTEGER NOT NULL DEFAULT 0, -- attempt when the budget last started afresh (user retry)
	max_attempts     INTEGER NOT NULL,
	created_at       INTEGER NOT NULL, -- Unix nanoseconds, here and below; 0 = unset
	started_at       INTEGER NOT NULL DEFAULT 0,
	finished_at      INTEGER NOT NULL DEFAULT 0,
	lease_until      INTEGER NOT NULL DEFAULT 0, -- of the current attempt while running
	executor         TEXT    NOT NULL DEFAULT ''  -- of the current or last attempt
) STRICT;

-- Claim: the best queued job of one queue is the first entry of its range.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, id) WHERE state = 'queued';
-- Reaper: running jobs by lease end.
CREATE INDEX jobs_lease ON jobs (lease_until) WHERE state = 'running';
-- Listing newest first, by state or by queue.
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE TABLE attempts (
	job_id      INTEGER NOT NULL REFERENCES jobs (id),
	number      INTEGER NOT NULL,
	executor    TEXT    NOT NULL,
	token_hash  BLOB    UNIQUE, -- SHA-256 of the job token; NULL once the attempt ended
	started_at  INTEGER NOT NULL,
	finished_at INTEGER NOT NULL DEFAULT 0,
	lease_until INTEGER NOT NULL,
	outcome     TEXT    NOT NULL DEFAULT '',
	reason      TEXT    NOT NULL DEFAULT '',
	message     TEXT    NOT NULL DEFAULT '',
	ended_by    TEXT    NOT NULL DEFAULT '', -- 'finish' (the executor) or 'reaper'
	steps       TEXT, -- []queue.StepResult as JSON
	log_size    INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (job_id, number)
) STRICT;

-- An attempt's log is the concatenation of its chunks in byte_offset order.
CREATE TABLE log_chunks (
	job_id      INTEGER NOT NULL,
	attempt     INTEGER NOT NULL,
	byte_offset INTEGER NOT NULL,
	data        BLOB    NOT NULL,
	PRIMARY KEY (job_id, attempt, byte_offset),
	FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, number)
) STRICT;

CREATE TABLE executors (
	name      TEXT    PRIMARY KEY,
	info      TEXT    NOT NULL, -- queue.ExecutorInfo as JSON
	last_seen INTEGER NOT NULL
) STRICT;

`,
}

// migrate applies the migrations the database lacks, all in one write
// transaction, so that two stores opening a new file at once cannot both
// apply them and a failure leaves the schema as it was.
func (s *Store) migrate(ctx context.Context) error {
	var applied []int
	err := s.write(ctx, func(tx txn, now int64) error {
		applied = applied[:0]
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER PRIMARY KEY,
			applied_at INTEGER NOT NULL
		) STRICT`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		var have int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("reading schema version: %w", err)
		}
		if have > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this build knows (%d)", have, len(migrations))
		}
		for v := have + 1; v <= len(migrations); v++ {
			if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("applying schema migration %d: %w", v, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, v, now); err != nil {
				return fmt.Errorf("recording schema migration %d: %w", v, err)
			}
			applied = append(applied, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, v := range applied {
		s.logger.Info("applied schema migration", "version", v)
	}
	return nil
}
