package postgres

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
)

// migrations are applied in order, each exactly once; schema_migrations
// records which. Never edit a migration that has shipped: append a new one.
var migrations = []string{
	// 1: the initial schema.
	`
CREATE TABLE jobs (
	id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	queue            text        NOT NULL,
	priority         integer     NOT NULL,
	spec             json        NOT NULL, -- job.Spec; json, not jsonb, keeps it as written (and "\u0000")
	state            text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled', 'errored')),
	reason           text        NOT NULL DEFAULT '',
	message          text        NOT NULL DEFAULT '',
	cancel_requested boolean     NOT NULL DEFAULT false,
	attempt          integer     NOT NULL DEFAULT 0, -- number of the current or last attempt
	attempt_base     integer     NOT NULL DEFAULT 0, -- attempt when the budget last started afresh (user retry)
	max_attempts     integer     NOT NULL,
	created_at       timestamptz NOT NULL,
	started_at       timestamptz,
	finished_at      timestamptz,
	-- Of the current attempt while running. Not indexed, so that a heartbeat,
	-- which changes nothing else, is a HOT update; the reaper finds running
	-- jobs through jobs_state instead (there are only as many as executors run).
	lease_until      timestamptz
) WITH (fillfactor = 80);

-- Claim: the best queued job of one queue is the first entry of its range.
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, id) WHERE state = 'queued';
-- Listing newest first, by state or by queue; the reaper's running jobs.
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE TABLE attempts (
	job_id        bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	number        integer     NOT NULL,
	executor      text        NOT NULL,
	token_hash    bytea       CONSTRAINT attempts_token_hash_key UNIQUE, -- SHA-256 of the job token; NULL once the attempt ended
	started_at    timestamptz NOT NULL,
	finished_at   timestamptz,
	lease_until   timestamptz NOT NULL,
	outcome       text        NOT NULL DEFAULT '',
	reason        text        NOT NULL DEFAULT '',
	message       text        NOT NULL DEFAULT '',
	ended_by      text        NOT NULL DEFAULT '', -- 'finish' (the executor) or 'reaper'
	steps         json,                            -- []queue.StepResult
	log_size      bigint      NOT NULL DEFAULT 0,  -- committed length of the log
	egress_denied bigint      NOT NULL DEFAULT 0,
	PRIMARY KEY (job_id, number)
) WITH (fillfactor = 80);

-- An attempt's log is the concatenation of its chunks in byte_offset order;
-- they cover [0, attempts.log_size) exactly and never change once committed.
CREATE TABLE log_chunks (
	job_id      bigint  NOT NULL,
	attempt     integer NOT NULL,
	byte_offset bigint  NOT NULL,
	data        bytea   NOT NULL,
	PRIMARY KEY (job_id, attempt, byte_offset),
	FOREIGN KEY (job_id, attempt) REFERENCES attempts (job_id, number) ON DELETE CASCADE
);

CREATE TABLE executors (
	name      text        PRIMARY KEY,
	info      json        NOT NULL, -- queue.ExecutorInfo
	last_seen timestamptz NOT NULL
);

-- Repositories registered on the coordinator (no credential values: those
-- are coordinator secrets, named in remote).
CREATE TABLE repositories (
	name       text        PRIMARY KEY,
	remote     json        NOT NULL, -- job.Remote
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL
);
`,
}

// migrate creates the schema if asked to and applies the migrations the
// database lacks, all in one transaction under a transaction-scoped advisory
// lock, so that replicas starting together apply each migration once (the
// others wait for the lock, then find nothing to do) and a failure leaves
// the schema as it was.
func (s *Store) migrate(ctx context.Context, schema string) error {
	var applied []int
	err := s.tx(ctx, once, func(ctx context.Context, tx *txn) error {
		applied = applied[:0]
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey(schema)); err != nil {
			return fmt.Errorf("locking for schema migrations: %w", err)
		}
		if schema != "" {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
				return fmt.Errorf("creating schema %q: %w", schema, err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			applied_at timestamptz NOT NULL
		)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
			return fmt.Errorf("reading schema version: %w", err)
		}
		if have > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this build knows (%d)", have, len(migrations))
		}
		for v := have + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("applying schema migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, v, tx.now); err != nil {
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
		s.logger.Info("applied schema migration", "version", v, "schema", schema)
	}
	return nil
}

// migrationLockKey is the advisory lock that serializes the migrations of
// one schema (advisory locks are per database).
func migrationLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("airlock queue schema migrations\x00" + schema))
	return int64(h.Sum64())
}
