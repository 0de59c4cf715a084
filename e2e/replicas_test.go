package e2e

// Several coordinator replicas on one PostgreSQL database, as users run them
// behind a load balancer: every job runs exactly once however the executors
// and clients are spread over the replicas, a replica killed mid-run costs
// nothing but the connections it held, and what happens on one replica
// (a submit, a log line, a cancel) is seen through every other.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/testenv"
)

// newDatabase creates an empty database for one test, dropped when it ends,
// and returns its postgres:// URL.
func newDatabase(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(testenv.PostgresDSN())
	if err != nil {
		t.Fatalf("AIRLOCK_TEST_POSTGRES: %v", err)
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		testenv.Missing(t, "PostgreSQL", err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "airlock_e2e_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close(ctx)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close(ctx)
	})
	u := url.URL{Scheme: "postgres", User: url.User(cfg.User), Path: "/" + name}
	q := url.Values{}
	if strings.HasPrefix(cfg.Host, "/") {
		q.Set("host", cfg.Host)
	} else {
		u.Host = net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port))
	}
	q.Set("port", fmt.Sprint(cfg.Port))
	if cfg.Password != "" {
		u.User = url.UserPassword(cfg.User, cfg.Password)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// replicaSet is coordinator replicas sharing one database and one blob
// directory, behind a load balancer.
type replicaSet struct {
	t       *testing.T
	store   string
	blobDir string
	opts    clusterOpts
	coords  []*proc
	urls    []string
	lb      *loadBalancer
	nexec   int
}

func newReplicaSet(t *testing.T, n int, opts clusterOpts) *replicaSet {
	t.Helper()
	if opts.lease == 0 {
		opts.lease = 10 * time.Second
	}
	if opts.heartbeat == 0 {
		opts.heartbeat = 500 * time.Millisecond
	}
	rs := &replicaSet{t: t, store: newDatabase(t), blobDir: t.TempDir(), opts: opts}
	rs.coords = make([]*proc, n)
	rs.urls = make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { rs.startReplica(i, "127.0.0.1:0") }) // together: migrations race, under the lock
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	rs.lb = newLoadBalancer(t, rs.urls)
	return rs
}

func (rs *replicaSet) startReplica(i int, addr string) {
	rs.t.Helper()
	p := start(rs.t, fmt.Sprintf("coordinator-%d", i), []string{
		"AIRLOCK_CLIENT_TOKENS=" + clientToken,
		"AIRLOCK_EXECUTOR_TOKENS=" + executorToken,
	}, "coordinator", "--addr", addr, "--data-dir", rs.t.TempDir(), "--blob-dir", rs.blobDir,
		"--store", rs.store, "--lease", rs.opts.lease.String(),
		"--heartbeat-interval", rs.opts.heartbeat.String(), "--claim-wait", "5s")
	rs.coords[i] = p
	rs.urls[i] = p.waitOutput(servingRE, 30*time.Second)
}

// client talks to replica i; -1 is the load balancer.
func (rs *replicaSet) client(i int) *api.Client {
	return api.NewClient(rs.url(i), clientToken)
}

func (rs *replicaSet) url(i int) string {
	if i < 0 {
		return rs.lb.url
	}
	return rs.urls[i]
}

// startExecutor starts a shell executor talking to replica i (-1: through the
// load balancer).
func (rs *replicaSet) startExecutor(i, maxJobs int) *proc {
	rs.t.Helper()
	rs.nexec++
	name := fmt.Sprintf("executor-%d", rs.nexec)
	return start(rs.t, name, []string{"AIRLOCK_EXECUTOR_TOKEN=" + executorToken},
		"executor", "--url", rs.url(i), "--runtime", "shell", "--name", name,
		"--work-dir", filepath.Join(rs.t.TempDir(), name), "--max-jobs", fmt.Sprint(maxJobs))
}

// waitAllDone waits until no job is queued or running.
func (rs *replicaSet) waitAllDone(d time.Duration) {
	rs.t.Helper()
	deadline := time.Now().Add(d)
	for {
		list, err := rs.client(len(rs.coords)-1).List(context.Background(), api.ListOptions{States: []job.State{job.StateQueued, job.StateRunning}, Limit: 1})
		if err == nil && len(list.Jobs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			rs.t.Fatalf("jobs still pending after %v (%v)", d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// loadBalancer spreads TCP connections over backends round-robin, skipping
// the ones that refuse, as a load balancer with health checks does.
type loadBalancer struct {
	url  string
	next atomic.Uint64
}

func newLoadBalancer(t *testing.T, backends []string) *loadBalancer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &loadBalancer{url: "http://" + l.Addr().String()}
	addrs := make([]string, len(backends))
	for i, b := range backends {
		addrs[i] = strings.TrimPrefix(b, "http://")
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer in.Close()
				first := lb.next.Add(1)
				var out net.Conn
				for k := range uint64(len(addrs)) {
					if out, err = net.Dial("tcp", addrs[(first+k)%uint64(len(addrs))]); err == nil {
						break
					}
				}
				if out == nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			})
		}
	})
	return lb
}

// submitMany submits n jobs running run, spread round-robin over the
// replicas, and returns their IDs.
func (rs *replicaSet) submitMany(n int, run string) []int64 {
	rs.t.Helper()
	ids := make([]int64, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			j, err := rs.client(i%len(rs.urls)).Submit(context.Background(), shellSpec(run))
			if err != nil {
				errs <- err
				return
			}
			ids[i] = j.ID
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		rs.t.Fatalf("submitting: %v", err)
	}
	return ids
}

// checkRanOnce checks that every job succeeded after one attempt and that
// the runs file holds each job ID exactly once.
func (rs *replicaSet) checkRanOnce(ids []int64, runs string) {
	rs.t.Helper()
	counts := map[string]int{}
	for _, l := range lines(rs.t, runs) {
		counts[l]++
	}
	var dup []string
	for id, n := range counts {
		if n != 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", id, n))
		}
	}
	sort.Strings(dup)
	if len(dup) > 0 {
		rs.t.Errorf("jobs ran more than once: %v", dup)
	}
	if len(counts) != len(ids) {
		rs.t.Errorf("%d distinct jobs ran, want %d", len(counts), len(ids))
	}
	bad := 0
	live := 0
	for i, p := range rs.coords {
		select {
		case <-p.done:
		default:
			live = i
		}
	}
	for _, id := range ids {
		j, err := rs.client(live).Get(context.Background(), id)
		if err != nil {
			rs.t.Fatal(err)
		}
		if j.State != job.StateSucceeded || j.Attempt != 1 {
			if bad++; bad <= 10 {
				rs.t.Errorf("job %d: %s/%s after %d attempts, want succeeded after 1", id, j.State, j.Reason, j.Attempt)
			}
		}
	}
}

func TestTwoAndThreeReplicasRun2000JobsEachExactlyOnce(t *testing.T) {
	t.Parallel()
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("replicas=%d", n), func(t *testing.T) {
			rs := newReplicaSet(t, n, clusterOpts{})
			runs := filepath.Join(t.TempDir(), "runs")
			// Executors on every replica, and one through the load balancer.
			for i := range n {
				rs.startExecutor(i, 8)
			}
			rs.startExecutor(-1, 8)
			ids := rs.submitMany(2000, fmt.Sprintf(`echo "$AIRLOCK_JOB_ID" >> %s`, runs))
			rs.waitAllDone(5 * time.Minute)
			rs.checkRanOnce(ids, runs)
		})
	}
}

func TestAKilledReplicasExecutorsFailOverAndEveryJobFinishesOnce(t *testing.T) {
	t.Parallel()
	rs := newReplicaSet(t, 2, clusterOpts{lease: 15 * time.Second, heartbeat: 300 * time.Millisecond})
	runs := filepath.Join(t.TempDir(), "runs")
	// Every executor goes through the load balancer, so about half its
	// connections reach the replica that dies.
	for range 3 {
		rs.startExecutor(-1, 6)
	}
	ids := rs.submitMany(300, fmt.Sprintf(`sleep 0.2; echo "$AIRLOCK_JOB_ID" >> %s`, runs))
	// Kill replica 0 once a third of the jobs ran.
	deadline := time.Now().Add(2 * time.Minute)
	for len(lines(t, runs)) < 100 {
		if time.Now().After(deadline) {
			t.Fatal("100 jobs did not run within 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rs.coords[0].kill()
	rs.waitAllDone(3 * time.Minute)
	rs.checkRanOnce(ids, runs)
}

func TestWhatHappensOnOneReplicaIsSeenThroughTheOther(t *testing.T) {
	t.Parallel()
	const heartbeat = 500 * time.Millisecond
	rs := newReplicaSet(t, 2, clusterOpts{heartbeat: heartbeat})
	ctx := context.Background()
	a, b := rs.client(0), rs.client(1)

	// A claimer long-polling on B wakes as soon as a job is submitted on A
	// (the fallback poll is 5 s; the job must not wait for it).
	exec := rs.startExecutor(1, 1)
	exec.waitOutput(regexp.MustCompile(`executor starting`), 30*time.Second)
	time.Sleep(time.Second) // the executor is parked in a claim on B
	start := time.Now()
	j, err := a.Submit(ctx, shellSpec(`echo first line; echo READY; sleep 600`))
	if err != nil {
		t.Fatal(err)
	}

	// Its log, appended through B, streams to a follower on A as it comes.
	pr, pw := io.Pipe()
	go func() {
		_, err := a.Logs(ctx, j.ID, api.LogOptions{Follow: true}, pw)
		pw.CloseWithError(err)
	}()
	buf := make([]byte, 0, 4096)
	for !strings.Contains(string(buf), "READY") {
		chunk := make([]byte, 1024)
		n, err := pr.Read(chunk)
		if err != nil {
			t.Fatalf("following on replica 0: %v (got %q)", err, buf)
		}
		buf = append(buf, chunk[:n]...)
	}
	if pickup := time.Since(start); pickup > 4*time.Second {
		t.Errorf("the job submitted on replica 0 reached the executor on replica 1 after %v: it waited for the fallback poll", pickup)
	}
	if !strings.Contains(string(buf), "first line") {
		t.Errorf("the follower on replica 0 got %q", buf)
	}

	// Cancelled on A, the executor on B stops it within a heartbeat or so.
	start = time.Now()
	if _, err := a.Cancel(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := b.Get(ctx, j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State.Terminal() {
			if got.State != job.StateCanceled {
				t.Errorf("job ended %s/%s, want canceled", got.State, got.Reason)
			}
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("the cancellation did not reach the executor within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if took := time.Since(start); took > 2*heartbeat+2*time.Second {
		t.Errorf("cancel on replica 0 took %v to stop the job on replica 1's executor (heartbeat %v)", took, heartbeat)
	}
	io.Copy(io.Discard, pr) // the follow ends with the job
}

func TestMigrateStoreMovesASQLiteDeploymentToPostgres(t *testing.T) {
	t.Parallel()
	pg := newDatabase(t)
	c := newCluster(t, clusterOpts{})
	exec := c.startExecutor(1)
	ctx := context.Background()
	first := shellSpec(`mkdir out; echo kept > out/a.txt; echo the log of a finished job`)
	first.Artifacts = []string{"out/*"}
	done := c.submit(first)
	spec := shellSpec(`echo ran after the move`)
	spec.Queue = "later"
	later := c.submit(spec)
	if got := c.waitJob(done.ID, time.Minute); got.State != job.StateSucceeded {
		t.Fatalf("job ended %s", got.State)
	}
	if out, errOut, code := c.cli("repos", "add", "acme/api", "https://git.example.com/acme/api.git"); code != 0 {
		t.Fatalf("repos add: %s%s", out, errOut)
	}
	if err := exec.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.coord.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := c.cli("migrate-store", "--from", filepath.Join(c.dataDir, "airlock.db"), "--to", pg)
	if code != 0 || !strings.Contains(out, "moved 2 jobs (1 attempts") || !strings.Contains(out, "1 repositories") {
		t.Fatalf("migrate-store: exit %d:\n%s%s", code, out, errOut)
	}
	if _, errOut, code := c.cli("migrate-store", "--from", filepath.Join(c.dataDir, "airlock.db"), "--to", pg); code != 2 || !strings.Contains(errOut, "not empty") {
		t.Errorf("a second migrate-store into the same database: exit %d, want 2 saying it is not empty:\n%s", code, errOut)
	}

	// The same deployment on PostgreSQL: the same jobs, logs, artifacts and
	// registrations, and the queued job runs.
	p := start(t, "coordinator-pg", []string{"AIRLOCK_CLIENT_TOKENS=" + clientToken, "AIRLOCK_EXECUTOR_TOKENS=" + executorToken},
		"coordinator", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--blob-dir", filepath.Join(c.dataDir, "blobs"),
		"--store", pg, "--heartbeat-interval", "500ms", "--claim-wait", "5s")
	c.url = p.waitOutput(servingRE, 30*time.Second)
	c.client = api.NewClient(c.url, clientToken)
	if log := c.logOf(done.ID); !strings.Contains(log, "the log of a finished job") {
		t.Errorf("the finished job's log after the move:\n%s", log)
	}
	if list, err := c.client.Artifacts(ctx, done.ID); err != nil || len(list.Artifacts) != 1 {
		t.Errorf("the finished job's artifacts after the move: %+v, %v", list, err)
	}
	if out, _, _ := c.cli("repos", "list"); !strings.Contains(out, "acme/api") {
		t.Errorf("repos list after the move:\n%s", out)
	}
	c.startExecutor(1, "--queues", "later")
	if got := c.waitJob(later.ID, time.Minute); got.State != job.StateSucceeded || !strings.Contains(c.logOf(later.ID), "ran after the move") {
		t.Errorf("the queued job after the move ended %s/%s", got.State, got.Reason)
	}
	next := c.submit(shellSpec("true"))
	if next.ID != later.ID+1 {
		t.Errorf("a new job after the move got ID %d, want %d", next.ID, later.ID+1)
	}
}
