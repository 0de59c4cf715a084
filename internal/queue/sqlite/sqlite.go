// Package sqlite is the embedded implementation of queue.Store: one SQLite
// file in WAL mode, opened through the pure-Go driver modernc.org/sqlite (no
// cgo). It is what `airlock up` uses when no PostgreSQL is configured.
//
// # Concurrency
//
// SQLite admits one writer at a time. The store therefore keeps two pools on
// the same file: a write pool of exactly one connection, on which every
// transaction begins with BEGIN IMMEDIATE, and a pool of query-only
// connections for reads. Every mutation — Claim above all — runs as one
// transaction on the single write connection, so claims are serialized inside
// the process and a job can never be handed out twice; the write lock is taken
// at BEGIN, so a transaction never has to upgrade a read lock and never fails
// with SQLITE_BUSY half-way. WAL lets the readers run while a write is in
// progress and see only committed data.
//
// Several Store values (or processes) may open the same file: BEGIN IMMEDIATE
// and the busy timeout serialize their writers through SQLite's file lock, so
// they do not double-claim either; they merely wait for each other.
//
// Hot statements are prepared once per connection (compiling SQL costs more
// than running most of them), and WAL checkpoints run on a connection of
// their own, off the write path (see checkpoint.go).
//
// # Durability
//
// synchronous=NORMAL in WAL mode: a committed transaction survives a crash of
// the process; the last transactions before a power loss may be lost, never
// half-applied. Everything lives in the one file (plus its -wal and -shm
// while open) except log bytes, which go to one file per attempt in the
// directory <path>.logs beside it (see logfiles.go); the database holds each
// log's committed length.
//
// # Time
//
// Times are stored as Unix nanoseconds (0 means unset) and read from
// Options.Now, taken once per transaction after the write lock is held, so the
// order of writes and the order of their timestamps agree.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	msqlite "modernc.org/sqlite" // and registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/airlock-run/airlock/internal/queue"
)

var _ queue.Store = (*Store)(nil)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives the store's own events (migrations, reaped attempts);
	// discarded when nil.
	Logger *slog.Logger
}

// Store is a queue.Store backed by one SQLite database file.
type Store struct {
	w      *sql.DB // exactly one connection; every transaction is BEGIN IMMEDIATE
	r      *sql.DB // query-only connections
	now    func() time.Time
	logger *slog.Logger
	ckpt   *checkpointer
	logs   logFiles
	// Statements prepared at Open, by query text, for each pool.
	wstmts, rstmts map[string]*sql.Stmt

	// Group commit; see groupcommit.go.
	wmu     sync.Mutex
	pending []*writeReq
	leading bool

	closeOnce sync.Once
	closeErr  error
}

const (
	// busyTimeout is how long a connection waits for another process's lock
	// before SQLITE_BUSY. Within one Store writers never contend at the
	// SQLite level (they queue for the single write connection instead).
	busyTimeout = 10 * time.Second
	// pageSize applies to new database files only.
	pageSize = 4096
)

// Open opens (creating if needed) the database at path, and the directory
// path+".logs" that holds the attempts' log files, and applies any schema
// migrations the database lacks. ctx bounds the opening and the migrations
// only.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening queue database: empty path")
	}
	s := &Store{now: opts.Now, logger: opts.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if err := s.open(ctx, path); err != nil {
		s.Close()
		return nil, fmt.Errorf("opening queue database %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, path string) error {
	// Per-connection settings go in the DSN, so that a connection database/sql
	// replaces gets them too.
	common := "file:" + escapePath(path) +
		fmt.Sprintf("?_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()) +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"

	var err error
	// Checkpoints are the checkpointer's business (see checkpoint.go).
	s.w, err = sql.Open("sqlite", common+"&_pragma=wal_autocheckpoint(0)&_txlock=immediate")
	if err != nil {
		return err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	// The page size must be set before the file has its first page, and
	// journal_mode=WAL (persistent in the file) gives it one; both are no-ops
	// on an existing database.
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA page_size = %d", pageSize)); err != nil {
		return fmt.Errorf("setting page size: %w", err)
	}
	if err := s.useWAL(ctx); err != nil {
		return err
	}
	s.logs = logFiles{dir: logDirFor(path)}
	if err := s.logs.init(); err != nil {
		return err
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if s.wstmts, err = prepareAll(ctx, s.w); err != nil {
		return err
	}

	s.r, err = sql.Open("sqlite", common+"&_query_only=1&_txlock=deferred")
	if err != nil {
		return err
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	if s.rstmts, err = prepareAll(ctx, s.r); err != nil {
		return err
	}

	ckdb, err := sql.Open("sqlite", common)
	if err != nil {
		return err
	}
	s.ckpt = startCheckpointer(ckdb, s.logger)
	return nil
}

// useWAL switches the file to WAL mode unless it is there already. The switch
// needs the file to itself and SQLite reports SQLITE_BUSY at once, without
// waiting, when another connection is looking at it (several stores opening a
// new file together), so this polls until busyTimeout.
func (s *Store) useWAL(ctx context.Context) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		var mode string
		err := s.w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
		if err == nil && mode != "wal" {
			err = s.w.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode)
		}
		switch {
		case err == nil && mode == "wal":
			return nil
		case err == nil:
			return fmt.Errorf("journal mode is %q, not wal", mode)
		case !isBusy(err) || time.Now().After(deadline):
			return fmt.Errorf("setting journal mode: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func isBusy(err error) bool {
	var e *msqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

// escapePath makes a file path safe inside an SQLite URI filename.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// Close stops the checkpointer and closes the connections. Calling it again
// returns the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	var errs []error
	if s.ckpt != nil {
		errs = append(errs, s.ckpt.stop())
	}
	for _, st := range s.rstmts {
		errs = append(errs, st.Close())
	}
	for _, st := range s.wstmts {
		errs = append(errs, st.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing queue database: %w", err)
	}
	return nil
}

// querier is what both a transaction and a pool offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// hot lists the queries prepared once per connection: compiling SQL costs
// more than running most of these statements.
var hot []string

// prepared registers a query as hot and returns it.
func prepared(query string) string {
	hot = append(hot, query)
	return query
}

func prepareAll(ctx context.Context, db *sql.DB) (map[string]*sql.Stmt, error) {
	m := make(map[string]*sql.Stmt, len(hot))
	for _, q := range hot {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			for _, st := range m {
				st.Close()
			}
			return nil, fmt.Errorf("preparing %q: %w", q, err)
		}
		m[q] = st
	}
	return m, nil
}

// txn is a transaction that runs hot queries from their prepared statements.
type txn struct {
	*sql.Tx
	stmts map[string]*sql.Stmt
}

func (t txn) stmt(ctx context.Context, query string) *sql.Stmt {
	if st := t.stmts[query]; st != nil {
		return t.Tx.StmtContext(ctx, st)
	}
	return nil
}

func (t txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t txn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}

// read runs fn in one read transaction on the query-only pool, so that what
// it reads is one consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(tx txn) error) error {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // read-only; nothing to keep
	return fn(txn{tx, s.rstmts})
}

// fromNanos turns a stored time back into a time.Time; 0 is the zero time.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
