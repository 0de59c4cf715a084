// Attempt logs.
//
// The bytes of an attempt's log live in a file of their own (see
// logfiles.go); attempts.log_size is the committed length. An append opens
// the file, then, in one write transaction, checks the attempt is live and the
// chunk's offset, writes only the bytes past the end into the file and moves
// log_size, so appends to one log are serialized and fenced like every other
// write. A read takes log_size (and whether the attempt is over) from one
// read snapshot and then reads the file up to it, outside any transaction.

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

var (
	qSetLogSize = prepared(`UPDATE attempts SET log_size = ? WHERE job_id = ? AND number = ?`)
	// qLogSize reads a job's state and latest attempt, and the size of the
	// attempt asked for (?2; 0 is the latest) with whether it has ended.
	// The attempt's columns are NULL when there is no such attempt.
	qLogSize = prepared(`SELECT j.state, j.attempt, a.log_size, a.finished_at
		FROM jobs j LEFT JOIN attempts a
			ON a.job_id = j.id AND a.number = CASE WHEN ?2 = 0 THEN j.attempt ELSE ?2 END
		WHERE j.id = ?1`)
)

// AppendLog implements queue.Store.
func (s *Store) AppendLog(ctx context.Context, p queue.AppendLogParams) (int64, error) {
	ref := p.Attempt
	if p.Offset < 0 {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: negative offset %d", ref.JobID, ref.Attempt, p.Offset)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	// Opening, and for the first append creating, the file happens outside
	// the write transaction, so the single writer never waits on it.
	f, err := s.logs.create(ref.JobID, ref.Attempt, 0)
	if err != nil {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: opening log file: %w", ref.JobID, ref.Attempt, err)
	}
	var end int64
	err = s.write(ctx, func(tx txn, now int64) error {
		l, err := loadLiveAttempt(ctx, tx, ref)
		if err != nil {
			return err
		}
		if !l.found {
			return queue.ErrNotFound
		}
		if !l.live(ref) {
			return queue.ErrStaleAttempt
		}
		end = l.logSize
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
		// The bytes go in first: should the update or the commit fail, they
		// lie past log_size, unread, until the next append overwrites them.
		if err := writeLog(f, end, p.Data[end-p.Offset:]); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, qSetLogSize, newEnd, ref.JobID, ref.Attempt); err != nil {
			return err
		}
		end = newEnd
		return nil
	})
	if cerr := f.Close(); cerr != nil && err == nil {
		// Committed, so not the caller's error; the bytes are in the page
		// cache all the same on a local file system.
		s.logger.Warn("closing log file", "job_id", ref.JobID, "attempt", ref.Attempt, "error", cerr)
	}
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
		state          job.State
		latest         int
		size, finished sql.NullInt64
	)
	err := s.read(ctx, func(tx txn) error {
		err := tx.QueryRowContext(ctx, qLogSize, p.JobID, p.Attempt).Scan(&state, &latest, &size, &finished)
		if errors.Is(err, sql.ErrNoRows) {
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
		return &queue.LogChunk{NextOffset: p.Offset, Final: state.Terminal()}, nil
	case !size.Valid:
		err = fmt.Errorf("attempt %d: %w", n, queue.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading log of job %d: %w", p.JobID, err)
	}

	c := &queue.LogChunk{Attempt: n, NextOffset: p.Offset, Size: size.Int64}
	if p.Offset < c.Size {
		// Bytes below a committed size never change: no snapshot needed.
		to := min(c.Size, p.Offset+limit)
		data, missing, err := s.logs.read(p.JobID, n, p.Offset, to)
		if err != nil {
			return nil, fmt.Errorf("reading log of job %d attempt %d: %w", p.JobID, n, err)
		}
		if missing > 0 {
			s.logger.Warn("log file lacks committed bytes; serving NUL bytes instead (lost in a machine crash?)",
				"job_id", p.JobID, "attempt", n, "offset", to-missing, "missing_bytes", missing)
		}
		c.Data, c.NextOffset = data, to
	}
	c.Final = finished.Int64 != 0 && c.NextOffset >= c.Size
	return c, nil
}
