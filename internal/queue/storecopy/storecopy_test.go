package storecopy_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/postgres"
	"github.com/airlock-run/airlock/internal/queue/queuetest"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
	"github.com/airlock-run/airlock/internal/queue/storecopy"
	"github.com/airlock-run/airlock/internal/testenv"
)

func dsn() string { return testenv.PostgresDSN() }

// freshPostgres opens a store in a new schema, dropped when the test ends.
func freshPostgres(t *testing.T, clock *queuetest.Clock) *postgres.Store {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn())
	if err != nil {
		testenv.Missing(t, "PostgreSQL", err)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "airlock_copy_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		admin.Close(ctx)
	})
	s, err := postgres.Open(ctx, dsn(), postgres.Options{Schema: schema, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tokenHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestCopyMovesEveryJobAttemptLogAndRegistrationAsItIs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := queuetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	src, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "q.db"), sqlite.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ex := queue.ExecutorInfo{Name: "exec-1", Version: "test", Queues: []string{"default"}, MaxJobs: 2}
	submit := func(run string) int64 {
		j, err := src.Submit(ctx, queue.SubmitParams{Spec: job.Spec{Version: 1, Queue: "default", MaxAttempts: 2,
			Files: map[string]job.File{"bin/x": {Content: "x", Mode: 0o755}}, Steps: []job.Step{{Name: "s", Run: run}}}})
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	claim := func(token string) queue.AttemptRef {
		c, err := src.Claim(ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: ex, Lease: time.Minute, TokenHash: tokenHash(token)})
		if err != nil || c == nil {
			t.Fatalf("Claim = %v, %v", c, err)
		}
		return queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
	}
	appendLog := func(ref queue.AttemptRef, data string) {
		if _, err := src.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
	}
	succeeded, running, failedRetried, canceled := submit("a"), submit("b"), submit("c"), submit("d")
	r := claim("t1")
	appendLog(r, "log of the succeeded job\n")
	clock.Advance(time.Second)
	if _, err := src.Finish(ctx, queue.FinishParams{Attempt: r, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess,
		Steps: []queue.StepResult{{Name: "s", ExitCode: 0, Duration: time.Second}}, EgressDenied: 3}); err != nil {
		t.Fatal(err)
	}
	live := claim("live-token")
	appendLog(live, strings.Repeat("running job output\n", 100000)) // 1.9 MB: more than one chunk
	r = claim("t3")
	if _, err := src.Finish(ctx, queue.FinishParams{Attempt: r, Outcome: job.OutcomeFailed, Reason: job.ReasonExitCode}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Retry(ctx, failedRetried); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Cancel(ctx, canceled); err != nil {
		t.Fatal(err)
	}
	queued := submit("e")
	if _, err := src.PutRepository(ctx, job.Remote{Name: "acme/api", URL: "https://git.example.com/acme/api.git",
		Credential: &job.Credential{Kind: job.CredentialToken, Secret: "GIT_TOKEN"}}); err != nil {
		t.Fatal(err)
	}

	dst := freshPostgres(t, clock)
	st, err := storecopy.Copy(ctx, src, dst, nil)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if want := (storecopy.Stats{Jobs: 5, Attempts: 3, Repositories: 1, Executors: 1, LogBytes: int64(25 + 19*100000)}); st != want {
		t.Errorf("Copy stats = %+v, want %+v", st, want)
	}

	for _, id := range []int64{succeeded, running, failedRetried, canceled, queued} {
		want, err := src.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dst.Get(ctx, id)
		if err != nil {
			t.Fatalf("job %d after the copy: %v", id, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("job %d (-sqlite +postgres):\n%s", id, diff)
		}
		for _, a := range want.Attempts {
			w, _ := src.ReadLog(ctx, queue.ReadLogParams{JobID: id, Attempt: a.Number, Limit: 4 << 20})
			g, err := dst.ReadLog(ctx, queue.ReadLogParams{JobID: id, Attempt: a.Number, Limit: 4 << 20})
			if err != nil || string(g.Data) != string(w.Data) || g.Size != w.Size || g.Final != w.Final {
				t.Errorf("log of job %d attempt %d: %d bytes (final %v), %v; want %d bytes (final %v)", id, a.Number, len(g.Data), g.Final, err, len(w.Data), w.Final)
			}
		}
	}
	for _, pair := range []struct {
		name string
		fn   func(queue.Store) (any, error)
	}{
		{"repositories", func(s queue.Store) (any, error) { return s.Repositories(ctx) }},
		{"executors", func(s queue.Store) (any, error) { return s.Executors(ctx) }},
	} {
		w, _ := pair.fn(src)
		g, err := pair.fn(dst)
		if diff := cmp.Diff(w, g); err != nil || diff != "" {
			t.Errorf("%s (-sqlite +postgres): %v\n%s", pair.name, err, diff)
		}
	}

	// The running job carries on: its executor's token still works.
	if ref, err := dst.AttemptForToken(ctx, tokenHash("live-token")); err != nil || ref != live {
		t.Errorf("AttemptForToken(live token) = %+v, %v; want %+v", ref, err, live)
	}
	if _, err := dst.Finish(ctx, queue.FinishParams{Attempt: live, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
		t.Errorf("finishing the moved running attempt: %v", err)
	}
	// The retried job has its fresh budget: it may fail once more and be retried by the store.
	r2, err := dst.Claim(ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: ex, Lease: time.Minute, TokenHash: tokenHash("t4")})
	if err != nil || r2 == nil || r2.Job.ID != failedRetried || r2.Attempt != 2 {
		t.Fatalf("claiming on the destination = %+v, %v; want job %d attempt 2", r2, err, failedRetried)
	}
	// New jobs continue after the largest ID.
	j, err := dst.Submit(ctx, queue.SubmitParams{Spec: job.Spec{Version: 1, Queue: "default", MaxAttempts: 1, Steps: []job.Step{{Run: "x"}}}})
	if err != nil || j.ID != queued+1 {
		t.Errorf("new job on the destination = %v, %v; want ID %d", j, err, queued+1)
	}

	if _, err := storecopy.Copy(ctx, src, dst, nil); !errors.Is(err, storecopy.ErrNotEmpty) {
		t.Errorf("copying into a store that holds jobs: %v, want ErrNotEmpty", err)
	}
}
