// Attempt logs.
//
// The bytes of an attempt's log are rows of log_chunks, keyed by (job_id,
// attempt, byte_offset), each at most maxChunkRow bytes; attempts.log_size is
// the committed length, and the rows cover [0, log_size) exactly. An append
// locks the job's row, checks that the attempt is live and where the chunk
// starts, inserts only the bytes past the end (cut into rows) and moves
// log_size, all in one transaction, so appends to one log are serialized and
// fenced like every other write, and a rolled-back append leaves no row.
//
// Committed rows never change, so a read needs no lock and no snapshot
// spanning its statements: it reads log_size (and whether the attempt is
// over), then the rows from the one holding the offset up to the window's
// end, two index range scans. A follower that has caught up (offset at the
// end) costs the first statement only.

package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

const (
	// maxChunkRow bounds a log_chunks row, so that a read from the middle of
	// a large append fetches little more than it returns.
	maxChunkRow = 64 << 10
)

// AppendLog implements queue.Store.
func (s *Store) AppendLog(ctx context.Context, p queue.AppendLogParams) (int64, error) {
	ref := p.Attempt
	if p.Offset < 0 {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: negative offset %d", ref.JobID, ref.Attempt, p.Offset)
	}
	var end int64
	err := s.tx(ctx, replayable, func(ctx context.Context, tx *txn) error {
		// Only the state and the attempt are needed: an append, the hottest
		// write, does not read (and decode) the whole job.
		var (
			state   job.State
			current int
		)
		err := tx.QueryRow(ctx, `SELECT state, attempt FROM jobs WHERE id = $1 FOR NO KEY UPDATE`, ref.JobID).Scan(&state, &current)
		if errors.Is(err, pgx.ErrNoRows) {
			return queue.ErrNotFound
		} else if err != nil {
			return err
		}
		var finished bool
		err = tx.QueryRow(ctx, `SELECT log_size, finished_at IS NOT NULL FROM attempts WHERE job_id = $1 AND number = $2`,
			ref.JobID, ref.Attempt).Scan(&end, &finished)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return queue.ErrStaleAttempt // an attempt that never was
		case err != nil:
			return err
		case finished || state != job.StateRunning || current != ref.Attempt:
			return queue.ErrStaleAttempt
		}
		if p.Offset > end {
			return fmt.Errorf("chunk at %d, log ends at %d: %w", p.Offset, end, queue.ErrLogGap)
		}
		newEnd := p.Offset + int64(len(p.Data))
		if newEnd <= end {
			return nil // a resend of bytes we have
		}
		if p.Limit > 0 && newEnd > p.Limit {
			return fmt.Errorf("log would reach %d bytes, limit %d: %w", newEnd, p.Limit, queue.ErrLogLimit)
		}
		var (
			offsets []int64
			pieces  [][]byte
		)
		for off, rest := end, p.Data[end-p.Offset:]; len(rest) > 0; {
			n := min(len(rest), maxChunkRow)
			offsets = append(offsets, off)
			pieces = append(pieces, rest[:n])
			off, rest = off+int64(n), rest[n:]
		}
		if _, err := tx.Exec(ctx, `WITH chunks AS (
				INSERT INTO log_chunks (job_id, attempt, byte_offset, data)
				SELECT $1, $2, o, d FROM unnest($3::bigint[], $4::bytea[]) AS c (o, d)
			)
			UPDATE attempts SET log_size = $5 WHERE job_id = $1 AND number = $2`,
			ref.JobID, ref.Attempt, offsets, pieces, newEnd); err != nil {
			return err
		}
		tx.notify(ChannelJob, strconv.FormatInt(ref.JobID, 10))
		end = newEnd
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	return end, nil
}

// ReadLog implements queue.Store.
func (s *Store) ReadLog(ctx context.Context, p queue.ReadLogParams) (*queue.LogChunk, error) {
	if p.Offset < 0 {
		return nil, fmt.Errorf("reading log of job %d: negative offset %d", p.JobID, p.Offset)
	}
	limit := p.ByteLimit()
	var (
		state    string
		latest   int
		number   *int32
		size     *int64
		finished *bool
	)
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		err := q.QueryRow(ctx, `SELECT j.state, j.attempt, a.number, a.log_size, a.finished_at IS NOT NULL
			FROM jobs j LEFT JOIN attempts a
				ON a.job_id = j.id AND a.number = CASE WHEN $2 = 0 THEN j.attempt ELSE $2 END
			WHERE j.id = $1`, p.JobID, p.Attempt).Scan(&state, &latest, &number, &size, &finished)
		if errors.Is(err, pgx.ErrNoRows) {
			return queue.ErrNotFound
		}
		return err
	})
	n := p.Attempt
	if n == 0 {
		n = latest
	}
	switch {
	case err != nil:
	case n == 0:
		// Never claimed: no log yet, and none ever if the job is over.
		return &queue.LogChunk{NextOffset: p.Offset, Final: job.State(state).Terminal()}, nil
	case number == nil:
		err = fmt.Errorf("attempt %d: %w", n, queue.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading log of job %d: %w", p.JobID, err)
	}

	c := &queue.LogChunk{Attempt: n, NextOffset: p.Offset, Size: *size}
	if p.Offset < c.Size {
		to := min(c.Size, p.Offset+limit)
		data, err := s.readChunks(ctx, p.JobID, n, p.Offset, to)
		if err != nil {
			return nil, fmt.Errorf("reading log of job %d attempt %d: %w", p.JobID, n, err)
		}
		c.Data, c.NextOffset = data, to
	}
	c.Final = *finished && c.NextOffset >= c.Size
	return c, nil
}

// readChunks returns bytes [from, to) of a log, all below its committed
// size: the row that holds from and the rows after it that start before to.
func (s *Store) readChunks(ctx context.Context, jobID int64, attempt int, from, to int64) ([]byte, error) {
	var data []byte
	err := s.read(ctx, func(ctx context.Context, q querier) error {
		data = make([]byte, 0, to-from)
		rows, err := q.Query(ctx, `SELECT byte_offset, data FROM log_chunks
			WHERE job_id = $1 AND attempt = $2 AND byte_offset < $4
				AND byte_offset >= (SELECT max(byte_offset) FROM log_chunks
					WHERE job_id = $1 AND attempt = $2 AND byte_offset <= $3)
			ORDER BY byte_offset`, jobID, attempt, from, to)
		if err != nil {
			return err
		}
		defer rows.Close()
		pos := from
		for rows.Next() {
			var (
				off   int64
				chunk []byte
			)
			if err := rows.Scan(&off, &chunk); err != nil {
				return err
			}
			if off > pos || off+int64(len(chunk)) <= pos {
				return fmt.Errorf("log bytes from %d are missing (chunk at %d, %d bytes)", pos, off, len(chunk))
			}
			chunk = chunk[pos-off : min(int64(len(chunk)), to-off)]
			data = append(data, chunk...)
			pos += int64(len(chunk))
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if pos != to {
			// Only a job deleted between the two reads gets here.
			return fmt.Errorf("log bytes %d to %d are missing: %w", pos, to, queue.ErrNotFound)
		}
		return nil
	})
	return data, err
}
