package coordinator

import (
	"context"
	"net/http/httptest"
	"path/filepath"
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

// BenchmarkStoreClaimFinish is the store-level baseline of bench/'s
// BenchmarkClaimFinishThroughput: the same work (claim, token lookup, finish)
// by 8 concurrent claimers straight on the store, no HTTP. Pickup latency and
// claim+finish through the API are measured in bench/ only.
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
