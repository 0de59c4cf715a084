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
// # Durability
//
// synchronous=NORMAL in WAL mode: a committed transaction survives a crash of
// the process; the last transactions before a power loss may be lost, never
// half-applied.
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
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

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
}

// busyTimeout is how long a connection waits for another process's lock
// before SQLITE_BUSY. Within one Store writers never contend at the SQLite
// level (they queue for the single write connection instead).
const busyTimeout = 10 * time.Second

// Open opens (creating if needed) the database at path and applies any schema
// migrations it lacks. ctx bounds the opening and the migrations only.
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

	common := "file:" + escapePath(path) +
		fmt.Sprintf("?_pragma=busy_timeout(%d)", busyTimeout.Milliseconds()) +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	// journal_mode=WAL is persistent in the file; setting it on the write
	// connection (opened first, below) is enough, but the readers say it too so
	// that a reader can never be the one that creates the file in another mode.
	w, err := sql.Open("sqlite", common+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("opening queue database %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s.w = w
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening queue database %s: %w", path, err)
	}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening queue database %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", common+"&_pragma=journal_mode(WAL)&_query_only=1&_txlock=deferred")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening queue database %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	s.r = r
	if err := r.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("opening queue database %s: %w", path, err)
	}
	return s, nil
}

// escapePath makes a file path safe inside an SQLite URI filename.
func escapePath(p string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
}

// Close closes both pools.
func (s *Store) Close() error {
	var errs []error
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

// querier is what both *sql.Tx and *sql.DB offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// write runs fn in one write transaction (BEGIN IMMEDIATE on the single write
// connection) and commits it when fn returns nil. now is read after the write
// lock is held.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx, now int64) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx, s.now().UnixNano()); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// read runs fn in one read transaction on the query-only pool, so that what
// it reads is one consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // read-only; nothing to keep
	return fn(tx)
}

// fromNanos turns a stored time back into a time.Time; 0 is the zero time.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
