package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
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

	// 2: log bytes move out of the database into one file per attempt (see
	// logfiles.go); moveLogsToFiles copies them first, in this transaction.
	`
DROP TABLE log_chunks;
`,

	// 3: what an attempt's egress policy denied.
	`
ALTER TABLE attempts ADD COLUMN egress_denied INTEGER NOT NULL DEFAULT 0;
`,

	// 4: repositories registered on the coordinator (no credential values:
	// those are coordinator secrets, named in remote).
	`
CREATE TABLE repositories (
	name       TEXT    PRIMARY KEY,
	remote     TEXT    NOT NULL, -- job.Remote as JSON
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
`,
}

// migrationCode holds Go code that runs in a migration's transaction before
// its SQL, by migration number.
var migrationCode = map[int]func(s *Store, ctx context.Context, tx txn) error{
	2: (*Store).moveLogsToFiles,
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
			if code := migrationCode[v]; code != nil {
				if err := code(s, ctx, tx); err != nil {
					return fmt.Errorf("applying schema migration %d: %w", v, err)
				}
			}
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

// moveLogsToFiles is migration 2's code. It writes the log_chunks rows of
// every attempt into the attempt's log file, which it creates afresh, and
// syncs the files and their directories, so that by the time the migration's
// SQL drops the table, in the same transaction, the bytes are on disk. A
// migration cut short never commits and leaves the rows in place, so it runs
// again on the next Open and rewrites the same files.
func (s *Store) moveLogsToFiles(ctx context.Context, tx txn) (err error) {
	rows, err := tx.QueryContext(ctx, `SELECT job_id, attempt, byte_offset, data FROM log_chunks
		ORDER BY job_id, attempt, byte_offset`)
	if err != nil {
		return fmt.Errorf("reading log chunks: %w", err)
	}
	defer rows.Close()
	var (
		f            *os.File
		curJob       int64
		curAttempt   int
		files, bytes int64
		shards       []string
	)
	closeFile := func() error {
		if f == nil {
			return nil
		}
		err := errors.Join(f.Sync(), f.Close())
		f = nil
		return err
	}
	defer func() { err = errors.Join(err, closeFile()) }()
	for rows.Next() {
		var (
			jobID   int64
			attempt int
			off     int64
			data    sql.RawBytes // valid until Next; WriteAt copies it
		)
		if err := rows.Scan(&jobID, &attempt, &off, &data); err != nil {
			return fmt.Errorf("reading log chunks: %w", err)
		}
		if f == nil || jobID != curJob || attempt != curAttempt {
			if err := closeFile(); err != nil {
				return fmt.Errorf("writing log of job %d attempt %d: %w", curJob, curAttempt, err)
			}
			if d := s.logs.shard(jobID); len(shards) == 0 || shards[len(shards)-1] != d {
				shards = append(shards, d) // rows come in job order, so shards too
			}
			curJob, curAttempt = jobID, attempt
			if f, err = s.logs.create(jobID, attempt, os.O_TRUNC); err != nil {
				return fmt.Errorf("writing log of job %d attempt %d: %w", jobID, attempt, err)
			}
			files++
		}
		if _, err := f.WriteAt(data, off); err != nil {
			return fmt.Errorf("writing log of job %d attempt %d: %w", jobID, attempt, err)
		}
		bytes += int64(len(data))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading log chunks: %w", err)
	}
	if err := closeFile(); err != nil {
		return fmt.Errorf("writing log of job %d attempt %d: %w", curJob, curAttempt, err)
	}
	for _, d := range append(shards, s.logs.dir) {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("syncing %s: %w", d, err)
		}
	}
	if files > 0 {
		s.logger.Info("moved logs out of the queue database into files; the database file keeps its size until VACUUM",
			"files", files, "bytes", bytes, "dir", s.logs.dir)
	}
	return nil
}
