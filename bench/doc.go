// Package bench is Airlock's benchmark harness. It holds no library code:
// the benchmarks live in its _test.go files and run only when asked for,
//
//	go test -run '^$' -bench . -benchtime 1x -count 3 -timeout 60m ./bench/
//
// (bench/run.sh runs exactly that), so `go test ./...` merely compiles them.
// Each benchmark reports its figures with b.ReportMetric and runs alone with
// -bench=Name; BENCHMARKS.md at the repository root records the results, the
// machine and the targets.
//
//   - BenchmarkPickupLatency: how long a job waits between becoming available
//     and an executor, parked in a long-poll claim, holding it. In-process
//     coordinator on a real loopback listener, the real API client, on each
//     store kind below.
//   - BenchmarkClaimFinishThroughput: claim + finish through the API by 8 and
//     32 concurrent claimers over a pre-filled queue, on each store kind.
//   - Store kinds (issue 5; stores_test.go): the two benchmarks above run as
//     sub-benchmarks store=sqlite, store=postgres (one coordinator over a
//     fresh PostgreSQL schema) and store=postgres-x2 (two coordinator
//     replicas on that schema, woken through LISTEN/NOTIFY; the submitter
//     and the executor on different replicas), side by side in one run. The
//     server is AIRLOCK_TEST_POSTGRES's (default: the local socket); without
//     it the postgres sub-benchmarks skip. On PostgreSQL the throughput
//     benchmark also reports the server backends' CPU (pg-cpu-us/job,
//     pg-cores). The store-level claim rate is BenchmarkClaim in
//     internal/queue/sqlite and internal/queue/postgres.
//   - BenchmarkExecutorNoopThroughput: the real executor package with a
//     runtime whose steps do nothing: claim, log, finish, end to end.
//   - BenchmarkLogThroughput1GB: a real coordinator process and a real
//     executor process (shell runtime) shipping a step's 1 GB of output, with
//     the executor's resident memory sampled throughout.
//   - BenchmarkCheckoutThroughCoordinator: a job's repository (generated, 20,000
//     commits, ≈118 MB, cached in /var/cache/airlock-bench) checked out through
//     an in-process coordinator's git endpoint and mirror by the executor's
//     checkout cache, first (empty mirror and cache) and repeat (warm cache),
//     shallow and full, next to plain git clones of the same mirror.
//
// Every scenario has a fixed size (flags -pickup.jobs, -throughput.jobs,
// -executor.jobs, -log.bytes, -checkout.commits, passed after -args), so one
// benchmark iteration is one whole scenario; with several iterations the
// samples are pooled.
// Speed targets live here, never in timed unit tests.
package bench
