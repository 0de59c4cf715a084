package sqlite_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
)

// reportCPU adds the process's CPU time per operation (user and system, all
// goroutines, the checkpointer's included) to a benchmark's results. On a
// shared machine it is steadier than the wall-clock figure.
func reportCPU(b *testing.B) {
	b.Helper()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpu()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	})
}

func benchStore(b *testing.B) *sqlite.Store {
	b.Helper()
	s, _ := benchStoreAt(b)
	return s
}

func benchStoreAt(b *testing.B) (*sqlite.Store, string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "queue.db")
	s, err := sqlite.Open(b.Context(), path, sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, path
}

var benchToken atomic.Int64

func benchClaim(b *testing.B, s *sqlite.Store) *queue.Claim {
	b.Helper()
	c, err := s.Claim(b.Context(), queue.ClaimParams{Queues: []string{"default"},
		Executor: queue.ExecutorInfo{Name: "bench", Queues: []string{"default"}, MaxJobs: 4},
		Lease:    time.Minute, TokenHash: fmt.Appendf(nil, "%032d", benchToken.Add(1))})
	if err != nil || c == nil {
		b.Fatalf("Claim = %v, %v", c, err)
	}
	return c
}

// BenchmarkAppendLog appends chunks of the sizes an executor sends to one
// attempt's log, as the coordinator would on the log route.
func BenchmarkAppendLog(b *testing.B) {
	for _, size := range []int{256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("chunk=%dKiB", size>>10), func(b *testing.B) {
			s, path := benchStoreAt(b)
			ctx := b.Context()
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(' ' + i%95)
			}
			// A new attempt every 64 MiB, as in a stream of jobs; the switch
			// is part of what is measured.
			perJob := (64 << 20) / size
			var ref queue.AttemptRef
			var off int64
			b.SetBytes(int64(size))
			reportCPU(b)
			for i := 0; b.Loop(); i++ {
				if i%perJob == 0 {
					if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
						b.Fatal(err)
					}
					c := benchClaim(b, s)
					ref, off = queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}, 0
				}
				end, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Offset: off, Data: data})
				if err != nil {
					b.Fatal(err)
				}
				off = end
			}
			// The WAL's high-water mark shows whether checkpoints kept up.
			if fi, err := os.Stat(path + "-wal"); err == nil {
				b.ReportMetric(float64(fi.Size())/(1<<20), "wal-MiB")
			}
		})
	}
}

// BenchmarkJobWithSmallLog is the store's share of running one job whose log
// is a few lines (the executor's header and footer): a claim, one append and
// a finish. It shows what starting a log costs (a new file).
func BenchmarkJobWithSmallLog(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	for range b.N {
		if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
			b.Fatal(err)
		}
	}
	lines := []byte("==> step 1 (build): sh -c true\n==> step 1 (build): exit 0 after 12ms\n")
	b.ResetTimer()
	reportCPU(b)
	for range b.N {
		c := benchClaim(b, s)
		ref := queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
		if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Data: lines}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Finish(ctx, queue.FinishParams{Attempt: ref, Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkReadLog reads a 64 MiB log back in 1 MiB windows.
func BenchmarkReadLog(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
		b.Fatal(err)
	}
	c := benchClaim(b, s)
	ref := queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
	data := make([]byte, 256<<10)
	const size = 64 << 20
	for off := int64(0); off < size; off += int64(len(data)) {
		if _, err := s.AppendLog(ctx, queue.AppendLogParams{Attempt: ref, Offset: off, Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(1 << 20)
	reportCPU(b)
	var off int64
	for b.Loop() {
		chunk, err := s.ReadLog(ctx, queue.ReadLogParams{JobID: ref.JobID, Offset: off})
		if err != nil {
			b.Fatal(err)
		}
		off = chunk.NextOffset % size
	}
}

// BenchmarkClaimFinish is the store's share of running one job: a claim and
// a finish (the submit happens before the timer).
func BenchmarkClaimFinish(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	for range b.N {
		if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	reportCPU(b)
	for range b.N {
		c := benchClaim(b, s)
		if _, err := s.Finish(ctx, queue.FinishParams{Attempt: queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt},
			Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkSubmit stores new jobs.
func BenchmarkSubmit(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	reportCPU(b)
	for b.Loop() {
		if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkClaimParallel has many claimers compete for a deep queue.
func BenchmarkClaimParallel(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	for range b.N + 64 {
		if _, err := s.Submit(ctx, queue.SubmitParams{Spec: spec()}); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(8)
	b.ResetTimer()
	reportCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := s.Claim(ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: queue.ExecutorInfo{Name: "bench"},
				Lease: time.Minute, TokenHash: fmt.Appendf(nil, "%032d", benchToken.Add(1))})
			if err != nil || c == nil {
				b.Errorf("Claim = %v, %v", c, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
}

// BenchmarkClaim measures claims per second with 1, 4 and 16 concurrent
// claimers, each an executor of its own, draining a queue of b.N jobs in
// three priorities: the same scenario as the PostgreSQL store's
// BenchmarkClaim, so that the two can be read side by side.
//
//	go test -run '^$' -bench '^BenchmarkClaim$' ./internal/queue/sqlite
func BenchmarkClaim(b *testing.B) {
	for _, claimers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("claimers=%d", claimers), func(b *testing.B) {
			s := benchStore(b)
			ctx := b.Context()
			var (
				next    atomic.Int64
				tokenID atomic.Uint64
				wg      sync.WaitGroup
			)
			// Queue the jobs from a few goroutines (group commit makes that
			// quicker); which job gets which priority does not matter.
			for range 4 {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						sp := spec()
						sp.Priority = int(i % 3)
						if _, err := s.Submit(ctx, queue.SubmitParams{Spec: sp}); err != nil {
							b.Errorf("Submit: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			if b.Failed() {
				b.FailNow()
			}
			next.Store(0)
			b.ResetTimer()
			reportCPU(b)
			start := time.Now()
			for i := range claimers {
				wg.Go(func() {
					exec := queue.ExecutorInfo{Name: fmt.Sprintf("e%d", i), Queues: []string{"default"}, MaxJobs: 4}
					for next.Add(1) <= int64(b.N) {
						var n [8]byte
						binary.BigEndian.PutUint64(n[:], tokenID.Add(1))
						tok := sha256.Sum256(n[:])
						c, err := s.Claim(ctx, queue.ClaimParams{Queues: []string{"default"}, Executor: exec,
							Lease: time.Minute, TokenHash: tok[:]})
						if err != nil || c == nil {
							b.Errorf("Claim = %v, %v; want a job", c, err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "claims/s")
		})
	}
}
