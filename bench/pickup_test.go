package bench

// Pickup latency: the time between a job becoming available and an idle
// executor, parked in a long-poll claim, holding it.
//
// A job becomes available inside the submit request, when the store commits
// it and the coordinator wakes a parked claimer. Neither moment is visible to
// a client, so three intervals end at the moment the claimer's Claim call
// returned, each starting at a different point:
//
//	sent:     just before Submit is called. An upper bound: it also counts
//	          the submit request's trip, its decoding, validation and the
//	          store's commit.
//	created:  the job's CreatedAt, stamped by the store inside the submit
//	          transaction, on this process's clock. The closest estimate of
//	          "available": it is taken once the write lock is held, just
//	          before the insert commits.
//	returned: when Submit returned. A lower bound, often negative: the claim
//	          answer can reach the executor before the submit answer reaches
//	          the submitter.
//
// Between jobs the claimer's next claim request is given time to leave the
// client and park in the coordinator (settle below), as an idle executor's
// would be; the submit then finds it waiting. A job whose claim request was
// not on its way before the submit began is counted as "unparked" (it should
// be zero).

import (
	"context"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// settle is how long a claim request gets between leaving the client and the
// next submit, to be read and parked by the coordinator.
const settle = 2 * time.Millisecond

// pickup is one claim answer and the moment Claim returned it.
type pickup struct {
	claim *api.ClaimResponse
	at    time.Time
	err   error
}

// BenchmarkPickupLatency submits -pickup.jobs jobs one at a time to an
// in-process coordinator (real loopback listener) while one executor waits in
// a long-poll claim through the real API client, and reports the percentiles
// of the three intervals described at the top of this file, on each store
// kind (stores_test.go). With postgres-x2 the submitter talks to the first
// replica and the executor to the second, so every job crosses between
// replicas through PostgreSQL's LISTEN/NOTIFY.
//
// On PostgreSQL, "created" starts earlier than on SQLite: the store reads its
// clock once at the start of the submit's transaction, before the insert and
// the commit, so the interval includes both.
//
//	go test -run '^$' -bench PickupLatency -benchtime 1x ./bench/
func BenchmarkPickupLatency(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run("store="+kind, func(b *testing.B) { pickupLatency(b, kind) })
	}
}

func pickupLatency(b *testing.B, kind string) {
	env := startCoordinator(b, kind)
	submitter, claimer := env.replicas[0], env.replicas[len(env.replicas)-1]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	// The claimer: one executor, always parked in a claim, handing each job
	// to the benchmark loop.
	var wroteAt atomic.Int64 // when the current claim request was written, Unix ns
	ready := make(chan struct{}, 1)
	claims := make(chan pickup, 1)
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err != nil {
			return
		}
		wroteAt.Store(time.Now().UnixNano())
		select {
		case ready <- struct{}{}:
		default:
		}
	}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		info := queue.ExecutorInfo{Name: "bench-pickup", MaxJobs: 1}
		for {
			c, err := claimer.exec.Claim(httptrace.WithClientTrace(ctx, trace),
				api.ClaimRequest{Executor: info, Queues: []string{benchQueue}, WaitMS: 30_000})
			at := time.Now()
			if ctx.Err() != nil {
				return
			}
			if err == nil && c == nil {
				continue // the long poll ended empty: wait again
			}
			select {
			case claims <- pickup{claim: c, at: at, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	spec := noopSpec()
	var fromSent, fromCreated, fromReturned []time.Duration
	unparked := 0
	one := func(measure bool) {
		<-ready
		time.Sleep(settle)
		sent := time.Now()
		if wroteAt.Load() > sent.UnixNano() {
			unparked++
		}
		j, err := submitter.client.Submit(ctx, spec)
		returned := time.Now()
		if err != nil {
			b.Fatal(err)
		}
		var p pickup
		select {
		case p = <-claims:
		case <-time.After(30 * time.Second):
			b.Fatalf("job %d was not claimed within 30s", j.ID)
		}
		if p.err != nil {
			b.Fatal(p.err)
		}
		if p.claim.Job.ID != j.ID {
			b.Fatalf("claimed job %d, want the job just submitted, %d", p.claim.Job.ID, j.ID)
		}
		if measure {
			fromSent = append(fromSent, p.at.Sub(sent))
			fromCreated = append(fromCreated, p.at.Sub(j.CreatedAt))
			fromReturned = append(fromReturned, p.at.Sub(returned))
		}
		// Finish it, so that the next iteration starts from an empty queue.
		if _, err := claimer.exec.Finish(ctx, p.claim.Token, refOf(p.claim), succeeded); err != nil {
			b.Fatal(err)
		}
	}

	for range *pickupWarmup {
		one(false)
	}
	for b.Loop() {
		for range *pickupJobs {
			one(true)
		}
	}
	b.ReportMetric(float64(len(fromSent)), "samples")
	b.ReportMetric(float64(unparked), "unparked")
	reportLatencies(b, "sent", fromSent)
	reportLatencies(b, "created", fromCreated)
	reportLatencies(b, "returned", fromReturned)
}
