package postgres_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/postgres"
)

// BenchmarkClaim measures claims per second of one store (one pool of as
// many connections as claimers) with 1, 4 and 16 concurrent claimers, each
// an executor of its own, draining a queue of b.N jobs in three priorities.
//
//	go test -run '^$' -bench BenchmarkClaim ./internal/queue/postgres
func BenchmarkClaim(b *testing.B) {
	for _, claimers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("claimers=%d", claimers), func(b *testing.B) {
			ctx := context.Background()
			schema := randomName("airlock_bench_")
			admin := adminPool(b)
			defer admin.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			s, err := postgres.Open(ctx, dsn(), postgres.Options{Schema: schema, MaxConns: int32(claimers)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			seedJobs(b, schema, b.N)

			var (
				next    atomic.Int64
				tokenID atomic.Uint64
				wg      sync.WaitGroup
			)
			b.ResetTimer()
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

// seedJobs inserts n queued jobs straight into the schema's table (Submit
// would take longer than the claims measured) and refreshes its statistics.
func seedJobs(b *testing.B, schema string, n int) {
	b.Helper()
	sp, err := json.Marshal(spec("default", 0))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	jobs := pgx.Identifier{schema, "jobs"}.Sanitize()
	if _, err := adminPool(b).Exec(ctx, `INSERT INTO `+jobs+` (queue, priority, spec, state, max_attempts, created_at)
		SELECT 'default', i % 3, $1::json, 'queued', 1, now() FROM generate_series(1, $2::int) AS i`, string(sp), n); err != nil {
		b.Fatal(err)
	}
	if _, err := adminPool(b).Exec(ctx, `ANALYZE `+jobs); err != nil {
		b.Fatal(err)
	}
}
