package sqlite_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/queuetest"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
)

func TestStore(t *testing.T) {
	t.Parallel()
	queuetest.Exercise(t, func(t *testing.T, clock *queuetest.Clock) queue.Store {
		return open(t, filepath.Join(t.TempDir(), "queue.db"), clock.Now)
	})
}

func open(t *testing.T, path string, now func() time.Time) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path, sqlite.Options{Now: now})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func spec() job.Spec {
	return job.Spec{Version: job.SpecVersion, Queue: "default", MaxAttempts: 2, Steps: []job.Step{{Run: "true"}}}
}

func TestReopenKeepsJobsAndLogs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "queue.db")
	clock := queuetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))

	s, err := sqlite.Open(ctx, path, sqlite.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	done, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	running, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	token := []byte("0123456789abcdef0123456789abcdef")
	claim := func(s *sqlite.Store, token []byte) *queue.Claim {
		t.Helper()
		c, err := s.Claim(ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: queue.ExecutorInfo{Name: "e1"},
			Lease: time.Minute, TokenHash: token})
		if err != nil || c == nil {
			t.Fatalf("Claim = %v, %v; want a job", c, err)
		}
		return c
	}
	c1 := claim(s, []byte("token one"))
	if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: queue.AttemptRef{JobID: c1.Job.ID, Attempt: 1}, Data: []byte("done\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, queue.FinishParams{Attempt: queue.AttemptRef{JobID: done.ID, Attempt: 1},
		Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
		t.Fatal(err)
	}
	c2 := claim(s, token)
	ref := queue.AttemptRef{JobID: running.ID, Attempt: c2.Attempt}
	if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Data: []byte("half way\n")}); err != nil {
		t.Fatal(err)
	}
	before := map[int64]*queue.Job{}
	for _, id := range []int64{done.ID, running.ID} {
		if before[id], err = s.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, path, clock.Now)
	for id, want := range before {
		got, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("job %d after reopening (-before +after):\n%s", id, diff)
		}
	}
	for _, tc := range []struct {
		id   int64
		want string
	}{{done.ID, "done\n"}, {running.ID, "half way\n"}} {
		c, err := s.ReadLog(ctx, queue.ReadLogParams{JobID: tc.id})
		if err != nil {
			t.Fatal(err)
		}
		if string(c.Data) != tc.want {
			t.Errorf("log of job %d after reopening = %q, want %q", tc.id, c.Data, tc.want)
		}
	}
	// The running attempt lives on: its token still works and it can go on.
	if got, err := s.AttemptForToken(ctx, token); err != nil || got != ref {
		t.Errorf("AttemptForToken after reopening = %+v, %v; want %+v", got, err, ref)
	}
	if end, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Offset: 9, Data: []byte("end\n")}); err != nil || end != 13 {
		t.Errorf("AppendLog after reopening = %d, %v; want 13", end, err)
	}
	// And IDs are not reused.
	next, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()})
	if err != nil {
		t.Fatal(err)
	}
	if next.ID <= running.ID {
		t.Errorf("new job after reopening has ID %d, not above %d", next.ID, running.ID)
	}
}

func TestMigrationsAreIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "queue.db")
	for i := range 3 {
		s, err := sqlite.Open(ctx, path, sqlite.Options{})
		if err != nil {
			t.Fatalf("Open #%d: %v", i+1, err)
		}
		if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
			t.Fatalf("Submit after Open #%d: %v", i+1, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db := rawDB(t, path)
	var versions, latest, jobs int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&versions, &latest); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM jobs`).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if versions != latest || latest < 2 || jobs != 3 {
		t.Errorf("after three opens: %d migrations recorded, up to version %d, %d jobs; want each of 1..%d once (at least 2) and 3 jobs",
			versions, latest, jobs, latest)
	}
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	s := open(t, path, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	if _, err := db.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)`); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlite.Open(t.Context(), path, sqlite.Options{}); err == nil {
		s.Close()
		t.Error("Open of a database from a newer build succeeded, want an error")
	}
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
			if err != nil {
				errs <- err
				return
			}
			errs <- s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}
}

// Two Store values on one file (as two coordinator processes would have)
// serialize their writes through SQLite's lock and never hand out one job
// twice.
func TestTwoStoresOnOneFileDoNotDoubleClaim(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "queue.db")
	stores := []*sqlite.Store{open(t, path, nil), open(t, path, nil)}
	const jobs = 100
	for i := range jobs {
		if _, err := stores[i%2].Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu     sync.Mutex
		counts = make(map[int64]int)
		wg     sync.WaitGroup
	)
	for i := range 8 {
		wg.Go(func() {
			s := stores[i%2]
			for n := 0; ; n++ {
				c, err := s.Claim(ctx, queue.ClaimParams{Queues: []string{"default"},
					Executor: queue.ExecutorInfo{Name: fmt.Sprintf("e%d", i)}, Lease: time.Minute,
					TokenHash: fmt.Appendf(nil, "token %d/%d", i, n)})
				if err != nil {
					t.Errorf("Claim: %v", err)
					return
				}
				if c == nil {
					return
				}
				mu.Lock()
				counts[c.Job.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for id, n := range counts {
		if n != 1 {
			t.Errorf("job %d claimed %d times", id, n)
		}
	}
	if len(counts) != jobs {
		t.Errorf("%d jobs claimed, want %d", len(counts), jobs)
	}
}

func TestOpenFailsOnAnUnusablePath(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", filepath.Join(t.TempDir(), "missing-dir", "queue.db")} {
		if s, err := sqlite.Open(t.Context(), path, sqlite.Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
}

func TestPathWithURICharacters(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a?b#c%20d.db")
	s := open(t, path, nil)
	if _, err := s.Submit(t.Context(), queue.SubmitParams{Spec: spec()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, nil)
	res, err := s.List(t.Context(), queue.ListParams{})
	if err != nil || len(res.Jobs) != 1 {
		t.Errorf("List after reopening %q = %v, %v; want the one job", path, res, err)
	}
	rawDB(t, path) // the file is where the path says
}

// rawDB opens the file directly, refusing to create it.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+escape(path)+"?mode=rw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.PingContext(t.Context()); err != nil {
		t.Fatalf("opening %s directly: %v", path, err)
	}
	return db
}

func escape(p string) string {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '%', '?', '#':
			out = fmt.Appendf(out, "%%%02x", c)
		default:
			out = append(out, c)
		}
	}
	return string(out)
}
