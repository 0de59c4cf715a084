// Package postgres is the networked implementation of queue.Store: the job
// queue in a PostgreSQL database (15 or later) that several coordinator
// replicas share. It speaks to the server through pgx and a pgxpool of
// connections per Store.
//
// # What replicas share
//
// Everything: jobs, attempts, executors, repositories and the bytes of every
// attempt's log live in the database (see schema.go), so a replica holds no
// state of its own and any replica can serve any request, a log follower
// included. Two Stores opened on the same database and schema behave like two
// replicas and never hand out a job twice.
//
// # Transactions and locks
//
// Every method is one transaction at READ COMMITTED. Whatever changes a job
// or its attempts first takes the job's row lock (SELECT … FOR NO KEY
// UPDATE) and only then, in later statements, reads the attempt rows it
// decides on, so it sees everything committed before the lock was granted;
// methods that lock several jobs (Heartbeat, ReapExpired) lock them in ID
// order, so they do not deadlock each other. Reads that take more than one
// statement (Get) run in a REPEATABLE READ, READ ONLY transaction: one
// snapshot.
//
// Claim is a single statement: it locks the head of each asked-for queue with
// FOR NO KEY UPDATE SKIP LOCKED (a lateral index seek per queue on jobs_claim,
// (queue, priority DESC, id) WHERE state = 'queued'), takes the best of those
// heads by (priority DESC, id), and in the same statement starts the job,
// inserts the attempt and records the executor. Concurrent claims skip each
// other's locked rows instead of waiting, so they never get the same job; the
// heads of the other queues of a multi-queue claim stay locked until that
// statement commits (well under a millisecond), during which a concurrent
// claim skips them. SKIP LOCKED means a claim may come back empty while the
// only queued job is locked by another transaction (being claimed,
// cancelled…): a long poll should re-check now and then, not only on
// notifications.
//
// # Retries
//
// Serialization failures and deadlocks (SQLSTATE 40001, 40P01) were rolled
// back by the server, so the transaction simply runs again, a few times, with
// a short jittered backoff. So does one whose connection broke before it sent
// COMMIT: the server rolls such a transaction back. A connection that breaks
// during the COMMIT leaves its outcome unknown; then
//
//   - reads, and mutations whose replay is harmless (Heartbeat, AppendLog,
//     Finish, PutRepository, Notify), run again;
//   - Submit, Cancel, Retry, ReapExpired, DeleteJob and DeleteRepository
//     return the error (replaying them could duplicate a job or report a
//     spurious ErrInvalidState);
//   - Claim, a single statement, resolves the doubt. The server does not
//     notice a client that has gone while it runs a statement (one waiting
//     for a lock, say), and may commit it later, so the next try first ends
//     that session: it terminates it, if it is still there, and waits for it
//     to exit (pg_terminate_backend with a timeout, naming the session by
//     process ID and start time, recorded when the connection was made).
//     After that the try has committed or never will, and the attempt it
//     would have inserted is looked up by its token hash, which is UNIQUE:
//     found, it is the claim returned; not found, the claim starts afresh.
//     A job is therefore never handed out twice, nor claimed for nobody,
//     because a connection broke. (pgx also sends a cancel request for the
//     statement of a broken connection, but that may not get through.) A
//     claim without a token hash cannot be looked up: its unknown outcome is
//     an error.
//
// COMMIT runs on a context detached from the caller's (bounded by
// commitTimeout), so cancelling ctx abandons a call before it commits, never
// in the middle of its commit.
//
// # Notifications
//
// Mutations announce, with pg_notify right after their transaction commits
// (never if it does not), what other replicas may be waiting for:
//
//   - ChannelClaimable ("airlock_claimable"), payload the queue name: a job of
//     that queue became claimable (Submit, Retry, a Finish or ReapExpired that
//     re-queues it). A coordinator wakes its long-polling claims on it.
//   - ChannelJob ("airlock_job"), payload the job ID in decimal: something a
//     watcher of that job follows changed: its log grew (AppendLog), an
//     attempt ended (Finish, ReapExpired), or cancellation was requested or
//     done (Cancel).
//
// Listen delivers them on a dedicated connection (see notify.go). Channels
// are per database, not per schema. Claim and Heartbeat notify nothing.
// They are not sent inside the transaction: PostgreSQL serializes the commits
// of notifying transactions on one database-wide lock, held across the disk
// flush, which halved commit throughput. The price is that a crash between
// the commit and the notification loses it, which costs a waiter latency
// (claimers and followers re-check on their own), never a job.
//
// # Time
//
// Times are timestamptz (microseconds; NULL when unset), always from
// Options.Now, read once per transaction try, never from the server's clock.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/airlock-run/airlock/internal/queue"
)

var _ queue.Store = (*Store)(nil)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives the store's own events (migrations, reaped attempts,
	// retries, listener reconnects); discarded when nil.
	Logger *slog.Logger
	// MaxConns bounds the connection pool; pgxpool's default (the greater of
	// 4 and the number of CPUs) when 0. Listen connections come on top.
	MaxConns int32
	// Schema, when set, is created if missing and made the connections'
	// search_path, so that the store's tables live there; otherwise they go
	// where the connection string's search_path puts them (normally public).
	Schema string
}

// Store is a queue.Store backed by PostgreSQL.
type Store struct {
	pool   *pgxpool.Pool
	now    func() time.Time
	logger *slog.Logger

	// closing is cancelled by Close, which then waits for the listeners.
	closing   context.Context
	stop      context.CancelFunc
	listeners sync.WaitGroup
	mu        sync.Mutex // guards closed and listeners.Add
	closed    bool
}

const (
	// maxTries bounds how often a transaction runs when it keeps failing
	// with a retryable error.
	maxTries = 8
	// maxResolveTries bounds the tries of a Claim whose earlier try's
	// outcome is unknown: more patient, since giving up then is an error
	// the caller cannot act on.
	maxResolveTries = 14
	// commitTimeout bounds a COMMIT, which runs detached from the caller's
	// context.
	commitTimeout = 15 * time.Second
	// applicationName is reported to the server unless the connection
	// string names one.
	applicationName = "airlock"
)

// Open connects to the database that url names (a postgres:// URL or a
// key=value connection string) and applies any schema migrations it lacks.
// ctx bounds the opening and the migrations only.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("opening queue database: %w", err)
	}
	switch {
	case opts.MaxConns > 0:
		cfg.MaxConns = opts.MaxConns
	case !strings.Contains(url, "pool_max_conns"):
		// A coordinator has many requests in flight (long-poll claims,
		// appends, heartbeats); pgxpool's default (4 on 2 CPUs) queues them.
		cfg.MaxConns = int32(max(16, 4*runtime.NumCPU()))
	}
	params := cfg.ConnConfig.RuntimeParams
	if _, ok := params["plan_cache_mode"]; !ok {
		// Every statement is prepared and index-driven; left to choose, the
		// server re-plans the claim on every execution (its estimate for the
		// queue list keeps the custom plan), which was a quarter of its CPU.
		params["plan_cache_mode"] = "force_generic_plan"
	}
	if opts.Schema != "" {
		params["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	}
	if _, ok := params["application_name"]; !ok {
		params["application_name"] = applicationName
	}
	cfg.AfterConnect = rememberSession
	s := &Store{now: opts.Now, logger: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.closing, s.stop = context.WithCancel(context.Background())
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		s.stop()
		return nil, fmt.Errorf("opening queue database: %w", err)
	}
	if err := s.migrate(ctx, opts.Schema); err != nil {
		s.Close()
		return nil, fmt.Errorf("opening queue database: %w", err)
	}
	return s, nil
}

// Close stops the listeners and closes the connections. Calling it again
// does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	closed := s.closed
	s.closed = true
	s.mu.Unlock()
	if closed {
		return nil
	}
	s.stop()
	s.listeners.Wait()
	s.pool.Close()
	return nil
}

// querier is what a pool and a transaction both offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// txMode says how a transaction runs and whether it may run again after a
// commit whose outcome is unknown.
type txMode int

const (
	// readOnly: REPEATABLE READ, READ ONLY; always safe to run again.
	readOnly txMode = iota
	// replayable: a mutation that, applied twice, leaves the same result as
	// once (heartbeats, log appends, finishes).
	replayable
	// once: a mutation that must not be replayed after an unknown commit.
	once
)

// txn is one try of a transaction: the pgx transaction, the time it runs
// at, and the notifications it sends when it commits.
type txn struct {
	pgx.Tx
	now   time.Time
	notes []note
}

type note struct{ channel, payload string }

// notify queues a notification, sent once the transaction has committed
// (never if it does not).
func (t *txn) notify(channel, payload string) {
	t.notes = append(t.notes, note{channel, payload})
}

const qNotify = `SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n (c, p)`

func (s *Store) sendNotes(ctx context.Context, notes []note) error {
	if len(notes) == 0 {
		return nil
	}
	channels := make([]string, len(notes))
	payloads := make([]string, len(notes))
	for i, n := range notes {
		channels[i], payloads[i] = n.channel, n.payload
	}
	if _, err := s.pool.Exec(ctx, qNotify, channels, payloads); err != nil {
		return fmt.Errorf("notifying: %w", err)
	}
	return nil
}

// tx runs fn in one transaction, retrying it as the package comment says.
// fn may run several times; it must not keep state across tries except
// through what it returns last.
func (s *Store) tx(ctx context.Context, mode txMode, fn func(ctx context.Context, tx *txn) error) error {
	opts := pgx.TxOptions{IsoLevel: pgx.ReadCommitted}
	if mode == readOnly {
		opts = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	}
	return s.retry(ctx, mode != once, maxTries, func() (bool, error) {
		return s.tryTx(ctx, opts, fn)
	})
}

// tryTx runs one try of a transaction. committing reports that the failure
// came from COMMIT, so that the transaction's outcome is unknown if the
// connection broke.
func (s *Store) tryTx(ctx context.Context, opts pgx.TxOptions, fn func(ctx context.Context, tx *txn) error) (committing bool, err error) {
	ptx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return false, err
	}
	t := &txn{Tx: ptx, now: s.now()}
	if err := fn(ctx, t); err != nil {
		rollback(ptx)
		return false, err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if err := ptx.Commit(cctx); err != nil {
		return true, err
	}
	// Notifications go out after the commit, in a statement of their own:
	// sent inside the transaction, they would serialize every notifying
	// commit on PostgreSQL's one notification lock across its disk flush
	// (pgbench on this kind of machine: update throughput halved). One lost
	// here, by a crash or a broken connection, costs a waiter latency, never
	// a job: claimers and followers re-check on their own.
	if err := s.sendNotes(cctx, t.notes); err != nil {
		s.logger.Warn("notifying after a commit", "err", err)
	}
	return true, nil
}

// rollback ends a failed transaction. Its error does not matter: a
// transaction that cannot be rolled back is on a broken connection, which the
// server rolls back and the pool discards.
func rollback(tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// read runs fn, one read statement on the pool (its own snapshot), retrying
// it when the connection breaks.
func (s *Store) read(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	return s.retry(ctx, true, maxTries, func() (bool, error) {
		return false, fn(ctx, s.pool)
	})
}

// retry calls try until it succeeds, fails for good, or has failed tries
// times. try reports whether its failure came at a commit; replay says
// whether a try whose commit outcome is unknown may run again.
func (s *Store) retry(ctx context.Context, replay bool, tries int, try func() (committing bool, err error)) error {
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		committing, err := try()
		if err == nil {
			return nil
		}
		again := false
		switch {
		case ctx.Err() != nil:
		case isTransient(err):
			again = true
		case isConnLost(err):
			again = replay || !committing || pgconn.SafeToRetry(err)
			if !again {
				return fmt.Errorf("connection lost during commit, outcome unknown: %w", err)
			}
		}
		if !again || n >= tries {
			return err
		}
		s.logger.Debug("retrying transaction", "try", n, "error", err)
		if err := sleep(ctx, backoff(n)); err != nil {
			return err
		}
	}
}

// isTransient reports a failure the server rolled back and that may well not
// recur: a serialization failure or a deadlock.
func isTransient(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// isConnLost reports a failure of the connection rather than of the
// statement: the server went away, terminated the session, or could not be
// reached.
func isConnLost(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08": // connection exception
			return true
		case "57": // operator intervention: admin_shutdown, crash_shutdown, cannot_connect_now
			return pgErr.Code != "57014" // query_canceled is a statement's failure
		}
		return false
	}
	var (
		netErr     net.Error
		connectErr *pgconn.ConnectError
	)
	return pgconn.SafeToRetry(err) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &netErr) || errors.As(err, &connectErr)
}

// backoff is the jittered pause before try n+1: about 2^n ms, at most 500 ms.
func backoff(n int) time.Duration {
	d := min(time.Duration(1<<min(n, 10))*time.Millisecond, 500*time.Millisecond)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// session names one server session (backend): process IDs are reused, but
// not with the same start time.
type session struct {
	pid     uint32
	started time.Time
}

// sessionStartKey is where a connection's CustomData keeps its session's
// start time.
const sessionStartKey = "airlock.session_start"

// rememberSession, run on every new pool connection, records when the
// server started the connection's session, so that sessionOf can name it.
func rememberSession(ctx context.Context, c *pgx.Conn) error {
	var started time.Time
	if err := c.QueryRow(ctx, `SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()`).Scan(&started); err != nil {
		return fmt.Errorf("reading the session's start time: %w", err)
	}
	c.PgConn().CustomData()[sessionStartKey] = started
	return nil
}

func sessionOf(c *pgx.Conn) (session, error) {
	started, ok := c.PgConn().CustomData()[sessionStartKey].(time.Time)
	if !ok {
		return session{}, errors.New("connection without a recorded session start")
	}
	return session{pid: c.PgConn().PID(), started: started}, nil
}

// errSessionLingers says that a terminated session has not exited yet.
var errSessionLingers = errors.New("terminated session has not exited yet")

// sessionExitWait is how long endSession waits for a terminated session to
// exit.
const sessionExitWait = 5 * time.Second

// endSession makes sure that a session of ours whose connection broke is
// gone, terminating it if need be and waiting until it has exited, so that
// whatever transaction it ran has committed or rolled back for good. (The
// server does not notice a vanished client while it runs a statement, one
// waiting for a lock say, and may commit it long after the client gave up.)
func (s *Store) endSession(ctx context.Context, sess session) error {
	var exited bool
	err := s.pool.QueryRow(ctx, `SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity
		WHERE pid = $1 AND backend_start = $2`,
		int32(sess.pid), sess.started, sessionExitWait.Milliseconds()).Scan(&exited)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil // gone already
	case err != nil:
		return fmt.Errorf("ending session %d: %w", sess.pid, err)
	case !exited:
		return fmt.Errorf("session %d: %w", sess.pid, errSessionLingers)
	}
	s.logger.Info("terminated the server session of an interrupted transaction", "pid", sess.pid)
	return nil
}

// ts turns a stored time back into a time.Time in UTC; NULL is the zero
// time.
func ts(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}
