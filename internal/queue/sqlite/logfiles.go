// Attempt log files.
//
// Log bytes live outside SQLite, one file per attempt in a directory beside
// the database, in subdirectories of a thousand jobs each:
//
//	<db path>.logs/<job ID / 1000>/<job ID>.<attempt>.log
//
// e.g. queue.db.logs/12/12345.1.log (directories 0700, files 0600). One file
// per attempt and no directory per job keeps it to one new inode per
// attempt, which on some file systems costs as much as a whole transaction;
// the shards keep every directory small however many jobs there are.
//
// The database keeps only attempts.log_size, the committed length, and that
// is the source of truth: a file may hold bytes past it, never fewer (but see
// below), and nothing ever reads past it.
//
// An append first opens the attempt's file, creating it if need be, outside
// the write transaction (creating a file changes no byte of the log, and the
// single writer should not wait on the file system for it; an append that is
// then refused may leave an empty file behind, never read). The rest runs in
// its write transaction, so under SQLite's write lock: it checks the attempt
// and the offsets, cuts off anything the file holds past the log's end,
// writes the new bytes there, and moves log_size. If the transaction then
// rolls back (its savepoint or the whole group commit) or the process dies
// before the commit, the file is left longer than log_size: the extra bytes
// are never read, and the next append cuts them off and writes from log_size
// again. Bytes below a committed log_size are never written again, so readers
// need no lock: they read log_size in a read transaction and then the file up
// to it.
//
// Every log byte is thus written once, sequentially, into the page cache,
// instead of twice through 4 KiB database pages (WAL, then checkpoint).
//
// Durability matches synchronous=NORMAL: appends do not fsync. A committed
// append survives a crash of the process (its bytes are in the page cache
// before the commit). After a crash of the machine, a committed log_size may
// be ahead of what reached the disk; the lost bytes then read as NUL bytes
// (like a hole in a sparse file, which is also what an append past a short
// file makes), and the store logs a warning when it serves them. Syncing each
// file when its attempt ends would narrow that window, but it costs about
// 1.5 s per GB of log still in the page cache, and would have to run outside
// the write transaction. The migration that moved old logs out of the
// database, whose rows were the only other copy, does sync its files.

package sqlite

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// logFiles is the directory of attempt log files.
type logFiles struct {
	dir string
}

// logDirFor is the log directory of the database at dbPath.
func logDirFor(dbPath string) string { return dbPath + ".logs" }

// init creates the directory unless it exists; its parent must.
func (l logFiles) init() error {
	if err := os.Mkdir(l.dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating log directory: %w", err)
	}
	fi, err := os.Stat(l.dir)
	if err != nil {
		return fmt.Errorf("creating log directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("log directory %s is not a directory", l.dir)
	}
	return nil
}

// jobsPerShard is how many jobs' logs share a subdirectory.
const jobsPerShard = 1000

// shard is the subdirectory that holds a job's logs.
func (l logFiles) shard(jobID int64) string {
	return filepath.Join(l.dir, strconv.FormatInt(jobID/jobsPerShard, 10))
}

func (l logFiles) path(jobID int64, attempt int) string {
	return filepath.Join(l.shard(jobID), strconv.FormatInt(jobID, 10)+"."+strconv.Itoa(attempt)+".log")
}

// create opens an attempt's file for writing, creating it and its shard as
// needed. flag is added to O_WRONLY|O_CREATE.
func (l logFiles) create(jobID int64, attempt int, flag int) (*os.File, error) {
	p := l.path(jobID, attempt)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		// The shard's first log: the directory comes first.
		if err := os.Mkdir(l.shard(jobID), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	}
	return f, err
}

// writeLog puts data at offset off of an attempt's log file f, which it
// first cuts to off if it is longer (bytes left by an append that did not
// commit). off is the log's end as the calling transaction sees it.
func writeLog(f *os.File, off int64, data []byte) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading log file size: %w", err)
	}
	if fi.Size() > off {
		if err := f.Truncate(off); err != nil {
			return fmt.Errorf("cutting log file to %d bytes: %w", off, err)
		}
	}
	if _, err := f.WriteAt(data, off); err != nil {
		return fmt.Errorf("writing log file: %w", err)
	}
	return nil
}

// read returns the bytes [from, to) of an attempt's log, all committed. It
// also returns how many of them the file lacked (read as NUL bytes): none,
// unless a machine crash lost them or someone removed the file.
func (l logFiles) read(jobID int64, attempt int, from, to int64) (data []byte, missing int64, err error) {
	data = make([]byte, to-from)
	f, err := os.Open(l.path(jobID, attempt))
	if errors.Is(err, fs.ErrNotExist) {
		return data, to - from, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("opening log file: %w", err)
	}
	defer f.Close()
	n, err := f.ReadAt(data, from)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("reading log file: %w", err)
	}
	return data, int64(len(data) - n), nil
}

// syncDir makes a directory's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// remove deletes an attempt's log file; a missing one is not an error.
func (l logFiles) remove(jobID int64, attempt int) error {
	if err := os.Remove(l.path(jobID, attempt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing log of attempt %d: %w", attempt, err)
	}
	return nil
}
