package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/executor"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/sandbox"
)

// BenchmarkClaimFinishThroughput measures how many jobs per second go through
// claim and finish over the API, on each store kind (stores_test.go). Each
// iteration queues -throughput.jobs no-op jobs straight into the store
// (untimed; for postgres-x2 through the first replica's store), then C
// claimers loop Claim → Finish(succeeded) through the real API client over
// loopback until the queue is empty, claimer i talking to replica i mod the
// number of replicas; the time runs from the first claim to the last finish.
//
//	go test -run '^$' -bench 'ClaimFinishThroughput/store=postgres/claimers=8' -benchtime 1x ./bench/
func BenchmarkClaimFinishThroughput(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run("store="+kind, func(b *testing.B) {
			for _, claimers := range []int{8, 32} {
				b.Run(fmt.Sprintf("claimers=%d", claimers), func(b *testing.B) {
					claimFinishThroughput(b, kind, claimers)
				})
			}
		})
	}
}

func claimFinishThroughput(b *testing.B, kind string, claimers int) {
	env := startCoordinator(b, kind)
	execs := make([]*api.Client, len(env.replicas))
	for i, r := range env.replicas {
		execs[i] = r.exec
	}
	ctx := context.Background()
	n := *throughputJobs
	var elapsed, cpu, serverCPU time.Duration
	serverMeasured := env.pg != nil
	jobs := 0
	for b.Loop() {
		b.StopTimer()
		fill(ctx, b, env.store, n)
		b.StartTimer()
		srv0 := env.serverCPU(b)
		cpu0 := cpuTime(b)
		elapsed += claimAll(ctx, b, execs, claimers, n)
		cpu += cpuTime(b) - cpu0
		if srv1 := env.serverCPU(b); srv0 != nil && srv1 != nil {
			serverCPU += cpuSince(srv0, srv1)
		} else {
			serverMeasured = false
		}
		jobs += n
	}
	reportThroughput(b, jobs, elapsed, cpu)
	if serverMeasured {
		// The PostgreSQL backends' share, on top of cpu-us/job and cores.
		b.ReportMetric(float64(serverCPU)/float64(time.Microsecond)/float64(jobs), "pg-cpu-us/job")
		b.ReportMetric(serverCPU.Seconds()/elapsed.Seconds(), "pg-cores")
	}
}

// claimAll runs claimers goroutines that claim and finish jobs until n have
// been finished, claimer i through execs[i mod len(execs)], and returns the
// time from the start to the n-th finish. The first error stops every
// claimer.
func claimAll(ctx context.Context, b *testing.B, execs []*api.Client, claimers, n int) time.Duration {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		finished atomic.Int64
		last     atomic.Int64 // when the n-th finish returned, Unix ns
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		if !isCanceled(ctx, err) {
			b.Error(err)
		}
		cancel()
	}
	start := time.Now()
	for i := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exec := execs[i%len(execs)]
			info := queue.ExecutorInfo{Name: fmt.Sprintf("bench-%d", i), MaxJobs: 1}
			for finished.Load() < int64(n) && ctx.Err() == nil {
				// A short wait: once the queue is empty, the claims still in
				// flight come back empty soon after the last job is taken.
				c, err := exec.Claim(ctx, api.ClaimRequest{Executor: info, Queues: []string{benchQueue}, WaitMS: 100})
				if err != nil {
					fail(err)
					return
				}
				if c == nil {
					continue
				}
				if _, err := exec.Finish(ctx, c.Token, refOf(c), succeeded); err != nil {
					fail(err)
					return
				}
				if finished.Add(1) == int64(n) {
					last.Store(time.Now().UnixNano())
				}
			}
		}()
	}
	wg.Wait()
	if got := finished.Load(); got != int64(n) {
		b.Fatalf("finished %d jobs, want %d", got, n)
	}
	return time.Unix(0, last.Load()).Sub(start)
}

// noopRuntime is a sandbox.Runtime whose steps succeed at once without
// running anything: what is left is the executor's own work per job.
type noopRuntime struct{ dir string }

func (r noopRuntime) Name() string { return "noop" }

func (r noopRuntime) Open(ctx context.Context, p sandbox.OpenParams) (sandbox.Sandbox, error) {
	return noopSandbox(r), nil
}

type noopSandbox struct{ dir string }

func (s noopSandbox) WorkDir() string { return s.dir }

func (s noopSandbox) Run(ctx context.Context, st sandbox.Step) (sandbox.Result, error) {
	return sandbox.Result{ExitCode: 0}, nil
}

func (s noopSandbox) Close(ctx context.Context) error { return nil }

// countingCoordinator is the executor's coordinator client, counting the
// finishes the coordinator acknowledged and signalling when the count
// reaches want. It also times the claims that returned a job: the executor
// has one claim in flight at a time, so their latency bounds its rate.
type countingCoordinator struct {
	*api.Client
	want     int64
	finished atomic.Int64
	done     chan struct{}

	claims    atomic.Int64
	claimTime atomic.Int64 // nanoseconds, summed
}

func (c *countingCoordinator) Claim(ctx context.Context, req api.ClaimRequest) (*api.ClaimResponse, error) {
	start := time.Now()
	cl, err := c.Client.Claim(ctx, req)
	if cl != nil {
		c.claims.Add(1)
		c.claimTime.Add(int64(time.Since(start)))
	}
	return cl, err
}

func (c *countingCoordinator) Finish(ctx context.Context, token string, ref queue.AttemptRef, req api.FinishRequest) (*api.Job, error) {
	j, err := c.Client.Finish(ctx, token, ref, req)
	if err == nil && c.finished.Add(1) == c.want {
		close(c.done)
	}
	return j, err
}

var _ executor.Coordinator = (*countingCoordinator)(nil)

// BenchmarkExecutorNoopThroughput measures the real executor end to end with
// a runtime that does nothing: each job is claimed, gets its sandbox opened,
// its header and footer lines shipped as a log chunk, and is finished. Each
// iteration queues -executor.jobs jobs straight into the store (untimed),
// starts an executor with MaxJobs 16 and times until the last finish is
// acknowledged.
//
//	go test -run '^$' -bench ExecutorNoopThroughput -benchtime 1x ./bench/
func BenchmarkExecutorNoopThroughput(b *testing.B) {
	const maxJobs = 16
	env := startCoordinator(b, storeSQLite)
	ctx := context.Background()
	n := *executorJobs
	var elapsed, cpu, claimTime time.Duration
	jobs, claims := 0, int64(0)
	for b.Loop() {
		b.StopTimer()
		fill(ctx, b, env.store, n)
		cc := &countingCoordinator{Client: env.exec, want: int64(n), done: make(chan struct{})}
		ex, err := executor.New(executor.Config{
			Name:    "bench-executor",
			Queues:  []string{benchQueue},
			MaxJobs: maxJobs,
			Runtime: noopRuntime{dir: b.TempDir()},
			Logger:  discardLogger(),
		}, cc)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { // after a failure; a no-op once Stop below has run
			stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ex.StopAndCancel(stopCtx)
		})
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime(b)
		if err := ex.Start(ctx); err != nil {
			b.Fatal(err)
		}
		select {
		case <-cc.done:
		case <-time.After(10 * time.Minute):
			b.Fatalf("%d of %d jobs finished after 10 minutes", cc.finished.Load(), n)
		}
		elapsed += time.Since(start)
		cpu += cpuTime(b) - cpu0
		jobs += n
		claims += cc.claims.Load()
		claimTime += time.Duration(cc.claimTime.Load())
		b.StopTimer()
		stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
		err = ex.Stop(stopCtx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportThroughput(b, jobs, elapsed, cpu)
	b.ReportMetric(float64(claimTime)/float64(time.Millisecond)/float64(claims), "claim-ms")
}

// reportThroughput reports jobs/s, and the CPU time this process (coordinator,
// store and clients or executor together) spent per job and in all, as
// cores kept busy: on this 2-core machine a figure well under 2 means the
// work waits on something other than the CPU.
func reportThroughput(b *testing.B, jobs int, elapsed, cpu time.Duration) {
	b.ReportMetric(float64(jobs)/elapsed.Seconds(), "jobs/s")
	b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(jobs), "cpu-us/job")
	b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores")
}
