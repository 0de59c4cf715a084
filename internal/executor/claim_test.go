package executor

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/joblog"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/sandbox"
)

func TestClaimsInFlightNeverExceedMaxJobs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		maxJobs, maxClaim int
		wantInFlight      int
	}{
		{"claims below jobs", 6, 3, 3},
		{"claims above jobs", 2, 4, 2},
		{"one claim", 3, 1, 1},
		{"default", 8, 0, DefaultMaxClaimsInFlight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := setup(t, func(c *Config) {
				c.MaxJobs, c.MaxClaimsInFlight = tc.maxJobs, tc.maxClaim
				c.ClaimWait = 30 * time.Second
			})
			env.start()
			env.fake.waitUntil("the claims are parked", func(f *fakeCoordinator) bool { return f.parked == tc.wantInFlight })

			var jobs []*fakeJob
			for range 4 * tc.maxJobs {
				jobs = append(jobs, env.fake.push(spec(step("nap", "sleep 0.05")), nil))
			}
			for _, j := range jobs {
				if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
					t.Errorf("job %d: got %s %q, want succeeded", j.id, fin.Outcome, fin.Message)
				}
			}
			for range jobs {
				env.exec.testSignals.jobDone.WaitOrTimeout(t)
			}
			// The claims come back for the free slots.
			env.fake.waitUntil("the claims are parked again", func(f *fakeCoordinator) bool { return f.parked == tc.wantInFlight })

			env.fake.mu.Lock()
			maxRunning, maxParked, maxLoad := env.fake.maxRunning, env.fake.maxParked, env.fake.maxLoad
			env.fake.mu.Unlock()
			t.Logf("most at once: %d running, %d claims parked, %d both", maxRunning, maxParked, maxLoad)
			if maxParked != tc.wantInFlight {
				t.Errorf("most claims in flight at once: got %d, want %d", maxParked, tc.wantInFlight)
			}
			if maxLoad > tc.maxJobs {
				t.Errorf("most running jobs plus claims in flight at once: got %d, want at most MaxJobs %d", maxLoad, tc.maxJobs)
			}
			if maxRunning > tc.maxJobs {
				t.Errorf("most jobs running at once: got %d, want at most %d", maxRunning, tc.maxJobs)
			}
			for _, c := range env.fake.claimRequests() {
				if c.Executor.Running >= tc.maxJobs || c.Executor.MaxJobs != tc.maxJobs {
					t.Errorf("claim with running=%d max=%d: claims must come only from a free slot", c.Executor.Running, c.Executor.MaxJobs)
				}
			}
			for _, hb := range env.fake.heartbeatRequests() {
				if hb.Executor.Running != len(hb.Attempts) || hb.Executor.Running > tc.maxJobs {
					t.Errorf("heartbeat with running=%d and %d attempts: want them equal and at most %d",
						hb.Executor.Running, len(hb.Attempts), tc.maxJobs)
				}
			}
			if got := env.exec.Info().Running; got != 0 {
				t.Errorf("Info().Running after the jobs: got %d, want 0", got)
			}
		})
	}
}

func TestIdleExecutorKeepsOneClaim(t *testing.T) {
	t.Parallel()
	env := setup(t, func(c *Config) { c.MaxJobs, c.MaxClaimsInFlight, c.ClaimWait = 4, 4, 100*time.Millisecond })
	env.start()
	env.fake.waitUntil("4 claims were parked", func(f *fakeCoordinator) bool { return f.maxParked == 4 })
	// They all come back empty; from then on only one claim is in flight.
	env.fake.waitUntil("the claims came back empty", func(f *fakeCoordinator) bool { return f.requests["claim"] >= 8 })
	env.fake.waitUntil("one claim is parked", func(f *fakeCoordinator) bool { return f.parked <= 1 })
	env.fake.set(func(f *fakeCoordinator) { f.maxParked = f.parked })
	sent := get(env.fake, func(f *fakeCoordinator) int { return f.requests["claim"] })
	env.fake.waitUntil("3 more claims", func(f *fakeCoordinator) bool { return f.requests["claim"] >= sent+3 })
	if got := get(env.fake, func(f *fakeCoordinator) int { return f.maxParked }); got != 1 {
		t.Errorf("claims in flight while idle: got %d at once, want 1", got)
	}

	// A job makes it busy: the other claimers claim again, one for each
	// slot the job leaves free.
	j := env.fake.push(spec(step("wait", "sleep 30")), nil)
	env.exec.testSignals.stepStarted.WaitOrTimeout(t)
	env.fake.waitUntil("3 claims are parked", func(f *fakeCoordinator) bool { return f.parked == 3 })
	env.fake.requestCancel(j)
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeCanceled {
		t.Errorf("got %s %q, want canceled", fin.Outcome, fin.Message)
	}
}

// lateAnswers is the executor's real client with one fault added: every job
// a claim returns is held back until the claim's context is done, as when the
// coordinator's answer arrives just as the executor aborts the long poll.
type lateAnswers struct {
	*api.Client
	held chan queue.AttemptRef
}

func (l *lateAnswers) Claim(ctx context.Context, req api.ClaimRequest) (*api.ClaimResponse, error) {
	c, err := l.Client.Claim(ctx, req)
	if c != nil {
		l.held <- queue.AttemptRef{JobID: c.Job.ID, Attempt: c.Attempt}
		<-ctx.Done()
	}
	return c, err
}

func TestStopAbortsClaimsInFlightAndKeepsAnsweredJobs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		run    string
		stop   func(*Executor, context.Context) error
		reason job.Reason
	}{
		{"Stop runs them", "echo ran", (*Executor).Stop, job.ReasonSuccess},
		{"StopAndCancel drains them", "sleep 30", (*Executor).StopAndCancel, job.ReasonDrained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const claimers = 4
			held := make(chan queue.AttemptRef, claimers)
			env := setupWith(t, func(c *api.Client) Coordinator { return &lateAnswers{Client: c, held: held} },
				func(c *Config) { c.MaxJobs, c.MaxClaimsInFlight, c.ClaimWait = claimers, claimers, time.Minute })
			env.start()
			env.fake.waitUntil("every claimer has a claim parked", func(f *fakeCoordinator) bool { return f.parked == claimers })
			a := env.fake.push(spec(step("late", tc.run)), nil)
			b := env.fake.push(spec(step("late", tc.run)), nil)
			for range 2 {
				select {
				case <-held:
				case <-time.After(testSignalTimeout):
					t.Fatal("the claims did not return the jobs")
				}
			}
			env.fake.waitUntil("the other claims are parked", func(f *fakeCoordinator) bool { return f.parked == claimers-2 })

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			if err := tc.stop(env.exec, ctx); err != nil {
				t.Errorf("stopping: %v", err)
			}
			took := time.Since(start)
			t.Logf("stopping took %s", took)
			if took > 5*time.Second {
				t.Errorf("stopping with %d long polls in flight took %s: they were not aborted", claimers-2, took)
			}
			for _, j := range []*fakeJob{a, b} {
				select {
				case <-j.done:
				default:
					t.Fatalf("job %d, answered as the claims were aborted: not reported when stopping returned", j.id)
				}
				if fin := env.fake.waitFinished(j); fin.Reason != tc.reason {
					t.Errorf("job %d: got %s/%s %q, want reason %s", j.id, fin.Outcome, fin.Reason, fin.Message, tc.reason)
				}
			}
			env.fake.waitUntil("no claim is parked", func(f *fakeCoordinator) bool { return f.parked == 0 })
		})
	}
}

func TestClaimBackoffIsShared(t *testing.T) {
	t.Parallel()
	const (
		claimers = 8
		delay    = 20 * time.Millisecond
		failures = 30
	)
	env := setup(t, func(c *Config) {
		c.MaxJobs, c.MaxClaimsInFlight = claimers, claimers
		c.Backoff = Backoff{Min: delay, Max: delay}
	})
	env.fake.set(func(f *fakeCoordinator) { f.down = true })
	start := time.Now()
	env.start()
	for range failures {
		env.exec.testSignals.claimFailed.WaitOrTimeout(t)
	}
	took := time.Since(start)
	// All claimers claim at once at start; from the first failure on, one
	// claim per delay. Without a shared gate, each claimer retries on its
	// own: claimers times as many.
	if limit := claimers + int(took/delay) + 1; failures > limit {
		t.Errorf("%d claims failed in %s: want at most %d (one per %s after the first %d)",
			failures, took, limit, delay, claimers)
	}
	// One WARN line for the first failure and one per probe after it; the
	// line of the last failure counted may still be on its way to the log.
	if got, want := strings.Count(env.logs.String(), "coordinator unreachable, retrying in"), failures-claimers; got < want {
		t.Errorf("logged %d unreachable lines, want at least %d (one per counted failure)", got, want)
	}

	// Reachable again: the probe's answer opens the gate for every claimer.
	env.fake.set(func(f *fakeCoordinator) { f.down = false })
	env.fake.waitUntil("every claimer has a claim parked", func(f *fakeCoordinator) bool { return f.parked == claimers })
	if log := env.logs.String(); !strings.Contains(log, "coordinator reachable again") {
		t.Errorf("executor log lacks the recovery line:\n%s", log)
	}
	j := env.fake.push(spec(step("hi", "echo hi")), nil)
	if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
		t.Errorf("got %s %q, want succeeded", fin.Outcome, fin.Message)
	}
}

func TestClaimGate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := newClaimGate()
	const d = 30 * time.Millisecond
	delay := func(int) time.Duration { return d }

	// Open: everyone passes with the same state.
	a, _ := g.enter(ctx)
	b, _ := g.enter(ctx)
	if a.probe || b.probe || a != b {
		t.Fatalf("open gate: got tickets %+v and %+v, want two equal non-probes", a, b)
	}
	// The first failure counts; the second, sent before the gate closed, not.
	if n, _, counted := g.fail(a, delay); !counted || n != 1 {
		t.Errorf("first failure: got n=%d counted=%v, want 1 and counted", n, counted)
	}
	if _, _, counted := g.fail(b, delay); counted {
		t.Error("failure of a claim sent before the gate closed: counted, want ignored")
	}
	// Closed: one probe after the delay; others wait for its outcome.
	closed := time.Now()
	p, _ := g.enter(ctx)
	if waited := time.Since(closed); !p.probe || waited < d-5*time.Millisecond {
		t.Errorf("after a failure: got ticket %+v after %s, want the probe after about %s", p, waited, d)
	}
	short, cancel := context.WithTimeout(ctx, 3*d)
	defer cancel()
	if _, ok := g.enter(short); ok {
		t.Error("second claimer passed while the probe was in flight")
	}
	// An answer to a stale claim does not open the gate; the probe's does.
	if n := g.succeed(b); n != 0 {
		t.Errorf("answer to a claim sent before the gate closed: recovered %d, want 0", n)
	}
	passed := make(chan gateTicket)
	go func() {
		tk, _ := g.enter(ctx)
		passed <- tk
	}()
	if n := g.succeed(p); n != 1 {
		t.Errorf("probe answered: recovered %d, want 1", n)
	}
	select {
	case got := <-passed:
		if got.probe {
			t.Errorf("after the probe's answer: got %+v, want a plain ticket", got)
		}
	case <-time.After(testSignalTimeout):
		t.Fatal("a waiting claimer did not pass once the probe was answered")
	}
	// A failed probe closes the gate again, and counts.
	c, _ := g.enter(ctx)
	g.fail(c, delay)
	p, _ = g.enter(ctx)
	if n, _, counted := g.fail(p, delay); !counted || n != 2 {
		t.Errorf("failed probe: got n=%d counted=%v, want 2 and counted", n, counted)
	}
}

func TestTrivialJobCostsClaimAppendFinish(t *testing.T) {
	t.Parallel()
	const jobs = 12
	env := setup(t, func(c *Config) { c.MaxJobs = 4 })
	// Heartbeats come every minute: none of them is the jobs' doing.
	env.fake.set(func(f *fakeCoordinator) { f.heartbeatMS = 60_000 })
	var js []*fakeJob
	for range jobs {
		js = append(js, env.fake.push(spec(step("quick", "true")), nil))
	}
	env.start()
	short := 0
	for _, j := range js {
		if fin := env.fake.waitFinished(j); fin.Outcome != job.OutcomeSucceeded {
			t.Errorf("job %d: got %s %q, want succeeded", j.id, fin.Outcome, fin.Message)
		}
		env.fake.mu.Lock()
		took, appends := j.finishedAt.Sub(j.claimedAt), j.appends
		env.fake.mu.Unlock()
		// A job shorter than the flush interval sends its whole log, header
		// and footer, in the one append that flushes it at the end.
		if took < joblog.DefaultFlushInterval {
			short++
			if appends != 1 {
				t.Errorf("job %d took %s: got %d log appends, want 1", j.id, took, appends)
			}
		}
		if log := env.fake.logOf(j); !strings.Contains(log, "==> step quick (1/1)") || !strings.Contains(log, "==> job succeeded") {
			t.Errorf("job %d: log lacks the header or the footer:\n%s", j.id, log)
		}
	}
	t.Logf("%d of %d jobs were shorter than the flush interval", short, jobs)
	requests := get(env.fake, func(f *fakeCoordinator) map[string]int { return maps.Clone(f.requests) })
	if got := requests["finish"]; got != jobs {
		t.Errorf("finish requests: got %d, want %d", got, jobs)
	}
	if got := requests["heartbeat"]; got > 2 {
		t.Errorf("heartbeat requests: got %d for %d jobs, want at most 2 (the first, and one after the interval changed)", got, jobs)
	}
	if got := requests["logs"]; got < jobs || got > jobs+(jobs-short)*2 {
		t.Errorf("log appends: got %d for %d jobs, %d of them short", got, jobs, short)
	}
}

// BenchmarkNoopJobs measures the executor's own ceiling: jobs per second
// through claim, log append and finish against the in-memory fake coordinator
// (real HTTP over loopback, no store behind it), with a runtime whose steps
// succeed at once. bench.BenchmarkExecutorNoopThroughput measures the same
// against the real coordinator and its store.
//
//	go test -run '^$' -bench NoopJobs ./internal/executor/
func BenchmarkNoopJobs(b *testing.B) {
	const jobs, maxJobs = 5000, 16
	for _, claims := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("claims=%d", claims), func(b *testing.B) {
			var elapsed, claimTime, cpu time.Duration
			var claimed int64
			for b.Loop() {
				b.StopTimer()
				fake := newFakeCoordinator(b)
				var last *fakeJob
				for range jobs {
					last = fake.push(spec(step("noop", "true")), nil)
				}
				timed := &timedClaims{Client: api.NewClient(fake.srv.URL, fakeExecutorToken)}
				e, err := New(Config{
					Queues:            []string{"default"},
					MaxJobs:           maxJobs,
					MaxClaimsInFlight: claims,
					Runtime:           noopRuntime{dir: b.TempDir()},
					Logger:            slog.New(slog.DiscardHandler),
				}, timed)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start, cpu0 := time.Now(), cpuTime(b)
				if err := e.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				// The fake hands jobs out in order: the last one ends last
				// but for the few still running beside it.
				fake.waitFinished(last)
				fake.waitUntil("every job is finished", func(f *fakeCoordinator) bool { return f.running == 0 && len(f.queued) == 0 })
				elapsed += time.Since(start)
				cpu += cpuTime(b) - cpu0
				b.StopTimer()
				if err := e.Stop(context.Background()); err != nil {
					b.Fatal(err)
				}
				claimed += timed.n.Load()
				claimTime += time.Duration(timed.d.Load())
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*jobs)/elapsed.Seconds(), "jobs/s")
			b.ReportMetric(float64(claimTime)/float64(time.Millisecond)/float64(claimed), "claim-ms")
			// The CPU of the executor and the fake together.
			b.ReportMetric(float64(cpu)/float64(time.Microsecond)/float64(b.N*jobs), "cpu-us/job")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timedClaims times the claims that return a job.
type timedClaims struct {
	*api.Client
	n, d atomic.Int64
}

func (c *timedClaims) Claim(ctx context.Context, req api.ClaimRequest) (*api.ClaimResponse, error) {
	start := time.Now()
	cl, err := c.Client.Claim(ctx, req)
	if cl != nil {
		c.n.Add(1)
		c.d.Add(int64(time.Since(start)))
	}
	return cl, err
}

// noopRuntime's steps succeed at once without running anything, so that
// what a benchmark measures is the executor's own work per job.
type noopRuntime struct{ dir string }

func (r noopRuntime) Name() string { return "noop" }

func (r noopRuntime) Open(context.Context, sandbox.OpenParams) (sandbox.Sandbox, error) {
	return noopSandbox(r), nil
}

type noopSandbox struct{ dir string }

func (s noopSandbox) WorkDir() string { return s.dir }

func (s noopSandbox) Run(context.Context, sandbox.Step) (sandbox.Result, error) {
	return sandbox.Result{}, nil
}

func (s noopSandbox) Close(context.Context) error { return nil }
