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
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/coordinator"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
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

// inproc is a coordinator serving its API on a real loopback listener, over
// SQLite in a temporary directory, in this process.
type inproc struct {
	url    string
	store  *sqlite.Store
	client *api.Client // client token: submit, get
	exec   *api.Client // executor token: claim, heartbeat (and finish, with a job token)
}

// startCoordinator starts an in-process coordinator and stops it when b ends.
func startCoordinator(b *testing.B) *inproc {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "queue.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := coordinator.New(coordinator.Config{
		Store:          store,
		ClientTokens:   []string{clientToken},
		ExecutorTokens: []string{executorToken},
		Logger:         discardLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
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
	return &inproc{
		url:    url,
		store:  store,
		client: api.NewClient(url, clientToken),
		exec:   api.NewClient(url, executorToken),
	}
}

// noopSpec is the smallest valid job, in the bench queue.
func noopSpec() job.Spec {
	return job.Spec{Queue: benchQueue, Steps: []job.Step{{Name: "noop", Run: "true"}}}
}

// fill queues n no-op jobs straight into the store (not through the API: the
// benchmarks that use it measure claiming, not submitting).
func fill(ctx context.Context, b *testing.B, store queue.Store, n int) {
	b.Helper()
	spec := noopSpec()
	spec.Normalize()
	if err := spec.Validate(job.DefaultLimits()); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := store.Submit(ctx, queue.SubmitParams{Spec: spec}); err != nil {
			b.Fatalf("queueing job %d of %d: %v", i+1, n, err)
		}
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
