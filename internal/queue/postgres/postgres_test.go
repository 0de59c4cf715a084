package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/postgres"
	"github.com/airlock-run/airlock/internal/queue/queuetest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// dsn is the server the tests use; each test works in schemas of its own
// (newSchema).
func dsn() string { return testenv.PostgresDSN() }

// admin is a pool outside any store, for creating and dropping schemas and
// for doing to the stores' sessions what an operator (or a failure) would.
var admin struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func adminPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	admin.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin.pool, admin.err = pgxpool.New(ctx, dsn())
		if admin.err == nil {
			admin.err = admin.pool.Ping(ctx)
		}
	})
	if admin.err != nil {
		testenv.Missing(t, "PostgreSQL", fmt.Errorf("%s (set %s to a connection string): %w", dsn(), testenv.PostgresEnv, admin.err))
	}
	return admin.pool
}

func TestMain(m *testing.M) {
	code := m.Run()
	if admin.pool != nil {
		admin.pool.Close()
	}
	os.Exit(code)
}

func randomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// newSchema returns the name of a schema no other test uses, dropped with
// everything in it when the test ends (after the stores using it close).
func newSchema(t testing.TB) string {
	t.Helper()
	pool := adminPool(t)
	name := randomName("airlock_test_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("dropping schema %s: %v", name, err)
		}
	})
	return name
}

// open opens a store on schema, closed when the test ends.
func open(t testing.TB, url, schema string, opts postgres.Options) *postgres.Store {
	t.Helper()
	opts.Schema = schema
	s, err := postgres.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// withParam sets a connection parameter in a URL or key=value connection
// string.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			panic(err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value)
	return dsn + " " + key + "='" + quoted + "'"
}

func TestStore(t *testing.T) {
	t.Parallel()
	adminPool(t) // one skip, not one per case, without a server
	queuetest.Exercise(t, func(t *testing.T, clock *queuetest.Clock) queue.Store {
		return open(t, dsn(), newSchema(t), postgres.Options{Now: clock.Now})
	})
}

func spec(queueName string, priority int) job.Spec {
	return job.Spec{Version: job.SpecVersion, Queue: queueName, MaxAttempts: 2, Priority: priority,
		Steps: []job.Step{{Run: "true"}}}
}

func token(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func submit(t testing.TB, s *postgres.Store, sp job.Spec) *queue.Job {
	t.Helper()
	j, err := s.Submit(context.Background(), queue.SubmitParams{Spec: sp})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	return j
}

func claimParams(executor string, tok []byte, queues ...string) queue.ClaimParams {
	if len(queues) == 0 {
		queues = []string{"default"}
	}
	return queue.ClaimParams{Queues: queues, Executor: queue.ExecutorInfo{Name: executor}, Lease: time.Minute, TokenHash: tok}
}

// lockedBuffer is an io.Writer for loggers shared by goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestConcurrentOpensMigrateOnce(t *testing.T) {
	t.Parallel()
	schema := newSchema(t)
	var (
		logs lockedBuffer
		wg   sync.WaitGroup
	)
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), dsn(), postgres.Options{Schema: schema, Logger: logger})
			if err != nil {
				errs <- err
				return
			}
			if _, err := s.Submit(t.Context(), queue.SubmitParams{Spec: spec("default", 0)}); err != nil {
				errs <- err
			}
			errs <- s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Open, Submit or Close: %v", err)
		}
	}
	ctx := t.Context()
	rows, err := adminPool(t).Query(ctx, `SELECT version FROM `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+` ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) == 0 || int(versions[len(versions)-1]) != len(versions) {
		t.Errorf("schema_migrations holds versions %v, want each of 1..n once", versions)
	}
	if got := strings.Count(logs.String(), `msg="applied schema migration"`); got != len(versions) {
		t.Errorf("%d migrations applied by 5 concurrent Opens, want %d (each once):\n%s", got, len(versions), logs.String())
	}
	var jobs int
	if err := adminPool(t).QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{schema, "jobs"}.Sanitize()).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if jobs != 5 {
		t.Errorf("%d jobs after 5 stores submitted one each, want 5", jobs)
	}
}

func TestOpenRefusesANewerSchema(t *testing.T) {
	t.Parallel()
	schema := newSchema(t)
	s := open(t, dsn(), schema, postgres.Options{})
	s.Close()
	if _, err := adminPool(t).Exec(t.Context(), `INSERT INTO `+pgx.Identifier{schema, "schema_migrations"}.Sanitize()+
		` (version, applied_at) VALUES (999, now())`); err != nil {
		t.Fatal(err)
	}
	if s, err := postgres.Open(t.Context(), dsn(), postgres.Options{Schema: schema}); err == nil {
		s.Close()
		t.Error("Open of a schema from a newer build succeeded, want an error")
	}
}

func TestOpenAcceptsURLs(t *testing.T) {
	t.Parallel()
	adminPool(t)
	cfg, err := pgconn.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "postgres", User: url.User(cfg.User), Path: "/" + cfg.Database}
	q := url.Values{"host": {cfg.Host}, "port": {fmt.Sprint(cfg.Port)}}
	if cfg.Password != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	}
	u.RawQuery = q.Encode()
	s := open(t, u.String(), newSchema(t), postgres.Options{})
	if j := submit(t, s, spec("default", 0)); j.State != job.StateQueued {
		t.Errorf("job submitted through a URL-opened store is %s, want queued", j.State)
	}
}

func TestReopenKeepsJobsAndLogs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	schema := newSchema(t)
	clock := queuetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := open(t, dsn(), schema, postgres.Options{Now: clock.Now})

	done := submit(t, s, spec("default", 0))
	running := submit(t, s, spec("default", 0))
	claim := func(s *postgres.Store, tok []byte) *queue.Claim {
		t.Helper()
		c, err := s.Claim(ctx, claimParams("e1", tok))
		if err != nil || c == nil {
			t.Fatalf("Claim = %v, %v; want a job", c, err)
		}
		return c
	}
	c1 := claim(s, token("one"))
	if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: queue.AttemptRef{JobID: c1.Job.ID, Attempt: 1}, Data: []byte("done\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Finish(ctx, queue.FinishParams{Attempt: queue.AttemptRef{JobID: done.ID, Attempt: 1},
		Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
		t.Fatal(err)
	}
	tok := token("two")
	c2 := claim(s, tok)
	ref := queue.AttemptRef{JobID: running.ID, Attempt: c2.Attempt}
	if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Data: []byte("half way\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutRepository(ctx, job.Remote{Name: "acme/api", URL: "https://git.example.com/acme/api.git"}); err != nil {
		t.Fatal(err)
	}
	before := map[int64]*queue.Job{}
	for _, id := range []int64{done.ID, running.ID} {
		var err error
		if before[id], err = s.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, dsn(), schema, postgres.Options{Now: clock.Now})
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
	if got, err := s.AttemptForToken(ctx, tok); err != nil || got != ref {
		t.Errorf("AttemptForToken after reopening = %+v, %v; want %+v", got, err, ref)
	}
	if end, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Offset: 9, Data: []byte("end\n")}); err != nil || end != 13 {
		t.Errorf("AppendLog after reopening = %d, %v; want 13", end, err)
	}
	if r, err := s.Repository(ctx, "acme/api"); err != nil || r.URL != "https://git.example.com/acme/api.git" {
		t.Errorf("Repository after reopening = %+v, %v", r, err)
	}
	if next := submit(t, s, spec("default", 0)); next.ID <= running.ID {
		t.Errorf("new job after reopening has ID %d, not above %d", next.ID, running.ID)
	}
}

// ledger records the claims of concurrent claimers.
type ledger struct {
	mu     sync.Mutex
	claims map[int64][]queue.AttemptRef // by job
	tokens map[queue.AttemptRef][]byte
	errs   []error
}

func newLedger() *ledger {
	return &ledger{claims: make(map[int64][]queue.AttemptRef), tokens: make(map[queue.AttemptRef][]byte)}
}

// claimAll claims from s as executor name until Claim returns no job (or
// fails many times in a row), recording every claim and error, and returns
// how many it claimed.
func (l *ledger) claimAll(ctx context.Context, s queue.Store, name string) (claimed int) {
	for i, failures := 0, 0; failures < 100; i++ {
		tok := token(fmt.Sprintf("%s/%d/%s", name, i, randomName("")))
		c, err := s.Claim(ctx, claimParams(name, tok))
		l.mu.Lock()
		switch {
		case err != nil:
			l.errs = append(l.errs, err)
			failures++
		case c != nil:
			failures = 0
			ref := queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
			l.claims[ref.JobID] = append(l.claims[ref.JobID], ref)
			l.tokens[ref] = tok
			claimed++
		}
		l.mu.Unlock()
		if c == nil && err == nil {
			return claimed
		}
	}
	return claimed
}

// check verifies that every job was claimed exactly once, with the attempt
// the store recorded and a token that authenticates it.
func (l *ledger) check(t *testing.T, s queue.Store, ids []int64) {
	t.Helper()
	ctx := t.Context()
	for _, id := range ids {
		refs := l.claims[id]
		if len(refs) != 1 {
			t.Errorf("job %d claimed %d times (%v), want once", id, len(refs), refs)
			continue
		}
		j, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.StateRunning || len(j.Attempts) != 1 || refs[0].Attempt != 1 {
			t.Errorf("job %d: %s with %d attempts, claimed as attempt %d; want running, one attempt, claimed as 1",
				id, j.State, len(j.Attempts), refs[0].Attempt)
		}
		if got, err := s.AttemptForToken(ctx, l.tokens[refs[0]]); err != nil || got != refs[0] {
			t.Errorf("AttemptForToken(token of %+v) = %+v, %v", refs[0], got, err)
		}
	}
	if len(l.claims) != len(ids) {
		t.Errorf("%d jobs claimed, want %d", len(l.claims), len(ids))
	}
}

func TestReplicasNeverDoubleClaim(t *testing.T) {
	t.Parallel()
	const jobs, claimersPerReplica = 500, 8
	schema := newSchema(t)
	replicas := []*postgres.Store{
		open(t, dsn(), schema, postgres.Options{MaxConns: claimersPerReplica}),
		open(t, dsn(), schema, postgres.Options{MaxConns: claimersPerReplica}),
	}
	var ids []int64
	for i := range jobs {
		ids = append(ids, submit(t, replicas[i%2], spec("default", i%3)).ID)
	}
	l := newLedger()
	var wg sync.WaitGroup
	for r, s := range replicas {
		for i := range claimersPerReplica {
			wg.Go(func() { l.claimAll(t.Context(), s, fmt.Sprintf("r%d-e%d", r, i)) })
		}
	}
	wg.Wait()
	for _, err := range l.errs {
		t.Errorf("Claim: %v", err)
	}
	l.check(t, replicas[0], ids)
}

// terminate ends the server sessions of an application name, as an operator
// or a failing network would, and returns how many there were.
func terminate(t *testing.T, appName, extra string) int {
	t.Helper()
	var n int
	err := adminPool(t).QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()`+extra, appName).Scan(&n)
	if err != nil {
		t.Errorf("terminating sessions: %v", err)
	}
	return n
}

func TestClaimsSurviveKilledConnections(t *testing.T) {
	t.Parallel()
	const jobs, claimers = 300, 8
	schema := newSchema(t)
	app := randomName("airlock_kill_")
	var logs lockedBuffer
	s := open(t, withParam(dsn(), "application_name", app), schema, postgres.Options{MaxConns: claimers,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	var ids []int64
	for range jobs {
		ids = append(ids, submit(t, s, spec("default", 0)).ID)
	}

	l := newLedger()
	var wg sync.WaitGroup
	for i := range claimers {
		wg.Go(func() { l.claimAll(t.Context(), s, fmt.Sprintf("e%d", i)) })
	}
	claimersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(claimersDone)
	}()
	// Kill every session of the store every few milliseconds for a while
	// (for ever would starve the claims: a new session needs time to do
	// anything), then let the claimers finish.
	kills := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
kill:
	for range 60 {
		select {
		case <-claimersDone:
			break kill
		case <-tick.C:
			kills += terminate(t, app, "")
		}
	}
	<-claimersDone
	// Claims cut short put their jobs back, possibly after a claimer had
	// found its queue (momentarily) empty: claim what is left, unharmed.
	swept := l.claimAll(t.Context(), s, "sweeper")
	out := logs.String()
	retried := strings.Count(out, `msg="retrying claim"`)
	uncertain := strings.Count(out, `msg="retrying claim" try=1 uncertain=true`)
	found := strings.Count(out, "found the claim whose commit was interrupted")
	t.Logf("%d sessions terminated; %d claim tries retried (%d first tries of unknown outcome, %d of them found committed); "+
		"%d claims failed; the sweeper claimed %d", kills, retried, uncertain, found, len(l.errs), swept)
	for _, err := range l.errs {
		if strings.Contains(err.Error(), "outcome unknown") {
			t.Errorf("Claim: %v", err)
		}
	}
	if kills == 0 || retried == 0 {
		t.Errorf("%d sessions terminated, %d claims retried: the test proved nothing", kills, retried)
	}
	l.check(t, s, ids)
}

func TestClaimKilledBeforeCommitClaimsAgain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	schema := newSchema(t)
	app := randomName("airlock_block_")
	var logs lockedBuffer
	s := open(t, withParam(dsn(), "application_name", app), schema,
		postgres.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	j := submit(t, s, spec("default", 0))
	other := submit(t, s, spec("default", 0))
	// The claim will block on the executor's row, which an admin
	// transaction holds, after it has started the job and inserted the
	// attempt: a claim in the middle of its statement.
	if _, err := s.Heartbeat(ctx, queue.HeartbeatParams{Executor: queue.ExecutorInfo{Name: "blocked"}, Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	holder, err := adminPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(ctx, `SELECT 1 FROM `+pgx.Identifier{schema, "executors"}.Sanitize()+` WHERE name = 'blocked' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   *queue.Claim
		err error
	}
	done := make(chan result, 1)
	tok := token(randomName("blocked"))
	go func() {
		c, err := s.Claim(ctx, claimParams("blocked", tok))
		done <- result{c, err}
	}()
	waitForSession(t, app, ` AND wait_event_type = 'Lock'`)
	if n := terminate(t, app, ` AND wait_event_type = 'Lock'`); n != 1 {
		t.Fatalf("terminated %d blocked sessions, want 1", n)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.c == nil {
		t.Fatalf("Claim whose session was killed = %v, %v; want a job", r.c, r.err)
	}
	if r.c.Job.ID != j.ID || r.c.Attempt != 1 {
		t.Errorf("Claim = job %d attempt %d, want job %d attempt 1", r.c.Job.ID, r.c.Attempt, j.ID)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].Executor != "blocked" {
		t.Errorf("job %d has attempts %+v, want one by executor blocked", j.ID, got.Attempts)
	}
	if o, err := s.Get(ctx, other.ID); err != nil || o.State != job.StateQueued {
		t.Errorf("the other job = %+v, %v; want it still queued", o, err)
	}
	if strings.Contains(logs.String(), "found the claim whose commit was interrupted") {
		t.Errorf("the killed claim was found committed, but it was killed before its commit:\n%s", logs.String())
	}
}

// waitForSession polls until the application has a session matching extra.
func waitForSession(t *testing.T, appName, extra string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := adminPool(t).QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1`+extra, appName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session of %s%s after 10s", appName, extra)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cutProxy forwards connections from a Unix socket in a directory of its own
// to the PostgreSQL server, and cuts a connection where an armed trigger
// says: the client loses its connection at a moment the test chose, while
// the server goes on with (or has finished) what it was asked.
type cutProxy struct {
	dir           string // holds the proxy's socket, named as the server's
	port          uint16 // the server's, part of the socket name
	network, addr string // of the server
	ln            net.Listener
	wg            sync.WaitGroup
	done          chan struct{} // closed by close

	mu      sync.Mutex
	trigger *trigger // armed, or nil
	conns   []net.Conn
	cuts    atomic.Int32

	// dropCancels makes the proxy drop the cancel requests that a client
	// sends (on a new connection) for a statement whose connection broke,
	// as a network that cut the first connection may well do.
	dropCancels    atomic.Bool
	cancelsDropped atomic.Int32
}

// trigger says where to cut a connection: at the first bytes that contain
// marker, going one way.
type trigger struct {
	marker []byte
	// fromClient cuts the connection once release is closed (at once if it
	// is nil), after forwarding a request with the marker and whatever
	// follows it meanwhile. Otherwise the proxy cuts instead of forwarding a
	// reply with the marker.
	fromClient bool
	release    chan struct{}
	reached    chan struct{} // closed when the marker passes
}

func startCutProxy(t *testing.T) *cutProxy {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn())
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{network: "tcp", addr: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), port: cfg.Port,
		done: make(chan struct{})}
	if strings.HasPrefix(cfg.Host, "/") {
		p.network, p.addr = "unix", filepath.Join(cfg.Host, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))
	}
	if p.dir, err = os.MkdirTemp("", "pgproxy"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(p.dir) })
	if p.ln, err = net.Listen("unix", filepath.Join(p.dir, fmt.Sprintf(".s.PGSQL.%d", cfg.Port))); err != nil {
		t.Fatal(err)
	}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

// dsn is the test DSN pointed at the proxy.
func (p *cutProxy) dsn() string {
	return withParam(withParam(withParam(dsn(), "host", p.dir), "port", fmt.Sprint(p.port)), "sslmode", "disable")
}

// arm sets the trigger for the next cut and returns it.
func (p *cutProxy) arm(marker string, fromClient bool, release chan struct{}) *trigger {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger = &trigger{marker: []byte(marker), fromClient: fromClient, release: release, reached: make(chan struct{})}
	return p.trigger
}

// fire disarms and returns the trigger if data, going the given way, sets
// it off.
func (p *cutProxy) fire(fromClient bool, data []byte) *trigger {
	p.mu.Lock()
	defer p.mu.Unlock()
	tr := p.trigger
	if tr == nil || tr.fromClient != fromClient || !bytes.Contains(data, tr.marker) {
		return nil
	}
	p.trigger = nil
	p.cuts.Add(1)
	close(tr.reached)
	return tr
}

func (p *cutProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(client)
		p.wg.Go(func() { p.handle(client) })
	}
}

func (p *cutProxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

// cancelRequestCode opens a CancelRequest, the first message of a
// connection made only to cancel another's statement.
const cancelRequestCode = 80877102

func (p *cutProxy) handle(client net.Conn) {
	var head [8]byte // a startup message's length and code
	if _, err := io.ReadFull(client, head[:]); err != nil {
		client.Close()
		return
	}
	if p.dropCancels.Load() && binary.BigEndian.Uint32(head[:4]) == 16 && binary.BigEndian.Uint32(head[4:]) == cancelRequestCode {
		p.cancelsDropped.Add(1)
		client.Close()
		return
	}
	server, err := net.Dial(p.network, p.addr)
	if err != nil {
		client.Close()
		return
	}
	p.track(server)
	if _, err := server.Write(head[:]); err != nil {
		client.Close()
		server.Close()
		return
	}
	p.wg.Go(func() { p.forward(server, client, true) })
	p.forward(client, server, false)
}

// forward copies from src to dst until either fails or a trigger cuts
// both.
func (p *cutProxy) forward(dst, src net.Conn, fromClient bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	var seen []byte // the last bytes, for a marker split across reads
	for {
		n, err := src.Read(buf)
		if n > 0 {
			seen = append(seen, buf[:n]...)
			tr := p.fire(fromClient, seen)
			if tr != nil && !fromClient {
				return // the reply is lost
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
			if tr != nil {
				// Go on forwarding (the rest of the request may follow)
				// until the release; closing the connections ends this loop.
				p.wg.Go(func() {
					if tr.release != nil {
						select {
						case <-tr.release:
						case <-p.done:
						}
					}
					src.Close()
					dst.Close()
				})
			}
			seen = seen[max(0, len(seen)-256):]
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) close() {
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func TestClaimWhoseReplyIsLostIsFoundByItsToken(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	proxy := startCutProxy(t)
	var logs lockedBuffer
	s := open(t, proxy.dsn(), newSchema(t), postgres.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	marker := randomName("cut-here-")
	sp := spec("default", 10)
	sp.Steps[0].Name = marker
	j := submit(t, s, sp)
	other := submit(t, s, spec("default", 0))

	// The claim's reply carries the job's spec, so the proxy cuts the
	// connection once the server has committed the claim and is sending it.
	proxy.arm(marker, false, nil)
	tok := token(randomName("lost"))
	c, err := s.Claim(ctx, claimParams("e1", tok))
	if err != nil || c == nil {
		t.Fatalf("Claim whose reply was lost = %v, %v; want a job", c, err)
	}
	if got := proxy.cuts.Load(); got != 1 {
		t.Fatalf("proxy cut %d replies, want 1", got)
	}
	if c.Job.ID != j.ID || c.Attempt != 1 || c.Job.State != job.StateRunning {
		t.Errorf("Claim = job %d attempt %d (%s), want job %d attempt 1, running", c.Job.ID, c.Attempt, c.Job.State, j.ID)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Attempts) != 1 {
		t.Errorf("job %d has %d attempts, want 1", j.ID, len(got.Attempts))
	}
	if ref, err := s.AttemptForToken(ctx, tok); err != nil || ref != (queue.AttemptRef{JobID: j.ID, Attempt: 1}) {
		t.Errorf("AttemptForToken = %+v, %v; want job %d attempt 1", ref, err, j.ID)
	}
	if o, err := s.Get(ctx, other.ID); err != nil || o.State != job.StateQueued {
		t.Errorf("the other job = %+v, %v; want it still queued: the retry must not claim a second job", o, err)
	}
	if !strings.Contains(logs.String(), "found the claim whose commit was interrupted") {
		t.Errorf("the store did not report finding the interrupted claim:\n%s", logs.String())
	}
}

func TestClaimOutlivingItsConnectionIsFenced(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	proxy := startCutProxy(t)
	schema := newSchema(t)
	app := randomName("airlock_fence_")
	var logs lockedBuffer
	s := open(t, withParam(proxy.dsn(), "application_name", app), schema,
		postgres.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	j := submit(t, s, spec("default", 0))

	// The claim blocks on its executor's row, which an admin transaction
	// holds, after it has locked the job; then the client loses the
	// connection. The server neither knows nor cares: released, the
	// statement would commit the claim for a client that is gone, and a
	// retry meanwhile would find neither the attempt nor a job to claim.
	executor := randomName("fence-")
	if _, err := s.Heartbeat(ctx, queue.HeartbeatParams{Executor: queue.ExecutorInfo{Name: executor}, Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	holder, err := adminPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(ctx, `SELECT 1 FROM `+pgx.Identifier{schema, "executors"}.Sanitize()+` WHERE name = $1 FOR UPDATE`, executor); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	proxy.dropCancels.Store(true)
	tr := proxy.arm(executor, true, release)
	type result struct {
		c   *queue.Claim
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := s.Claim(ctx, claimParams(executor, token(randomName("fence"))))
		done <- result{c, err}
	}()
	<-tr.reached
	blocked := ` AND wait_event_type = 'Lock'`
	waitForSession(t, app, blocked)
	var first int32
	if err := adminPool(t).QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1`+blocked, app).Scan(&first); err != nil {
		t.Fatal(err)
	}
	close(release) // the proxy cuts the connection

	// The store ends the blocked session before it looks again; its next
	// claim blocks in turn, in a session of its own.
	waitForSession(t, app, blocked+fmt.Sprintf(" AND pid <> %d", first))
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.c == nil {
		t.Fatalf("Claim = %v, %v; want a job", r.c, r.err)
	}
	if r.c.Job.ID != j.ID || r.c.Attempt != 1 {
		t.Errorf("Claim = job %d attempt %d, want job %d attempt 1", r.c.Job.ID, r.c.Attempt, j.ID)
	}
	if got, err := s.Get(ctx, j.ID); err != nil || len(got.Attempts) != 1 {
		t.Errorf("Get = %+v, %v; want one attempt", got, err)
	}
	if !strings.Contains(logs.String(), "terminated the server session of an interrupted transaction") {
		t.Errorf("the store did not report ending the interrupted session:\n%s", logs.String())
	}
	t.Logf("cancel requests dropped: %d", proxy.cancelsDropped.Load())
}

// receiveUntil reads ch until want arrives, failing after a deadline or if
// ch closes; it returns what came before want.
func receiveUntil(t *testing.T, ch <-chan string, want string) []string {
	t.Helper()
	var before []string
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case p, ok := <-ch:
			if !ok {
				t.Fatalf("notification channel closed while waiting for %q", want)
			}
			if p == want {
				return before
			}
			before = append(before, p)
		case <-deadline.C:
			t.Fatalf("no notification %q within 10s (got %q)", want, before)
		}
	}
}

func TestMutationsNotify(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := queuetest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	s := open(t, dsn(), newSchema(t), postgres.Options{Now: clock.Now})
	claimable, err := s.Listen(ctx, postgres.ChannelClaimable)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := s.Listen(ctx, postgres.ChannelJob)
	if err != nil {
		t.Fatal(err)
	}
	// Queue names no other test uses: channels are shared by the database.
	q := randomName("q_")
	id := func(j *queue.Job) string { return fmt.Sprint(j.ID) }

	j := submit(t, s, spec(q, 0))
	receiveUntil(t, claimable, q)

	c, err := s.Claim(ctx, claimParams("e1", token(randomName("n")), q))
	if err != nil || c == nil {
		t.Fatalf("Claim = %v, %v", c, err)
	}
	ref := queue.AttemptRef{JobID: j.ID, Attempt: c.Attempt}
	if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Data: []byte("hello\n")}); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, jobs, id(j))

	// An errored attempt with attempts left re-queues the job.
	if _, err := s.Finish(ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeErrored}); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, jobs, id(j))
	receiveUntil(t, claimable, q)

	// So does an expired lease.
	if _, err := s.Claim(ctx, claimParams("e1", token(randomName("n")), q)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if r, err := s.ReapExpired(ctx); err != nil || len(r) != 1 || r[0].NewState != job.StateErrored {
		t.Fatalf("ReapExpired = %+v, %v; want the job errored", r, err)
	}
	receiveUntil(t, jobs, id(j))

	if _, err := s.Retry(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, claimable, q)
	c, err = s.Claim(ctx, claimParams("e1", token(randomName("n")), q))
	if err != nil || c == nil {
		t.Fatalf("Claim = %v, %v", c, err)
	}
	clock.Advance(2 * time.Minute)
	if r, err := s.ReapExpired(ctx); err != nil || len(r) != 1 || r[0].NewState != job.StateQueued {
		t.Fatalf("ReapExpired = %+v, %v; want the job re-queued", r, err)
	}
	receiveUntil(t, claimable, q)

	if _, err := s.Cancel(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, jobs, id(j))

	// A mutation that fails notifies nothing: the Retry of a queued job
	// would announce q, and the marker sent after it must come first.
	queued := submit(t, s, spec(q, 0))
	receiveUntil(t, claimable, q)
	if _, err := s.Retry(ctx, queued.ID); !errors.Is(err, queue.ErrInvalidState) {
		t.Fatalf("Retry of a queued job: %v, want ErrInvalidState", err)
	}
	marker := randomName("marker_")
	if err := s.Notify(ctx, postgres.ChannelClaimable, marker); err != nil {
		t.Fatal(err)
	}
	for _, p := range receiveUntil(t, claimable, marker) {
		if p == q {
			t.Errorf("a failed Retry notified %s", postgres.ChannelClaimable)
		}
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	app := randomName("airlock_listen_")
	s := open(t, withParam(dsn(), "application_name", app), newSchema(t), postgres.Options{})
	channel := randomName("chan_")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch, err := s.Listen(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("delivers", func(t *testing.T) {
		for _, p := range []string{"a", "b"} {
			if err := s.Notify(t.Context(), channel, p); err != nil {
				t.Fatal(err)
			}
		}
		if before := receiveUntil(t, ch, "b"); !cmp.Equal(before, []string{"a"}) {
			t.Errorf("before b came %q, want a", before)
		}
	})

	t.Run("listens again after the connection is lost", func(t *testing.T) {
		if n := terminate(t, app, ` AND query LIKE 'LISTEN%'`); n != 1 {
			t.Fatalf("terminated %d listening sessions, want 1", n)
		}
		receiveUntil(t, ch, "") // maybe missed something: re-check
		waitForSession(t, app, ` AND query LIKE 'LISTEN%'`)
		if err := s.Notify(t.Context(), channel, "after"); err != nil {
			t.Fatal(err)
		}
		receiveUntil(t, ch, "after")
	})

	t.Run("closes the channel when the context ends", func(t *testing.T) {
		cancel()
		waitClosed(t, ch)
	})

	t.Run("closes the channel when the store closes", func(t *testing.T) {
		s2 := open(t, dsn(), newSchema(t), postgres.Options{})
		ch2, err := s2.Listen(t.Context(), channel)
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
		waitClosed(t, ch2)
		if _, err := s2.Listen(t.Context(), channel); err == nil {
			t.Error("Listen on a closed store succeeded")
		}
	})
}

// waitClosed drains ch until it is closed, failing after a deadline.
func waitClosed(t *testing.T, ch <-chan string) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline.C:
			t.Fatal("notification channel still open 10s after it should have closed")
		}
	}
}
