package coordinator

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
)

// benchEnv is setup for benchmarks: real clock, real SQLite, real listener.
func benchEnv(b *testing.B) (*Server, queue.Store, *api.Client, *api.Client) {
	b.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "queue.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	srv, err := New(Config{Store: store, ClientTokens: []string{clientToken}, ExecutorTokens: []string{executorToken}})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(ts.Close)
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Stop(ctx) })
	return srv, store, api.NewClient(ts.URL, clientToken), api.NewClient(ts.URL, executorToken)
}

// BenchmarkClaimFinish measures claim+finish throughput through the API:
// jobs are queued in the store beforehand, then 8 executors claim and
// finish them over HTTP as fast as they can.
//
//	go test -run '^$' -bench ClaimFinish -benchtime 5000x ./internal/coordinator
func BenchmarkClaimFinish(b *testing.B) {
	_, store, _, exec := benchEnv(b)
	ctx := context.Background()
	spec := testSpec("bench")
	spec.Normalize()
	for range b.N {
		if _, err := store.Submit(ctx, queue.SubmitParams{Spec: spec}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info := queue.ExecutorInfo{Name: "bench-" + string(rune('a'+i))}
			for {
				c, err := exec.Claim(ctx, api.ClaimRequest{Executor: info, Queues: []string{"bench"}, WaitMS: 200})
				if err != nil {
					b.Error(err)
					return
				}
				if c == nil {
					return // drained
				}
				if _, err := exec.Finish(ctx, c.Token, ref(c), api.FinishRequest{
					Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start) - 200*time.Millisecond // the last empty claims' wait
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
}

// BenchmarkSubmitClaimFinish is the whole path through the API: a submitter
// and 8 executors running at once.
func BenchmarkSubmitClaimFinish(b *testing.B) {
	_, _, client, exec := benchEnv(b)
	ctx := context.Background()
	spec := testSpec("bench")
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	finished := make(chan struct{}, b.N)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range b.N {
			if _, err := client.Submit(ctx, spec); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info := queue.ExecutorInfo{Name: "bench-" + string(rune('a'+i))}
			for {
				c, err := exec.Claim(ctx, api.ClaimRequest{Executor: info, Queues: []string{"bench"}, WaitMS: 200})
				if err != nil {
					b.Error(err)
					return
				}
				if c == nil {
					return
				}
				if _, err := exec.Finish(ctx, c.Token, ref(c), api.FinishRequest{
					Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
					b.Error(err)
					return
				}
				finished <- struct{}{}
			}
		}()
	}
	for range b.N {
		<-finished
	}
	elapsed := time.Since(start)
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
}

// BenchmarkPickupLatency measures, one job at a time, the time from the
// start of a Submit call to the moment a waiting executor holds the claim
// answer, with 4 executors parked in long polls.
//
//	go test -run '^$' -bench PickupLatency -benchtime 1000x ./internal/coordinator
func BenchmarkPickupLatency(b *testing.B) {
	srv, _, client, exec := benchEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan time.Time, 16)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info := queue.ExecutorInfo{Name: "bench-" + string(rune('a'+i))}
			for ctx.Err() == nil {
				c, err := exec.Claim(ctx, api.ClaimRequest{Executor: info, Queues: []string{"bench"}, WaitMS: 30_000})
				if err != nil || c == nil {
					continue
				}
				got <- time.Now()
				exec.Finish(context.Background(), c.Token, ref(c), api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
			}
		}()
	}
	spec := testSpec("bench")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		// Let the executors park again, so each pickup is a wake-up.
		deadline := time.Now().Add(time.Second)
		for srv.claims.waitingOn("bench") < 4 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Microsecond)
		}
		start := time.Now()
		if _, err := client.Submit(ctx, spec); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-got).Sub(start))
	}
	b.StopTimer()
	cancel()
	srv.release()
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkStoreClaimFinish is the baseline for BenchmarkClaimFinish: the
// same work (claim, token lookup, finish) straight on the store, no HTTP.
func BenchmarkStoreClaimFinish(b *testing.B) {
	_, store, _, _ := benchEnv(b)
	ctx := context.Background()
	spec := testSpec("bench")
	spec.Normalize()
	for range b.N {
		store.Submit(ctx, queue.SubmitParams{Spec: spec})
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, h := newJobToken()
				c, err := store.Claim(ctx, queue.ClaimParams{Queues: []string{"bench"}, Executor: queue.ExecutorInfo{Name: "x"}, Lease: time.Minute, TokenHash: h})
				if err != nil || c == nil {
					return
				}
				store.AttemptForToken(ctx, h)
				store.Finish(ctx, queue.FinishParams{Attempt: queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess})
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}
