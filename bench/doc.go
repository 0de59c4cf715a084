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
//     coordinator over SQLite on a real loopback listener, the real API client.
//   - BenchmarkClaimFinishThroughput: claim + finish through the API by 8 and
//     32 concurrent claimers over a pre-filled queue.
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
