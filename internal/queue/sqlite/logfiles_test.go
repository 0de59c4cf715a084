package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// These tests look at what the store keeps on disk for logs: the files, their
// layout, a file left longer than its committed size by a crash, and the
// migration of logs out of a version-1 database.

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// claimNew submits a job and claims it.
func claimNew(t *testing.T, s *Store) queue.AttemptRef {
	t.Helper()
	ctx := t.Context()
	spec := job.Spec{Version: job.SpecVersion, Queue: "default", MaxAttempts: 3, Steps: []job.Step{{Run: "true"}}}
	if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	return claimNext(t, s)
}

var tokens atomic.Int64

func claimNext(t *testing.T, s *Store) queue.AttemptRef {
	t.Helper()
	c, err := s.Claim(t.Context(), queue.ClaimParams{Queues: []string{"default"}, Executor: queue.ExecutorInfo{Name: "e1"},
		Lease: time.Minute, TokenHash: fmt.Appendf(nil, "token %d", tokens.Add(1))})
	if err != nil || c == nil {
		t.Fatalf("Claim = %v, %v; want a job", c, err)
	}
	return queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
}

func appendLog(t *testing.T, s *Store, ref queue.AttemptRef, off int64, data string) {
	t.Helper()
	if _, err := s.AppendLog(t.Context(), queue.AppendLogParams{Attempt: ref, Offset: off, Data: []byte(data)}); err != nil {
		t.Fatalf("AppendLog(%+v, %d, %q): %v", ref, off, data, err)
	}
}

// readAll reads an attempt's whole log through ReadLog.
func readAll(t *testing.T, s *Store, ref queue.AttemptRef) string {
	t.Helper()
	var out []byte
	for off := int64(0); ; {
		c, err := s.ReadLog(t.Context(), queue.ReadLogParams{JobID: ref.JobID, Attempt: ref.Attempt, Offset: off})
		if err != nil {
			t.Fatalf("ReadLog(%+v at %d): %v", ref, off, err)
		}
		out = append(out, c.Data...)
		if len(c.Data) == 0 {
			return string(out)
		}
		off = c.NextOffset
	}
}

func TestLogFileLayout(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	s := openAt(t, path)
	first := claimNew(t, s)
	appendLog(t, s, first, 0, "first try\n")
	if _, err := s.Finish(t.Context(), queue.FinishParams{Attempt: first, Outcome: job.OutcomeErrored}); err != nil {
		t.Fatal(err)
	}
	second := claimNext(t, s)
	appendLog(t, s, second, 0, "second ")
	appendLog(t, s, second, 7, "try\n")
	other := claimNew(t, s) // a job whose attempt has no log yet

	dir := path + ".logs"
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		desc := fi.Mode().String()
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		}
		got[filepath.ToSlash(rel)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if first.JobID != 1 {
		t.Fatalf("first job has ID %d, want 1", first.JobID)
	}
	want := map[string]string{
		".":         "drwx------",
		"0":         "drwx------", // jobs 0 to 999
		"0/1.1.log": "-rw------- first try\n",
		"0/1.2.log": "-rw------- second try\n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log directory (-want +got):\n%s", diff)
	}
	if got := readAll(t, s, other); got != "" {
		t.Errorf("log of job %d with no file = %q, want empty", other.JobID, got)
	}
}

// A crash between writing the bytes and committing the new size leaves the
// file longer than the log: the extra bytes are never read, and the next
// append replaces them.
func TestBytesPastTheCommittedSizeAreNeverRead(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	s := openAt(t, path)
	ref := claimNew(t, s)
	appendLog(t, s, ref, 0, "abc")

	file := s.logs.path(ref.JobID, ref.Attempt)
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("uncommitted garbage"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	for _, p := range []queue.ReadLogParams{
		{JobID: ref.JobID},
		{JobID: ref.JobID, Offset: 1, Limit: 100},
		{JobID: ref.JobID, Offset: 3},
	} {
		c, err := s.ReadLog(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		want := &queue.LogChunk{Attempt: 1, Data: []byte("abc"[p.Offset:]), NextOffset: 3, Size: 3}
		if len(want.Data) == 0 {
			want.Data = nil
		}
		if diff := cmp.Diff(want, c); diff != "" {
			t.Errorf("ReadLog(%+v) with garbage past the end (-want +got):\n%s", p, diff)
		}
	}

	// A resend changes nothing; the next append overwrites the garbage and
	// leaves the file exactly as long as the log.
	appendLog(t, s, ref, 0, "abc")
	appendLog(t, s, ref, 2, "cdef")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "abcdef" {
		t.Errorf("file after the next append = %q, want %q", b, "abcdef")
	}
	if got := readAll(t, s, ref); got != "abcdef" {
		t.Errorf("log after the next append = %q, want %q", got, "abcdef")
	}
}

// A file shorter than its committed size (a machine crash lost its tail)
// reads as NUL bytes where it lacks them, and the log goes on.
func TestLostBytesReadAsNUL(t *testing.T) {
	t.Parallel()
	s := openAt(t, filepath.Join(t.TempDir(), "queue.db"))
	ref := claimNew(t, s)
	appendLog(t, s, ref, 0, "abcdef")
	if err := os.Truncate(s.logs.path(ref.JobID, ref.Attempt), 2); err != nil {
		t.Fatal(err)
	}
	appendLog(t, s, ref, 6, "gh")
	if got, want := readAll(t, s, ref), "ab\x00\x00\x00\x00gh"; got != want {
		t.Errorf("log = %q, want %q", got, want)
	}
	gone := claimNew(t, s)
	appendLog(t, s, gone, 0, "xyz")
	if err := os.Remove(s.logs.path(gone.JobID, gone.Attempt)); err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, s, gone), "\x00\x00\x00"; got != want {
		t.Errorf("log whose file is gone = %q, want %q", got, want)
	}
}

// v1Chunk is a log_chunks row of a version-1 database.
type v1Chunk struct {
	job     int64
	attempt int
	off     int64
	data    string
}

// makeV1 builds a database at path as a version-1 build left it: migration
// 1 applied, and the given logs stored as log_chunks rows.
func makeV1(t *testing.T, path string, chunks []v1Chunk) {
	t.Helper()
	ctx := t.Context()
	db, err := sql.Open("sqlite", "file:"+escapePath(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stmts := []string{
		"PRAGMA journal_mode = WAL",
		migrations[0],
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL) STRICT`,
		`INSERT INTO schema_migrations VALUES (1, 1)`,
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	sizes := map[[2]int64]int64{}
	for _, c := range chunks {
		k := [2]int64{c.job, int64(c.attempt)}
		sizes[k] = max(sizes[k], c.off+int64(len(c.data)))
	}
	for k, size := range sizes {
		if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO jobs (id, queue, priority, spec, state, attempt, max_attempts, created_at)
			VALUES (?, 'default', 0, '{"version":1}', 'succeeded', ?, 3, 1)`, k[0], k[1]); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE jobs SET attempt = MAX(attempt, ?) WHERE id = ?`, k[1], k[0]); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO attempts (job_id, number, executor, started_at, finished_at, lease_until, log_size)
			VALUES (?, ?, 'e1', 1, 2, 1, ?)`, k[0], k[1], size); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range chunks {
		if _, err := db.ExecContext(ctx, `INSERT INTO log_chunks (job_id, attempt, byte_offset, data) VALUES (?, ?, ?, ?)`,
			c.job, c.attempt, c.off, []byte(c.data)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMigrationMovesLogsOutOfTheDatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	big := strings.Repeat("0123456789abcdef", 80_000) // 1.28 MB, more than one read window
	makeV1(t, path, []v1Chunk{
		{1, 1, 0, "hello "},
		{1, 1, 6, "world\n"},
		{1, 2, 0, "second attempt\n"},
		{1234, 1, 0, big[:queue.MaxReadBytes]},
		{1234, 1, queue.MaxReadBytes, big[queue.MaxReadBytes:]},
	})
	// An interrupted earlier run left a longer, wrong file behind.
	dir := path + ".logs"
	if err := os.MkdirAll(filepath.Join(dir, "0"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "0", "1.1.log"), []byte("half-written garbage from a migration cut short"), 0o600); err != nil {
		t.Fatal(err)
	}

	s := openAt(t, path)
	for _, tc := range []struct {
		ref  queue.AttemptRef
		file string
		want string
	}{
		{queue.AttemptRef{JobID: 1, Attempt: 1}, "0/1.1.log", "hello world\n"},
		{queue.AttemptRef{JobID: 1, Attempt: 2}, "0/1.2.log", "second attempt\n"},
		{queue.AttemptRef{JobID: 1234, Attempt: 1}, "1/1234.1.log", big},
	} {
		if got := readAll(t, s, tc.ref); got != tc.want {
			t.Errorf("log of %+v after migrating: %d bytes, want %d (equal: %v)", tc.ref, len(got), len(tc.want), got == tc.want)
		}
		b, err := os.ReadFile(filepath.Join(dir, tc.file))
		if err != nil || string(b) != tc.want {
			t.Errorf("file %s after migrating: %d bytes, %v; want exactly the log of %+v", tc.file, len(b), err, tc.ref)
		}
	}
	var n int
	err := s.r.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'log_chunks'`).Scan(&n)
	if err != nil || n != 0 {
		t.Errorf("log_chunks tables after migrating: %d, %v; want none", n, err)
	}
}

// A migration that fails half-way leaves the rows where they were, and the
// next Open finishes it.
func TestInterruptedMigrationLosesNothing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	makeV1(t, path, []v1Chunk{{1, 1, 0, "first job\n"}, {1001, 1, 0, "second job\n"}})
	// Job 1001's directory cannot be made: a file is in its way.
	logs := logFiles{dir: logDirFor(path)}
	if err := os.Mkdir(logs.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logs.shard(1001), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(t.Context(), path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open with job 1001's log directory blocked succeeded, want an error")
	}
	if _, err := os.Stat(logs.path(1, 1)); err != nil {
		t.Fatalf("job 1's file was not written before the failure (the test would prove nothing): %v", err)
	}

	if err := os.Remove(logs.shard(1001)); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, path)
	for ref, want := range map[queue.AttemptRef]string{{JobID: 1, Attempt: 1}: "first job\n", {JobID: 1001, Attempt: 1}: "second job\n"} {
		if got := readAll(t, s, ref); got != want {
			t.Errorf("log of %+v = %q, want %q", ref, got, want)
		}
	}
}

// Appends and reads through two stores on one file (two coordinator
// processes) see one log.
func TestTwoStoresShareLogs(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	a, b := openAt(t, path), openAt(t, path)
	ref := claimNew(t, a)
	var want bytes.Buffer
	for i := range 20 {
		s := []*Store{a, b}[i%2]
		line := fmt.Sprintf("line %d\n", i)
		appendLog(t, s, ref, int64(want.Len()), line)
		want.WriteString(line)
	}
	for _, s := range []*Store{a, b} {
		if got := readAll(t, s, ref); got != want.String() {
			t.Errorf("log = %q, want %q", got, want.String())
		}
	}
	_, err := b.AppendLog(context.Background(), queue.AppendLogParams{Attempt: ref, Offset: int64(want.Len()) + 1, Data: []byte("x")})
	if !errors.Is(err, queue.ErrLogGap) {
		t.Errorf("AppendLog past the end through the other store: error = %v, want ErrLogGap", err)
	}
}

// Deleting a job (retention) removes its attempts' log files, not only its
// rows.
func TestDeleteJobRemovesItsLogFiles(t *testing.T) {
	t.Parallel()
	s := openAt(t, filepath.Join(t.TempDir(), "queue.db"))
	ctx := t.Context()
	ref := claimNew(t, s)
	appendLog(t, s, ref, 0, "kept until the job goes\n")
	if _, err := s.Finish(ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeSucceeded}); err != nil {
		t.Fatal(err)
	}
	file := s.logs.path(ref.JobID, ref.Attempt)
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("log file before DeleteJob: %v", err)
	}
	if err := s.DeleteJob(ctx, ref.JobID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("log file after DeleteJob: %v, want it gone", err)
	}
}
