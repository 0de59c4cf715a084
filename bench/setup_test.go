package bench

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/coordinator"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/postgres"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
)

// Scenario sizes. One benchmark iteration runs one whole scenario.
var (
	pickupJobs     = flag.Int("pickup.jobs", 1000, "BenchmarkPickupLatency: measured jobs per iteration (after the warm-up)")
	pickupWarmup   = flag.Int("pickup.warmup", 20, "BenchmarkPickupLatency: unmeasured jobs first, to open connections and warm caches")
	throughputJobs = flag.Int("throughput.jobs", 20000, "BenchmarkClaimFinishThroughput: jobs queued per iteration")
	executorJobs   = flag.Int("executor.jobs", 20000, "BenchmarkExecutorNoopThroughput: jobs queued per iteration")
	logBytes       = flag.Int64("log.bytes", 1_000_000_000, "BenchmarkLogThroughput1GB: bytes the step prints")
	logVerify      = flag.Bool("log.verify", true, "BenchmarkLogThroughput1GB: read the whole stored log back and check every byte")
)

const (
	clientToken   = "bench-client-token-0123456789abcdef"
	executorToken = "bench-executor-token-0123456789abcdef"
	benchQueue    = "bench"
)

// discardLogger formats every Info line like the real binaries do, and throws
// the text away: the cost of logging is measured, the terminal's is not.
func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// inproc is one coordinator, or two replicas sharing a store, serving the
// API on real loopback listeners in this process (see stores_test.go for
// the kinds). The embedded endpoint is the first replica.
type inproc struct {
	endpoint
	replicas []endpoint  // one, or two for postgres-x2
	store    queue.Store // the first replica's: queue jobs straight into it
	pg       *pgBench    // nil for SQLite
}

// endpoint is one coordinator's API.
type endpoint struct {
	url    string
	client *api.Client // client token: submit, get
	exec   *api.Client // executor token: claim, heartbeat (and finish, with a job token)
}

// startCoordinator starts an in-process coordinator over a store of the
// given kind (storeSQLite, storePostgres, storePostgres2) and stops it when
// b ends. The postgres kinds skip b when the server is unreachable.
func startCoordinator(b *testing.B, kind string) *inproc {
	b.Helper()
	env := &inproc{}
	switch kind {
	case storeSQLite:
		store, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "queue.db"), sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		env.store = store
		env.replicas = []endpoint{serve(b, store, nil)}
	case storePostgres, storePostgres2:
		env.pg = newPostgres(b)
		n := 1
		if kind == storePostgres2 {
			n = 2
		}
		for range n {
			store, err := postgres.Open(context.Background(), env.pg.dsn,
				postgres.Options{Schema: env.pg.schema, Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			if env.store == nil {
				env.store = store
			}
			env.replicas = append(env.replicas, serve(b, store, postgres.Peers{Store: store}))
		}
	default:
		b.Fatalf("unknown store kind %q", kind)
	}
	env.endpoint = env.replicas[0]
	return env
}

// serve runs a coordinator over store on a loopback listener until b ends,
// then stops it and closes store.
func serve(b *testing.B, store queue.Store, peers coordinator.Peers) endpoint {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := coordinator.New(coordinator.Config{
		Store:          store,
		Peers:          peers,
		ClientTokens:   []string{clientToken},
		ExecutorTokens: []string{executorToken},
		Logger:         discardLogger(),
	})
	if err != nil {
		cancel()
		store.Close()
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		store.Close()
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		cancel()
		ln.Close()
		store.Close()
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, "", "") }()
	b.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			b.Errorf("serving: %v", err)
		}
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		if err := srv.Stop(stopCtx); err != nil {
			b.Errorf("stopping coordinator: %v", err)
		}
		if err := store.Close(); err != nil {
			b.Errorf("closing store: %v", err)
		}
	})
	url := "http://" + ln.Addr().String()
	return endpoint{url: url, client: api.NewClient(url, clientToken), exec: api.NewClient(url, executorToken)}
}

// serverCPU is what the PostgreSQL backends serving env have used so far
// (see stores_test.go), or nil (SQLite, or a server /proc does not show).
func (env *inproc) serverCPU(b *testing.B) map[int]time.Duration {
	if env.pg == nil {
		return nil
	}
	return env.pg.serverCPU(b)
}

// noopSpec is the smallest valid job, in the bench queue.
func noopSpec() job.Spec {
	return job.Spec{Queue: benchQueue, Steps: []job.Step{{Name: "noop", Run: "true"}}}
}

// fill queues n no-op jobs straight into the store (not through the API: the
// benchmarks that use it measure claiming, not submitting), from a few
// goroutines so that a networked store's round trips overlap.
func fill(ctx context.Context, b *testing.B, store queue.Store, n int) {
	b.Helper()
	const fillers = 4
	spec := noopSpec()
	spec.Normalize()
	if err := spec.Validate(job.DefaultLimits()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range fillers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n) && ctx.Err() == nil; i = next.Add(1) {
				if _, err := store.Submit(ctx, queue.SubmitParams{Spec: spec}); err != nil {
					if !isCanceled(ctx, err) {
						b.Errorf("queueing job %d of %d: %v", i, n, err)
					}
					cancel()
					return
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		b.FailNow()
	}
}

// refOf names the attempt a claim started.
func refOf(c *api.ClaimResponse) queue.AttemptRef {
	return queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
}

var succeeded = api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted samples by
// the nearest-rank method: the smallest sample with at least p% of the
// samples at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// reportLatencies reports p50, p90, p99 and max of samples, in milliseconds,
// as metrics named prefix-p50-ms and so on.
func reportLatencies(b *testing.B, prefix string, samples []time.Duration) {
	b.Helper()
	s := slices.Clone(samples)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(percentile(s, 50)), prefix+"-p50-ms")
	b.ReportMetric(ms(percentile(s, 90)), prefix+"-p90-ms")
	b.ReportMetric(ms(percentile(s, 99)), prefix+"-p99-ms")
	b.ReportMetric(ms(percentile(s, 100)), prefix+"-max-ms")
}

// isCanceled reports whether err only says that ctx ended.
func isCanceled(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// cpuTime is the CPU time (user and system, every thread) this process has
// used so far.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
