// Attempt logs.
//
// An attempt's log is stored as rows of log_chunks, each holding the bytes
// from byte_offset to byte_offset+length(data), with no gaps or overlaps;
// attempts.log_size is the end of the last row. An append writes only bytes
// past the end, as new rows of at most maxRowBytes each (rows are never
// rewritten, so an append costs what it adds, not what the log holds), in the
// same write transaction that moves log_size. A read finds the row that
// contains its offset through the primary key and concatenates from there.
//
// Appends are the one kind of write that can outrun the disk, so an append
// may wait, after its commit, for the background checkpointer to catch up
// (see checkpoint.go).

package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/airlock-run/airlock/internal/queue"
)

const (
	// maxRowBytes bounds one log_chunks row.
	maxRowBytes = 1 << 20
	// maxReadBytes is the default and the most one ReadLog returns.
	maxReadBytes = 1 << 20
)

var (
	qInsertChunk = prepared(`INSERT INTO log_chunks (job_id, attempt, byte_offset, data) VALUES (?, ?, ?, ?)`)
	qSetLogSize  = prepared(`UPDATE attempts SET log_size = ? WHERE job_id = ? AND number = ?`)
	qLogSize     = prepared(`SELECT log_size, finished_at FROM attempts WHERE job_id = ? AND number = ?`)
	// qReadRange returns the rows holding bytes [?3, ?4): from the last row
	// that starts at or before ?3 up to the last that starts before ?4.
	qReadRange = prepared(`SELECT byte_offset, data FROM log_chunks
		WHERE job_id = ?1 AND attempt = ?2 AND byte_offset < ?4 AND byte_offset >= (
			SELECT MAX(byte_offset) FROM log_chunks WHERE job_id = ?1 AND attempt = ?2 AND byte_offset <= ?3)
		ORDER BY byte_offset`)
)

// AppendLog implements queue.Store.
func (s *Store) AppendLog(ctx context.Context, p queue.AppendLogParams) (int64, error) {
	ref := p.Attempt
	if p.Offset < 0 {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: negative offset %d", ref.JobID, ref.Attempt, p.Offset)
	}
	var end, added int64
	err := s.write(ctx, func(tx txn, now int64) error {
		added = 0
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
		data := p.Data[end-p.Offset:]
		for off := end; len(data) > 0; {
			n := min(len(data), maxRowBytes)
			if _, err := tx.ExecContext(ctx, qInsertChunk, ref.JobID, ref.Attempt, off, data[:n]); err != nil {
				return err
			}
			off += int64(n)
			data = data[n:]
		}
		if _, err := tx.ExecContext(ctx, qSetLogSize, newEnd, ref.JobID, ref.Attempt); err != nil {
			return err
		}
		added, end = newEnd-end, newEnd
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("appending to log of job %d attempt %d: %w", ref.JobID, ref.Attempt, err)
	}
	if added > 0 {
		s.ckpt.throttle(ctx, int(added))
	}
	return end, nil
}

// ReadLog implements queue.Store.
func (s *Store) ReadLog(ctx context.Context, p queue.ReadLogParams) (*queue.LogChunk, error) {
	if p.Offset < 0 {
		return nil, fmt.Errorf("reading log of job %d: negative offset %d", p.JobID, p.Offset)
	}
	limit := int64(p.Limit)
	if limit <= 0 || limit > maxReadBytes {
		limit = maxReadBytes
	}
	var c *queue.LogChunk
	err := s.read(ctx, func(tx txn) error {
		j, err := loadJob(ctx, tx, p.JobID)
		if err != nil {
			return err
		}
		n := p.Attempt
		if n == 0 {
			n = j.Attempt
		}
		if n == 0 {
			// Never claimed: no log yet, and none ever if the job is over.
			c = &queue.LogChunk{NextOffset: p.Offset, Final: j.State.Terminal()}
			return nil
		}
		var size, finished int64
		err = tx.QueryRowContext(ctx, qLogSize, p.JobID, n).Scan(&size, &finished)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("attempt %d: %w", n, queue.ErrNotFound)
		}
		if err != nil {
			return err
		}
		c = &queue.LogChunk{Attempt: n, NextOffset: p.Offset, Size: size}
		if p.Offset < size {
			to := min(size, p.Offset+limit)
			if c.Data, err = readRange(ctx, tx, p.JobID, n, p.Offset, to); err != nil {
				return err
			}
			c.NextOffset = to
		}
		c.Final = finished != 0 && c.NextOffset >= size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading log of job %d: %w", p.JobID, err)
	}
	return c, nil
}

// readRange returns the log bytes [from, to) of one attempt.
func readRange(ctx context.Context, tx querier, jobID int64, attempt int, from, to int64) ([]byte, error) {
	rows, err := tx.QueryContext(ctx, qReadRange, jobID, attempt, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]byte, 0, to-from)
	for rows.Next() {
		var (
			off  int64
			data sql.RawBytes // valid until Next; copied into out below
		)
		if err := rows.Scan(&off, &data); err != nil {
			return nil, err
		}
		lo := max(from-off, 0)
		hi := min(int64(len(data)), to-off)
		if lo < hi {
			out = append(out, data[lo:hi]...)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if int64(len(out)) != to-from {
		return nil, fmt.Errorf("log of attempt %d is missing bytes in [%d, %d)", attempt, from, to)
	}
	return out, nil
}
