package executor

// One job attempt, from claim to report.
//
// The attempt's context is cancelled with a cause by whoever wants it to stop
// (the heartbeat loop: user cancel or lost attempt; Stop: drain) and carries
// the job's timeout as a deadline with its own cause; each step adds its own
// timeout the same way. When a step ends interrupted, context.Cause of the
// step's context says why, and that alone picks the outcome: there is no
// second source of truth to race with.
//
// Order at the end matters: the sandbox is closed (nothing of the job
// survives), then the log is flushed (the log is complete before the job turns
// terminal, so a follower that sees the end state has seen every byte), then
// Finish is sent on a context that survives the job's cancellation.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/artifact"
	"github.com/airlock-run/airlock/internal/checkout"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/joblog"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/sandbox"
)

// Environment variables every step gets, on top of the job's env, the step's
// env and the job's secrets (later ones win).
const (
	EnvJobID   = "AIRLOCK_JOB_ID"  // the job's ID
	EnvAttempt = "AIRLOCK_ATTEMPT" // the attempt number, from 1
	EnvStep    = "AIRLOCK_STEP"    // the step's name
)

// sandboxCloseTimeout bounds Sandbox.Close.
const sandboxCloseTimeout = time.Minute

// logStuckGrace is how long past KillGrace an interrupted step may stay
// blocked on its log before the log is given up.
const logStuckGrace = 10 * time.Second

// SandboxName is the name of the sandbox of one attempt: every host resource
// it creates carries it, so a janitor can find leftovers.
func SandboxName(ref queue.AttemptRef) string {
	return fmt.Sprintf("airlock-%d-%d", ref.JobID, ref.Attempt)
}

// jobRun is the state of one attempt while it runs.
type jobRun struct {
	e     *Executor
	claim *api.ClaimResponse
	ref   queue.AttemptRef
	log   *slog.Logger
	out   *logWriter
	steps []queue.StepResult
	// digests are the steps' images' digests, by reference.
	digests map[string]string
	// egressDenied is what the egress policy denied, read before Close.
	egressDenied int64
	// stopLog stops shipping the log for good; see runStep.
	stopLog context.CancelFunc
}

// runJob runs one claimed attempt and settles its report. ctx is the
// attempt's own context.
func (e *Executor) runJob(ctx context.Context, claim *api.ClaimResponse) jobReport {
	ref := queue.AttemptRef{JobID: claim.Job.ID, Attempt: claim.Attempt}
	log := e.log.With("job_id", ref.JobID, "attempt", ref.Attempt)
	log.Info("job claimed", "queue", claim.Job.Queue, "steps", len(claim.Job.Spec.Steps))
	start := time.Now()

	// The log pipeline outlives the attempt's cancellation: what a step
	// printed while it was being stopped still reaches the coordinator.
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLog()
	sink := attemptLog{c: e.c, token: claim.Token, ref: ref, lost: func(err error) {
		// The coordinator has moved on (stale attempt or dead job token):
		// stop the job now rather than at the next heartbeat.
		if e.cancelJob(ref, errLostAttempt) {
			log.Warn("coordinator refused the job's log: attempt no longer current", "error", err)
		}
	}}
	streamer := joblog.NewStreamer(logCtx, sink, joblog.StreamerOptions{
		Limit:  claim.LogLimit,
		Retry:  retryable,
		Logger: log,
	})
	redactor := joblog.NewRedactor(streamer, secretValues(claim.Secrets))
	r := &jobRun{e: e, claim: claim, ref: ref, log: log, out: newLogWriter(redactor, log), stopLog: stopLog}

	fin := r.run(ctx)
	e.reporting(ref)
	lost := errors.Is(context.Cause(ctx), errLostAttempt)
	fin.Steps = r.steps
	fin.EgressDenied = r.egressDenied
	if !lost {
		r.printf("==> job %s: %s (%s)\n", fin.Outcome, describe(fin), round(time.Since(start)))
	}

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.ReportTimeout)
	defer cancel()
	if lost {
		// Nobody will read this attempt's log again: stop shipping it.
		stopLog()
	}
	if err := r.out.Close(); err != nil && !lost {
		log.Warn("job log incomplete", "error", err)
	}
	if err := streamer.Close(rctx); err != nil && !lost {
		log.Warn("job log incomplete", "error", err)
	}
	if lost {
		log.Warn("attempt lost: the coordinator no longer knows it; job killed, no report sent")
		return jobReport{Ref: ref, Finish: fin, Lost: true}
	}
	reported := e.finish(rctx, log, claim.Token, ref, fin)
	return jobReport{Ref: ref, Finish: fin, Reported: reported}
}

// run opens the sandbox, writes the job's files, runs the steps and closes
// the sandbox. It returns the outcome to report.
func (r *jobRun) run(ctx context.Context) (fin api.FinishRequest) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("panic while running job", "panic", p, "stack", string(debug.Stack()))
			fin = systemError(fmt.Sprintf("executor panic: %v", p))
		}
	}()
	spec := r.claim.Job.Spec
	timeout := r.e.jobTimeout(spec)
	attemptCtx := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, errJobTimeout)
	defer cancel()

	r.printf("==> airlock: job %d, attempt %d, executor %s, runtime %s, timeout %s\n",
		r.ref.JobID, r.ref.Attempt, r.e.cfg.Name, r.e.cfg.Runtime.Name(), timeout)
	res, refused := r.e.cfg.resources(spec.Resources)
	if refused != "" {
		r.printf("==> refused: the job asks for more than this executor offers: %s\n", refused)
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonResources,
			Message: "the job asks for more than the executor offers: " + refused}
	}
	network := spec.Network
	if network == "" {
		network = job.NetworkInternet
	}
	sb, err := r.e.cfg.Runtime.Open(ctx, sandbox.OpenParams{
		Name:      SandboxName(r.ref),
		Resources: res,
		Network:   network,
	})
	if err != nil {
		if ctx.Err() != nil {
			return r.interrupted(ctx, "", timeout)
		}
		r.printf("==> could not open the sandbox: %v\n", err)
		return systemError(fmt.Sprintf("opening sandbox: %v", err))
	}
	defer r.closeSandbox(ctx, sb)

	if fin, done := r.checkout(ctx, sb.WorkDir(), spec, timeout); done {
		return fin
	}
	if fin, done := r.pullImages(ctx, spec, timeout); done {
		return fin
	}

	if fin, done := r.writeFiles(ctx, sb.WorkDir(), spec, timeout); done {
		return fin
	}
	for i, step := range spec.Steps {
		if ctx.Err() != nil {
			return r.interrupted(ctx, "", timeout)
		}
		if fin, done := r.runStep(ctx, sb, i, step, timeout); done {
			if stepFailed(fin) && spec.ArtifactsWhen.After(false) {
				r.artifactsAfterFailure(attemptCtx, sb.WorkDir(), spec, timeout)
			}
			return fin
		}
	}
	if spec.ArtifactsWhen.After(true) {
		if fin, done := r.uploadArtifacts(ctx, sb.WorkDir(), spec, timeout); done {
			return fin
		}
	}
	return api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}
}

// runStep runs step i; done reports that the job ends with fin.
func (r *jobRun) runStep(ctx context.Context, sb sandbox.Sandbox, i int, step job.Step, jobTimeout time.Duration) (fin api.FinishRequest, done bool) {
	spec := r.claim.Job.Spec
	name := stepName(i, step)
	timeout := step.Timeout.D()
	if timeout == 0 {
		timeout = r.e.cfg.DefaultStepTimeout
	}
	sctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeoutCause(ctx, timeout, errStepTimeout)
		defer cancel()
	}
	env := map[string]string{}
	maps.Copy(env, spec.Env)
	maps.Copy(env, step.Env)
	maps.Copy(env, r.claim.Secrets)
	env[EnvJobID] = strconv.FormatInt(r.ref.JobID, 10)
	env[EnvAttempt] = strconv.Itoa(r.ref.Attempt)
	env[EnvStep] = name

	r.printf("==> step %s (%d/%d)\n", name, i+1, len(spec.Steps))
	r.e.testSignals.stepStarted.Signal(stepEvent{Ref: r.ref, Step: name})
	r.log.Debug("step starting", "step", name, "timeout", timeout)
	// When the step is interrupted, the runtime kills it within KillGrace.
	// If Run still has not returned well after that, the step's output is
	// stuck behind a log that cannot be shipped (the coordinator is
	// unreachable and the buffer is full): stop shipping, so that the writes
	// turn into discards and Run can return.
	runDone := make(chan struct{})
	stopWatch := context.AfterFunc(sctx, func() {
		t := time.NewTimer(r.e.cfg.KillGrace + logStuckGrace)
		defer t.Stop()
		select {
		case <-t.C:
			r.log.Warn("step output stuck behind a job log that cannot be shipped; dropping the rest of the log", "step", name)
			r.stopLog()
		case <-runDone:
		}
	})
	started := r.e.cfg.Now()
	res, err := sb.Run(sctx, sandbox.Step{
		Image:     r.image(step),
		User:      step.User,
		Run:       step.Run,
		Env:       env,
		Dir:       step.Dir,
		KillGrace: r.e.cfg.KillGrace,
		Stdout:    r.out,
		Stderr:    r.out,
	})
	finished := r.e.cfg.Now()
	close(runDone)
	stopWatch()
	took := finished.Sub(started)
	sr := queue.StepResult{
		Name:       name,
		ExitCode:   res.ExitCode,
		Signal:     res.Signal,
		OOMKilled:  res.OOMKilled,
		StartedAt:  started,
		FinishedAt: finished,
		Duration:   took,
		Image:      r.image(step),
	}
	sr.ImageDigest = r.digests[sr.Image]
	if err != nil && sctx.Err() == nil {
		sr.ExitCode = -1
		r.steps = append(r.steps, sr)
		r.printf("==> step %s could not run: %v\n", name, err)
		if errors.Is(err, sandbox.ErrImage) {
			return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonImage,
				Message: fmt.Sprintf("step %q: %v", name, err)}, true
		}
		return systemError(fmt.Sprintf("running step %q: %v", name, err)), true
	}
	if res.Interrupted || err != nil {
		cause := context.Cause(sctx)
		sr.TimedOut = errors.Is(cause, errStepTimeout) || errors.Is(cause, errJobTimeout)
		r.steps = append(r.steps, sr)
		fin := r.interrupted(sctx, name, jobTimeout)
		if fin.Reason == job.ReasonStepTimeout {
			fin.Message = fmt.Sprintf("step %q timed out after %s", name, timeout)
		}
		r.printf("==> step %s interrupted after %s: %s\n", name, round(took), fin.Message)
		return fin, true
	}
	r.steps = append(r.steps, sr)
	switch {
	case res.OOMKilled:
		r.printf("==> step %s ran out of memory after %s\n", name, round(took))
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonOOM,
			Message: fmt.Sprintf("step %q was killed for running out of memory", name)}, true
	case res.ExitCode != 0 && res.Signal != "":
		r.printf("==> step %s killed by %s after %s\n", name, res.Signal, round(took))
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonExitCode,
			Message: fmt.Sprintf("step %q was killed by %s", name, res.Signal)}, true
	case res.ExitCode != 0:
		r.printf("==> step %s exited with code %d after %s\n", name, res.ExitCode, round(took))
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonExitCode,
			Message: fmt.Sprintf("step %q exited with code %d", name, res.ExitCode)}, true
	}
	r.printf("==> step %s exited with code 0 after %s\n", name, round(took))
	return api.FinishRequest{}, false
}

// interrupted maps the cause of ctx being done to an outcome. step names the
// step that was interrupted, if any.
func (r *jobRun) interrupted(ctx context.Context, step string, jobTimeout time.Duration) api.FinishRequest {
	cause := context.Cause(ctx)
	in := ""
	if step != "" {
		in = fmt.Sprintf(" during step %q", step)
	}
	switch {
	case errors.Is(cause, errStepTimeout):
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonStepTimeout,
			Message: "step timed out" + in}
	case errors.Is(cause, errJobTimeout):
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonJobTimeout,
			Message: fmt.Sprintf("job timed out after %s%s", jobTimeout, in)}
	case errors.Is(cause, errCanceledByUser):
		return api.FinishRequest{Outcome: job.OutcomeCanceled, Reason: job.ReasonCanceled,
			Message: "canceled" + in}
	case errors.Is(cause, errDrained):
		return api.FinishRequest{Outcome: job.OutcomeErrored, Reason: job.ReasonDrained,
			Message: "executor shut down" + in}
	case errors.Is(cause, errLostAttempt):
		return api.FinishRequest{Outcome: job.OutcomeErrored, Reason: job.ReasonLeaseExpired,
			Message: "attempt lost" + in}
	}
	return systemError(fmt.Sprintf("interrupted%s: %v", in, cause))
}

// checkout puts the job's repository into the workspace, fetched from the
// coordinator's git endpoint with the attempt's job token (which appears
// nowhere in the workspace); done reports that the job ends with fin.
func (r *jobRun) checkout(ctx context.Context, dir string, spec job.Spec, timeout time.Duration) (fin api.FinishRequest, done bool) {
	repo := spec.Repository
	if repo == nil {
		return api.FinishRequest{}, false
	}
	fail := func(msg string) (api.FinishRequest, bool) {
		r.printf("==> %s\n", msg)
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonCheckout, Message: msg}, true
	}
	if repo.Name == "" {
		return r.checkoutPublic(ctx, dir, *repo, timeout, fail)
	}
	if r.e.cfg.Repositories == nil || r.e.cfg.CoordinatorURL == "" {
		r.printf("==> this executor has no repository checkout configured\n")
		return systemError("this executor has no repository checkout configured"), true
	}
	url := fmt.Sprintf("%s%s/attempts/%d/%d/git/%s.git", strings.TrimSuffix(r.e.cfg.CoordinatorURL, "/"), api.Prefix,
		r.ref.JobID, r.ref.Attempt, repo.Name)
	p := checkout.ParamsFor(dir, url, r.claim.Token, *repo)
	p.CacheKey = r.e.cfg.CoordinatorURL + "#" + repo.Name
	r.printf("==> checking out %s at %s\n", repo.Name, repo.Commit)
	res, err := r.e.cfg.Repositories.Checkout(ctx, p)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return r.interrupted(ctx, "", timeout), true
	case errors.Is(err, checkout.ErrCommitNotFound):
		return fail(fmt.Sprintf("repository %s has no commit %s", repo.Name, repo.Commit))
	default:
		r.printf("==> checking out %s failed: %v\n", repo.Name, err)
		return systemError(fmt.Sprintf("checking out %s: %v", repo.Name, err)), true
	}
	r.checkedOut(repo.Name, repo.Commit, res)
	return api.FinishRequest{}, false
}

// checkoutPublic checks out a public repository URL, fetched through the
// egress proxy: public addresses only, whatever the job's network policy
// (the fetch is the executor's, not the job's). Anything the remote or the
// proxy refuses is the job's failure; a transport failure is the system's.
func (r *jobRun) checkoutPublic(ctx context.Context, dir string, repo job.Repository, timeout time.Duration,
	fail func(string) (api.FinishRequest, bool)) (api.FinishRequest, bool) {
	if r.e.cfg.Repositories == nil || r.e.cfg.PublicFetch == nil {
		return fail("this executor fetches no public repository URLs: register the repository on the coordinator (airlock repos add) and name it")
	}
	sess := r.e.cfg.PublicFetch.Session()
	defer sess.End()
	p := checkout.ParamsFor(dir, repo.URL, "", repo)
	p.Proxy, p.ProxySecret = sess.URL(), sess.Secret()
	r.printf("==> checking out %s at %s\n", repo.URL, repo.Commit)
	res, err := r.e.cfg.Repositories.Checkout(ctx, p)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return r.interrupted(ctx, "", timeout), true
	case len(sess.Refused()) > 0:
		return fail(fmt.Sprintf("fetching %s: the executor does not connect there: %s", repo.URL, strings.Join(sess.Refused(), "; ")))
	case errors.Is(err, checkout.ErrCommitNotFound):
		return fail(fmt.Sprintf("repository %s has no commit %s", repo.URL, repo.Commit))
	case checkout.RemoteRefused(err):
		return fail(fmt.Sprintf("fetching %s: %v", repo.URL, err))
	default:
		r.printf("==> checking out %s failed: %v\n", repo.URL, err)
		return systemError(fmt.Sprintf("checking out %s: %v", repo.URL, err)), true
	}
	r.checkedOut(repo.URL, repo.Commit, res)
	return api.FinishRequest{}, false
}

func (r *jobRun) checkedOut(what, commit string, res checkout.Result) {
	how := "from the executor's cache"
	if res.Fetched {
		how = "fetched " + round(res.FetchTime).String()
	}
	r.printf("==> checked out %s at %s (%s, checkout %s)\n", what, commit, how, round(res.CheckoutTime))
}

// uploadArtifacts collects what the spec's artifacts globs match in the
// workspace into a gzip-compressed tar (never following a link out of it),
// and uploads it with retries; done reports that the job ends with fin.
func (r *jobRun) uploadArtifacts(ctx context.Context, dir string, spec job.Spec, timeout time.Duration) (fin api.FinishRequest, done bool) {
	if len(spec.Artifacts) == 0 {
		return api.FinishRequest{}, false
	}
	limit := r.e.cfg.ArtifactLimit
	tmp, err := os.CreateTemp(r.e.cfg.TempDir, "airlock-artifacts-*.tar.gz")
	if err != nil {
		return systemError(fmt.Sprintf("collecting artifacts: %v", err)), true
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	m, err := artifact.Collect(ctx, dir, spec.Artifacts, tmp, limit)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return r.interrupted(ctx, "", timeout), true
	case errors.Is(err, artifact.ErrTooLarge):
		msg := fmt.Sprintf("artifacts exceed the limit of %s", job.ByteSize(limit))
		r.printf("==> %s\n", msg)
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonArtifacts, Message: msg}, true
	default:
		return systemError(fmt.Sprintf("collecting artifacts: %v", err)), true
	}
	for _, u := range m.Unmatched {
		r.printf("==> artifacts: %q matched nothing\n", u)
	}
	for _, sk := range m.Skipped {
		r.printf("==> artifacts: skipped %s (%s)\n", sk.Path, sk.Reason)
	}
	var a *api.Artifact
	err = r.withRetries(ctx, "uploading artifacts", func() error {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return permanent(err)
		}
		var err error
		a, err = r.e.c.UploadArtifacts(ctx, r.claim.Token, r.ref, tmp)
		return err
	})
	switch {
	case err == nil:
		r.printf("==> uploaded %d artifact files (%s, %s compressed)\n", len(m.Files), job.ByteSize(m.Size), job.ByteSize(a.Size))
		return api.FinishRequest{}, false
	case errors.Is(err, api.ErrTooLarge):
		msg := fmt.Sprintf("artifacts refused by the coordinator: %v", err)
		r.printf("==> %s\n", msg)
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonArtifacts, Message: msg}, true
	case ctx.Err() != nil:
		return r.interrupted(ctx, "", timeout), true
	}
	r.printf("==> uploading artifacts failed: %v\n", err)
	return systemError(fmt.Sprintf("uploading artifacts: %v", err)), true
}

// transferTries bounds the tries of one upload or download of an attempt's
// data (artifacts, job files).
const transferTries = 5

// withRetries calls try until it succeeds, fails with an error that is not
// transient (see classify; wrap local failures in permanent), has failed
// transferTries times, or ctx ends, backing off between tries. It returns
// try's last error.
func (r *jobRun) withRetries(ctx context.Context, what string, try func() error) error {
	for n := 1; ; n++ {
		err := try()
		if err == nil || classify(err) != errTransient || n >= transferTries || ctx.Err() != nil {
			return err
		}
		d := r.e.cfg.Backoff.Delay(n)
		r.log.Warn(fmt.Sprintf("%s failed, retrying in %s", what, round(d)), "error", err, "attempt", n)
		if !sleep(ctx, d) {
			return err
		}
	}
}

// stepFailed reports whether fin is a step's own failure (exit code,
// timeout, memory), after which the spec may ask for artifacts.
func stepFailed(fin api.FinishRequest) bool {
	if fin.Outcome != job.OutcomeFailed {
		return false
	}
	switch fin.Reason {
	case job.ReasonExitCode, job.ReasonStepTimeout, job.ReasonJobTimeout, job.ReasonOOM:
		return true
	}
	return false
}

// failureArtifactsTimeout bounds collecting and uploading artifacts after a
// failure, which may come after the job's own time is up.
const failureArtifactsTimeout = 10 * time.Minute

// artifactsAfterFailure collects and uploads the artifacts of a job whose
// step failed. The job's own deadline may be over (a job timeout), so it
// runs under the attempt's context (a cancel or a drain still stops it) with
// a bound of its own. Whatever happens, the job keeps the failure it had.
func (r *jobRun) artifactsAfterFailure(attemptCtx context.Context, dir string, spec job.Spec, timeout time.Duration) {
	if len(spec.Artifacts) == 0 || attemptCtx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(attemptCtx, failureArtifactsTimeout)
	defer cancel()
	r.printf("==> collecting artifacts after the failure (artifactsWhen: %s)\n", spec.ArtifactsWhen)
	if fin, done := r.uploadArtifacts(ctx, dir, spec, timeout); done {
		r.printf("==> artifacts not kept: %s\n", describe(fin))
	}
}

// image is the image step runs in: its own, or the executor's default.
func (r *jobRun) image(step job.Step) string {
	if step.Image == "" && r.e.cfg.Images != nil {
		return r.e.cfg.DefaultImage
	}
	return step.Image
}

// pullImages gets every step's image ready before the first step runs, so a
// job whose third step names a missing image fails before it changes
// anything; done reports that the job ends with fin.
func (r *jobRun) pullImages(ctx context.Context, spec job.Spec, timeout time.Duration) (fin api.FinishRequest, done bool) {
	if r.e.cfg.Images == nil {
		return api.FinishRequest{}, false
	}
	r.digests = make(map[string]string)
	for i, step := range spec.Steps {
		ref := r.image(step)
		if ref == "" {
			msg := fmt.Sprintf("steps[%d] (%s) names no image, and this executor has no default image", i, stepName(i, step))
			r.printf("==> %s\n", msg)
			return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonImage, Message: msg}, true
		}
		if _, ok := r.digests[ref]; ok {
			continue
		}
		start := time.Now()
		digest, err := r.e.cfg.Images.Pull(ctx, SandboxName(r.ref), ref, r.claim.Secrets[DockerAuthSecret])
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return r.interrupted(ctx, "", timeout), true
		case errors.Is(err, sandbox.ErrImage):
			r.printf("==> image %s: %v\n", ref, err)
			return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonImage,
				Message: fmt.Sprintf("steps[%d] (%s): %v", i, stepName(i, step), err)}, true
		default:
			r.printf("==> image %s could not be pulled: %v\n", ref, err)
			return systemError(fmt.Sprintf("pulling image %s: %v", ref, err)), true
		}
		r.digests[ref] = digest
		r.printf("==> image %s: %s (%s)\n", ref, digest, round(time.Since(start)))
	}
	return api.FinishRequest{}, false
}

// egressCounter is a sandbox whose egress policy counts what it denied.
type egressCounter interface {
	EgressDenied(ctx context.Context) (uint64, error)
}

func (r *jobRun) closeSandbox(ctx context.Context, sb sandbox.Sandbox) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sandboxCloseTimeout)
	defer cancel()
	if c, ok := sb.(egressCounter); ok {
		n, err := c.EgressDenied(ctx)
		if err != nil {
			r.log.Warn("reading the egress policy's denial count", "error", err)
		}
		r.egressDenied = int64(n)
		if n > 0 {
			r.printf("==> the egress policy denied %d connection attempts\n", n)
		}
	}
	if err := sb.Close(ctx); err != nil {
		r.log.Error("closing sandbox; the janitor must remove what is left", "sandbox", SandboxName(r.ref), "error", err)
	}
	if r.e.cfg.Images != nil {
		if err := r.e.cfg.Images.Release(SandboxName(r.ref)); err != nil {
			r.log.Error("releasing the attempt's images; the janitor must remove what is left", "sandbox", SandboxName(r.ref), "error", err)
		}
	}
}

// printf writes an executor line into the job's log.
func (r *jobRun) printf(format string, args ...any) {
	fmt.Fprintf(r.out, format, args...)
}

// jobTimeout is the job's timeout: its spec's, or the default, capped.
func (e *Executor) jobTimeout(spec job.Spec) time.Duration {
	d := spec.Timeout.D()
	if d <= 0 {
		d = e.cfg.DefaultJobTimeout
	}
	if e.cfg.MaxJobTimeout > 0 && d > e.cfg.MaxJobTimeout {
		d = e.cfg.MaxJobTimeout
	}
	return d
}

// finish reports fin until the coordinator acknowledges it, the attempt is
// stale or the token refused, or ctx is done. It reports whether the
// coordinator acknowledged it.
func (e *Executor) finish(ctx context.Context, log *slog.Logger, token string, ref queue.AttemptRef, fin api.FinishRequest) bool {
	for n := 1; ; n++ {
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		j, err := e.c.Finish(callCtx, token, ref, fin)
		cancel()
		if err == nil {
			state := job.State("")
			if j != nil {
				state = j.State
			}
			log.Info("job finished", "outcome", fin.Outcome, "reason", fin.Reason, "message", fin.Message, "state", state)
			return true
		}
		switch classify(err) {
		case errStale:
			log.Warn("attempt no longer current, report discarded", "outcome", fin.Outcome, "reason", fin.Reason, "error", err)
			return false
		case errRejected:
			if n > 1 {
				// The token dies when a finish lands: an earlier try whose
				// answer was lost most likely did.
				log.Warn("job token no longer valid on a retried report: an earlier try most likely landed",
					"outcome", fin.Outcome, "reason", fin.Reason, "error", err)
				return false
			}
			log.Error("job token rejected, report discarded", "outcome", fin.Outcome, "reason", fin.Reason, "error", err)
			return false
		case errRefused:
			log.Error("coordinator refused the report, report discarded", "outcome", fin.Outcome, "reason", fin.Reason, "error", err)
			return false
		}
		d := e.cfg.Backoff.Delay(n)
		log.Warn(fmt.Sprintf("coordinator unreachable while reporting the job, retrying in %s", round(d)),
			"error", err, "attempt", n)
		if !sleep(ctx, d) {
			log.Error("giving up reporting the job; the coordinator will reap the attempt",
				"outcome", fin.Outcome, "reason", fin.Reason, "attempts", n)
			return false
		}
	}
}

func systemError(msg string) api.FinishRequest {
	return api.FinishRequest{Outcome: job.OutcomeErrored, Reason: job.ReasonSystemError, Message: msg}
}

// describe is the one-line summary of an outcome for the job's log.
func describe(fin api.FinishRequest) string {
	if fin.Message != "" {
		return fin.Message
	}
	return string(fin.Reason)
}

func stepName(i int, s job.Step) string {
	if s.Name != "" {
		return s.Name
	}
	return fmt.Sprintf("step-%d", i+1)
}

// secretValues are the values to redact: every non-empty secret.
func secretValues(secrets map[string]string) []string {
	var vals []string
	for _, v := range secrets {
		if v != "" {
			vals = append(vals, v)
		}
	}
	slices.Sort(vals)
	return slices.Compact(vals)
}

// attemptLog is the joblog.Sink of one attempt.
type attemptLog struct {
	c     Coordinator
	token string
	ref   queue.AttemptRef
	lost  func(error) // called when the coordinator says the attempt is over
}

func (l attemptLog) AppendLog(ctx context.Context, off int64, data []byte) (int64, error) {
	end, err := l.c.AppendLog(ctx, l.token, l.ref, off, data)
	if err != nil {
		if c := classify(err); c == errStale || c == errRejected {
			l.lost(err)
		}
	}
	return end, err
}

// logWriter is the head of an attempt's log pipeline. It serialises writes
// (the executor's own lines and the step's output) and never fails or hangs a
// step because the log cannot be shipped: after the first error it logs once
// and discards what follows.
type logWriter struct {
	mu     sync.Mutex
	w      io.WriteCloser
	err    error
	log    *slog.Logger
	closed bool
}

func newLogWriter(w io.WriteCloser, log *slog.Logger) *logWriter {
	return &logWriter{w: w, log: log}
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || l.closed {
		return len(p), nil
	}
	if _, err := l.w.Write(p); err != nil {
		l.err = err
		l.log.Warn("job log cannot be shipped, discarding the rest of the output", "error", err)
	}
	return len(p), nil
}

// Close flushes the pipeline head (the redactor's held-back bytes).
func (l *logWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.err
	}
	l.closed = true
	if err := l.w.Close(); err != nil && l.err == nil {
		l.err = err
	}
	return l.err
}
