// Package executor is the agent that runs jobs on an executor host: it claims
// job attempts from the coordinator, runs their steps in a sandbox.Runtime,
// ships their logs and reports how each attempt ended.
//
// # Trust
//
// The executor host is semi-trusted: it talks to the coordinator over
// outbound HTTPS only, with an executor token (claim, heartbeat) and, per
// attempt, the job token minted at claim (logs, finish). It sees the secrets of
// the jobs it runs and of no others, and redacts them — their exact values and
// their base64 and URL-encoded forms — from every log byte before the byte
// leaves the host. Job steps are untrusted and run only inside the sandbox.
//
// # Lifecycle
//
//	New → Start → (claim loop + heartbeat loop + one goroutine per job) → Stop | StopAndCancel
//
// The claim loop keeps up to min(free slots, MaxClaimsInFlight) long-poll
// claims in flight, each sent only for a slot reserved for its answer, so
// running jobs never exceed MaxJobs; once a claim comes back empty it keeps a
// single one until a claim returns a job again. When the coordinator is
// unreachable it logs a WARN line and retries with jittered exponential
// backoff, one claim per delay however many were in flight; a rejected
// executor token is logged as an ERROR and retried at the maximum backoff.
// Nothing the coordinator does makes the executor exit. claim.go has the
// details.
//
// The heartbeat loop reports every running attempt (and the executor's
// identity and capacity, even with nothing running) every HeartbeatMS of the
// latest claim response. The answer's Cancel list cancels those jobs (they
// report canceled); its Unknown list kills those jobs without a report — the
// coordinator has already moved on. Cancellation therefore takes effect within
// one heartbeat interval plus the step's kill grace.
//
// A failing heartbeat is logged and retried on the next tick; the executor
// never gives a job up on its own because heartbeats fail, even past the lease:
// the coordinator is the only judge of whether an attempt is still current, and
// says so through Unknown on a later heartbeat or ErrStaleAttempt on a log
// append or finish. A job whose lease the coordinator reaped therefore runs to
// its end (bounded by its timeout) and its report is then discarded.
//
// # One job
//
// Each job attempt gets one context, cancelled with a cause (user cancel,
// drain, lost attempt; timeouts are deadlines with a cause), a sandbox named
// "airlock-<jobID>-<attempt>", the job's files in the workspace, and its steps
// in order until the first that fails. A step's environment is the job's env,
// then the step's env, then the job's secrets, then AIRLOCK_JOB_ID,
// AIRLOCK_ATTEMPT and AIRLOCK_STEP (later ones win). Its timeout is its own,
// else Config.DefaultStepTimeout, else whatever remains of the job's (the
// spec's, else Config.DefaultJobTimeout, capped by Config.MaxJobTimeout).
// Step output (stdout and stderr as one stream) goes through the redactor into
// a bounded log streamer (joblog), framed by "==> step NAME (i/n)" header and
// footer lines the executor writes. Memory stays bounded whatever the output
// volume: the streamer blocks the step when its buffer is full and keeps only
// the head and the tail past the coordinator's log limit; a log that cannot be
// shipped at all is discarded rather than allowed to hang the step. The log is flushed, the sandbox closed, and then
// the outcome is sent with Finish on a context that survives the job's
// cancellation, retried until acknowledged, the attempt turns stale, or
// Config.ReportTimeout passes.
//
// A job's failure (non-zero exit, timeout, out of memory) is a result reported
// as failed; the system's failure (the sandbox could not be opened or the step
// could not be started) is reported as errored/system_error, which the
// coordinator retries while attempts remain.
//
// # Stopping
//
// Stop is soft: it stops claiming at once (aborting every long poll in
// flight; a job that a poll returned as it was aborted runs like the others),
// lets running jobs finish until its ctx is done, then cancels the rest with
// the cause "drained" (reported errored/drained, which the coordinator
// re-queues) and waits for their reports. StopAndCancel does the second half
// at once. Run wires both to process signals: the first signal drains for
// Config.DrainTimeout, a second cancels at once.
package executor
