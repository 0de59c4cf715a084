package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// Coordinator is what the executor needs from the coordinator; *api.Client
// implements it.
//
// Errors: errors.Is(err, queue.ErrStaleAttempt) when the attempt is no longer
// current; api.ErrUnauthorized or api.ErrForbidden when the token is refused;
// *api.StatusError for other HTTP errors; anything else is a transport error.
type Coordinator interface {
	// Claim long-polls for a job; (nil, nil) when none came within the wait.
	Claim(ctx context.Context, req api.ClaimRequest) (*api.ClaimResponse, error)
	Heartbeat(ctx context.Context, req api.HeartbeatRequest) (*api.HeartbeatResponse, error)
	AppendLog(ctx context.Context, token string, ref queue.AttemptRef, offset int64, data []byte) (end int64, err error)
	Finish(ctx context.Context, token string, ref queue.AttemptRef, req api.FinishRequest) (*api.Job, error)
	// UploadArtifacts stores the attempt's artifacts (a gzip-compressed tar).
	UploadArtifacts(ctx context.Context, token string, ref queue.AttemptRef, body io.Reader) (*api.Artifact, error)
	// JobFile opens an uploaded file that the attempt's job names.
	JobFile(ctx context.Context, token string, ref queue.AttemptRef, digest string) (io.ReadCloser, int64, error)
}

// Causes with which a job's context is cancelled.
var (
	errCanceledByUser = errors.New("canceled by user")
	errDrained        = errors.New("executor shut down before the job ended")
	errLostAttempt    = errors.New("attempt no longer known to the coordinator")
	errJobTimeout     = errors.New("job timed out")
	errStepTimeout    = errors.New("step timed out")
)

// errDrainTimeout is the cause Run gives Stop's context when DrainTimeout passes.
var errDrainTimeout = errors.New("drain timeout")

// Executor claims and runs jobs. Its methods are safe for concurrent use.
type Executor struct {
	cfg Config
	c   Coordinator
	log *slog.Logger

	slots chan struct{} // one token per running job or claim in flight; capacity MaxJobs
	// gate paces the claimers when claims fail; demand says whether
	// claimers beyond the first should claim. See claim.go.
	gate   *claimGate
	demand *claimDemand

	// heartbeatEvery is the heartbeat interval in nanoseconds, from the
	// latest claim response; hbWake tells the heartbeat loop it changed.
	heartbeatEvery atomic.Int64
	hbWake         chan struct{}

	mu         sync.Mutex
	started    bool
	jobs       map[queue.AttemptRef]*runningJob
	hardCause  error // set once jobs must be cancelled; later claims are cancelled at once
	base       context.Context
	stopClaim  context.CancelFunc // aborts the claim loop, its long poll included
	stopBeat   context.CancelFunc // ends the heartbeat loop
	claimDone  chan struct{}      // closed when the claim loop has returned
	beatDone   chan struct{}      // closed when the heartbeat loop has returned
	jobWG      sync.WaitGroup     // running jobs, until their report is settled
	stopOnce   sync.Once          // shuts the loops down once
	stopFinish chan struct{}      // closed once all jobs are done and the loops are down
	afterStart func() bool        // stops the context.AfterFunc on Start's ctx

	testSignals testSignals
}

type runningJob struct {
	ref    queue.AttemptRef
	cancel context.CancelCauseFunc
	// reporting is set once the steps are over and the outcome is fixed:
	// cancelling the job then changes nothing.
	reporting atomic.Bool
}

// New returns an executor for cfg that talks to c. It does not start it.
func New(cfg Config, c Coordinator) (*Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid executor config: %w", err)
	}
	if c == nil {
		return nil, errors.New("invalid executor config: a coordinator client is required")
	}
	cfg = cfg.withDefaults()
	e := &Executor{
		cfg:        cfg,
		c:          c,
		log:        cfg.Logger.With("executor", cfg.Name),
		slots:      make(chan struct{}, cfg.MaxJobs),
		gate:       newClaimGate(),
		demand:     newClaimDemand(),
		hbWake:     make(chan struct{}, 1),
		jobs:       map[queue.AttemptRef]*runningJob{},
		claimDone:  make(chan struct{}),
		beatDone:   make(chan struct{}),
		stopFinish: make(chan struct{}),
	}
	e.heartbeatEvery.Store(int64(defaultHeartbeat))
	return e, nil
}

// Name is the name the executor reports to the coordinator.
func (e *Executor) Name() string { return e.cfg.Name }

// Info is what the executor reports about itself right now.
func (e *Executor) Info() queue.ExecutorInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.infoLocked()
}

// Running returns the attempts running now, ordered by job and attempt.
func (e *Executor) Running() []queue.AttemptRef {
	e.mu.Lock()
	defer e.mu.Unlock()
	refs := make([]queue.AttemptRef, 0, len(e.jobs))
	for ref := range e.jobs {
		refs = append(refs, ref)
	}
	slices.SortFunc(refs, func(a, b queue.AttemptRef) int {
		return cmp.Or(cmp.Compare(a.JobID, b.JobID), cmp.Compare(a.Attempt, b.Attempt))
	})
	return refs
}

// Start begins claiming and heartbeating and returns at once. Jobs run on
// contexts that carry ctx's values but not its cancellation; when ctx is done
// the executor stops as StopAndCancel does (without waiting: call Stop or
// StopAndCancel to wait for the reports).
func (e *Executor) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("executor already started")
	}
	e.started = true
	e.base = context.WithoutCancel(ctx)

	claimCtx, stopClaim := context.WithCancel(e.base)
	beatCtx, stopBeat := context.WithCancel(e.base)
	e.stopClaim, e.stopBeat = stopClaim, stopBeat

	info := e.infoLocked()
	e.log.Info("executor starting", "version", info.Version, "os", info.OS, "arch", info.Arch,
		"runtime", info.Runtime, "queues", info.Queues, "max_jobs", info.MaxJobs)

	go e.claimLoop(claimCtx)
	go e.heartbeatLoop(beatCtx)
	if j, ok := e.cfg.Runtime.(janitor); ok {
		go e.janitorLoop(beatCtx, j)
	}
	e.afterStart = context.AfterFunc(ctx, func() {
		e.log.Warn("executor context done, cancelling running jobs", "cause", context.Cause(ctx))
		e.cancelAll(errDrained)
		go e.shutdown()
	})
	return nil
}

func (e *Executor) infoLocked() queue.ExecutorInfo {
	return queue.ExecutorInfo{
		Name:    e.cfg.Name,
		Version: e.cfg.Version,
		OS:      runtime.GOOS,
		Arch:    runtime.GOARCH,
		Runtime: e.cfg.Runtime.Name(),
		Queues:  slices.Clone(e.cfg.Queues),
		MaxJobs: e.cfg.MaxJobs,
		Running: len(e.jobs),
	}
}

// Stop drains the executor: it stops claiming at once, lets running jobs end
// until ctx is done, then cancels the rest with the cause "drained" (they are
// reported errored/drained and re-queued by the coordinator) and waits for
// every report. It returns nil when every job ended on its own, and an error
// wrapping ctx's cause when some had to be cancelled; either way every job has
// been reported (or its report given up) when it returns.
func (e *Executor) Stop(ctx context.Context) error {
	if !e.isStarted() {
		return nil
	}
	e.stopClaiming()
	jobsDone := e.jobsDone()
	select {
	case <-jobsDone:
		e.shutdown()
		e.log.Info("executor stopped: all jobs finished")
		return nil
	case <-ctx.Done():
	}
	n := e.cancelAll(errDrained)
	e.testSignals.drainCanceled.Signal(n)
	e.log.Warn("drain deadline reached, cancelling running jobs", "jobs", n, "cause", context.Cause(ctx))
	<-jobsDone
	e.shutdown()
	e.log.Info("executor stopped: cancelled jobs reported", "jobs", n)
	if n == 0 {
		return nil
	}
	return fmt.Errorf("draining: cancelled %d running jobs: %w", n, context.Cause(ctx))
}

// StopAndCancel stops claiming, cancels every running job at once with the
// cause "drained" and waits for their reports until ctx is done.
func (e *Executor) StopAndCancel(ctx context.Context) error {
	if !e.isStarted() {
		return nil
	}
	e.stopClaiming()
	if n := e.cancelAll(errDrained); n > 0 {
		e.log.Warn("cancelling running jobs", "jobs", n)
	}
	select {
	case <-e.jobsDone():
		e.shutdown()
		e.log.Info("executor stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for cancelled jobs to report: %w", context.Cause(ctx))
	}
}

// Run starts the executor and runs it until the first signal on signals, then
// drains it for Config.DrainTimeout; a second signal cancels the running jobs
// at once. When ctx is done, it cancels the running jobs at once. It returns
// when every job has been reported.
func (e *Executor) Run(ctx context.Context, signals <-chan os.Signal) error {
	if err := e.Start(ctx); err != nil {
		return err
	}
	select {
	case sig := <-signals:
		e.log.Info("signal received, draining: no new jobs, running jobs may finish",
			"signal", sig.String(), "drain_timeout", e.cfg.DrainTimeout, "running", len(e.Running()))
	case <-ctx.Done():
		return e.StopAndCancel(context.Background())
	}
	drainCtx, cancel := context.WithTimeoutCause(context.Background(), e.cfg.DrainTimeout, errDrainTimeout)
	defer cancel()
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case sig := <-signals:
			e.log.Warn("second signal received, cancelling running jobs", "signal", sig.String())
			cancel()
		case <-ctx.Done():
			cancel()
		case <-stopped:
		}
	}()
	return e.Stop(drainCtx)
}

func (e *Executor) isStarted() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.started
}

// stopClaiming aborts the claim loop and waits until it has returned, so that
// no job is registered afterwards.
func (e *Executor) stopClaiming() {
	e.stopClaim()
	<-e.claimDone
}

// shutdown stops the loops once every job is done.
func (e *Executor) shutdown() {
	e.stopOnce.Do(func() {
		e.stopClaim()
		<-e.claimDone
		e.jobWG.Wait()
		e.stopBeat()
		<-e.beatDone
		e.mu.Lock()
		e.afterStart()
		e.mu.Unlock()
		close(e.stopFinish)
	})
	<-e.stopFinish
}

// jobsDone is closed once every registered job has settled its report.
func (e *Executor) jobsDone() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		e.jobWG.Wait()
		close(ch)
	}()
	return ch
}

// cancelAll cancels every running job with cause, and every job registered
// later too. It returns how many jobs it stopped (jobs already reporting
// their outcome are not counted: cancelling them changes nothing).
func (e *Executor) cancelAll(cause error) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hardCause == nil {
		e.hardCause = cause
	}
	n := 0
	for _, j := range e.jobs {
		j.cancel(cause)
		if !j.reporting.Load() {
			n++
		}
	}
	return n
}

// cancelJob cancels one job with cause; it reports whether the job was
// still running its steps (and so was stopped by this).
func (e *Executor) cancelJob(ref queue.AttemptRef, cause error) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	j, ok := e.jobs[ref]
	if !ok {
		return false
	}
	j.cancel(cause)
	return !j.reporting.Load()
}

// reporting marks a job's steps as over.
func (e *Executor) reporting(ref queue.AttemptRef) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if j, ok := e.jobs[ref]; ok {
		j.reporting.Store(true)
	}
}

// startJob registers a claimed job and runs it in its own goroutine. The
// caller holds a slot for it; the job releases it.
func (e *Executor) startJob(claim *api.ClaimResponse) {
	ref := queue.AttemptRef{JobID: claim.Job.ID, Attempt: claim.Attempt}
	if every := time.Duration(claim.HeartbeatMS) * time.Millisecond; every > 0 {
		if old := e.heartbeatEvery.Swap(int64(every)); old != int64(every) {
			select {
			case e.hbWake <- struct{}{}:
			default:
			}
		}
	}
	ctx, cancel := context.WithCancelCause(e.base)
	e.mu.Lock()
	e.jobs[ref] = &runningJob{ref: ref, cancel: cancel}
	if e.hardCause != nil {
		cancel(e.hardCause)
	}
	e.mu.Unlock()
	e.jobWG.Add(1)
	e.testSignals.claimed.Signal(ref)
	go func() {
		defer e.jobWG.Done()
		rep := e.runJob(ctx, claim)
		e.mu.Lock()
		delete(e.jobs, ref)
		e.mu.Unlock()
		cancel(context.Canceled)
		<-e.slots
		e.testSignals.jobDone.Signal(rep)
	}()
}

// heartbeatLoop reports the running attempts every heartbeat interval until
// ctx is done.
func (e *Executor) heartbeatLoop(ctx context.Context) {
	defer close(e.beatDone)
	failures := 0
	timer := time.NewTimer(0) // the first heartbeat says at once that we are alive
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.hbWake:
			timer.Reset(e.heartbeatInterval())
			continue
		case <-timer.C:
		}
		if err := e.heartbeat(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			e.log.Warn("heartbeat failed, retrying at the next interval", "error", err,
				"attempt", failures, "running", len(e.Running()))
		} else if failures > 0 {
			e.log.Info("heartbeat succeeded again", "failed_attempts", failures)
			failures = 0
		}
		timer.Reset(e.heartbeatInterval())
	}
}

func (e *Executor) heartbeatInterval() time.Duration {
	return time.Duration(e.heartbeatEvery.Load())
}

func (e *Executor) heartbeat(ctx context.Context) error {
	timeout := min(max(2*e.heartbeatInterval(), 2*time.Second), 30*time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	e.mu.Lock()
	req := api.HeartbeatRequest{Executor: e.infoLocked(), Attempts: make([]queue.AttemptRef, 0, len(e.jobs))}
	for ref := range e.jobs {
		req.Attempts = append(req.Attempts, ref)
	}
	e.mu.Unlock()
	resp, err := e.c.Heartbeat(ctx, req)
	if err != nil {
		return err // the client's errors already say "sending heartbeat"
	}
	for _, ref := range resp.Cancel {
		if e.cancelJob(ref, errCanceledByUser) {
			e.log.Info("cancellation requested, stopping job", "job_id", ref.JobID, "attempt", ref.Attempt)
		}
	}
	for _, ref := range resp.Unknown {
		if e.cancelJob(ref, errLostAttempt) {
			e.log.Warn("coordinator no longer knows the attempt, killing job", "job_id", ref.JobID, "attempt", ref.Attempt)
		}
	}
	e.testSignals.heartbeat.Signal(req)
	return nil
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// round makes a duration readable in a log line ("1.6s", "250ms").
func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

// janitor is a runtime that can remove what sandboxes left on the host.
type janitor interface {
	// RemoveLeftovers removes the host resources of every sandbox that is
	// not open and not kept.
	RemoveLeftovers(ctx context.Context, keep func(name string) bool) error
}

// janitorLoop removes leftovers of attempts this executor is not running: at
// once (what a crashed predecessor left), then every JanitorInterval.
func (e *Executor) janitorLoop(ctx context.Context, j janitor) {
	t := time.NewTicker(e.cfg.JanitorInterval)
	defer t.Stop()
	for {
		err := j.RemoveLeftovers(ctx, func(name string) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			for ref := range e.jobs {
				if SandboxName(ref) == name {
					return true
				}
			}
			return false
		})
		if err != nil && ctx.Err() == nil {
			e.log.Warn("removing leftover sandboxes", "error", err)
		}
		e.testSignals.janitorPass.Signal(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
