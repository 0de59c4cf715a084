package sqlite

// Group commit.
//
// SQLite has one writer, and on this kind of machine a commit's cost is
// dominated by writing its pages into the WAL (a pwrite per page) — about the
// same for one small change as for twenty. So concurrent writers are batched:
// each caller queues its transaction function; one of them (the leader) runs
// the queue's head as one SQLite transaction, each function inside its own
// SAVEPOINT, commits once, and hands every caller its own result. A function
// that fails rolls back to its savepoint and takes nothing else with it; a
// commit that fails fails every function of the batch, none of which was
// applied. Callers see exactly the semantics of one transaction each.
//
// Leadership passes on: a leader returns as soon as its own function is
// settled, waking the oldest queued caller to lead the next batch, so no
// caller works for others longer than the batch that held its own.

import (
	"context"
	"fmt"
)

// maxBatch bounds how many transaction functions share one commit.
const maxBatch = 64

type writeReq struct {
	ctx  context.Context
	fn   func(tx txn, now int64) error
	err  error
	done bool
	// wake receives false when the request is settled by another leader, and
	// true when its caller must lead the next batch.
	wake chan bool
}

// write runs fn as one write transaction — possibly sharing a SQLite
// transaction (and its commit) with concurrent callers, each behind its own
// savepoint — and returns once it is committed or rolled back.
func (s *Store) write(ctx context.Context, fn func(tx txn, now int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &writeReq{ctx: ctx, fn: fn, wake: make(chan bool, 1)}
	s.wmu.Lock()
	s.pending = append(s.pending, req)
	lead := !s.leading
	s.leading = true
	s.wmu.Unlock()
	if !lead {
		// Wait whatever ctx does: the function may be running right now.
		if !<-req.wake {
			return req.err
		}
	}
	for !req.done {
		s.wmu.Lock()
		n := min(len(s.pending), maxBatch)
		batch := append([]*writeReq(nil), s.pending[:n]...)
		s.pending = s.pending[n:]
		s.wmu.Unlock()
		s.runBatch(batch, req)
	}
	s.wmu.Lock()
	if len(s.pending) > 0 {
		s.pending[0].wake <- true
	} else {
		s.leading = false
	}
	s.wmu.Unlock()
	return req.err
}

// runBatch runs batch in one transaction and settles every request in it,
// waking each one's caller except self's.
func (s *Store) runBatch(batch []*writeReq, self *writeReq) {
	defer func() {
		for _, r := range batch {
			r.done = true
			if r != self {
				r.wake <- false
			}
		}
	}()
	fail := func(err error) {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
		}
	}
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		fail(err)
		return
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	t := txn{tx, s.wstmts}
	single := len(batch) == 1
	applied := 0
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		if !single {
			if _, err := tx.Exec("SAVEPOINT w"); err != nil {
				fail(err)
				return
			}
		}
		r.err = call(r, t, s.now().UnixNano())
		switch {
		case single && r.err != nil:
			return // rolled back by the deferred Rollback
		case single:
		case r.err != nil:
			if _, err := tx.Exec("ROLLBACK TO w; RELEASE w"); err != nil {
				// SQLite rolled the whole transaction back (an I/O error, say):
				// nothing of the batch is applied.
				fail(fmt.Errorf("transaction aborted: %w", err))
				return
			}
		default:
			if _, err := tx.Exec("RELEASE w"); err != nil {
				fail(err)
				return
			}
			applied++
		}
	}
	if single && batch[0].err == nil {
		applied = 1
	}
	if applied == 0 {
		return
	}
	if err := tx.Commit(); err != nil {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
		}
		return
	}
	s.ckpt.wrote(txOverhead)
}

// call runs one request's function, turning a panic into its error so that a
// bug in one caller's transaction cannot wedge the write path for all.
func call(r *writeReq, t txn, now int64) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in write transaction: %v", p)
		}
	}()
	err = r.fn(t, now)
	if err == nil {
		// A function that saw its context end may have stopped half-way
		// without saying so; never commit that.
		err = r.ctx.Err()
	}
	return err
}
