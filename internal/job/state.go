package job

// State is where a job is in its life:
//
//	queued → running → succeeded | failed | canceled | errored
//
// A running job whose attempt is lost (lease expired, executor gone, system
// error) goes back to queued while attempts remain. Failed means the job's own
// code failed (non-zero exit, timeout); errored means the system could not run
// it within the attempts allowed. A user retry moves a finished job back to
// queued with a fresh attempt budget.
type State string

const (
	StateQueued    State = "queued"
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
	StateCanceled  State = "canceled"
	StateErrored   State = "errored"
)

// States lists every state in lifecycle order.
var States = []State{StateQueued, StateRunning, StateSucceeded, StateFailed, StateCanceled, StateErrored}

// TerminalStates are the states a job never leaves on its own.
var TerminalStates = []State{StateSucceeded, StateFailed, StateCanceled, StateErrored}

// Terminal reports whether a job in state s will never change again on its own.
func (s State) Terminal() bool {
	switch s {
	case StateSucceeded, StateFailed, StateCanceled, StateErrored:
		return true
	}
	return false
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Reason says why an attempt or a job ended. The set is closed: every outcome
// carries exactly one of these, and the README documents them.
type Reason string

const (
	ReasonSuccess      Reason = "success"       // every step exited 0
	ReasonExitCode     Reason = "exit_code"     // a step exited non-zero (job failure)
	ReasonStepTimeout  Reason = "step_timeout"  // a step ran past its timeout (job failure)
	ReasonJobTimeout   Reason = "job_timeout"   // the job ran past its timeout (job failure)
	ReasonOOM          Reason = "oom"           // a step was killed for memory (job failure)
	ReasonImage        Reason = "image"         // a step's image cannot be used: unknown, refused, unsafe (job failure)
	ReasonResources    Reason = "resources"     // the job asks for more than the executor offers (job failure)
	ReasonCheckout     Reason = "checkout"      // the job's repository or commit cannot be checked out (job failure)
	ReasonArtifacts    Reason = "artifacts"     // the job's artifacts exceed the limit (job failure)
	ReasonCanceled     Reason = "canceled"      // a user asked for cancellation
	ReasonLeaseExpired Reason = "lease_expired" // the executor stopped heartbeating (system)
	ReasonSystemError  Reason = "system_error"  // the executor could not run the job (system)
	ReasonDrained      Reason = "drained"       // the executor shut down before the job ended (system)
)

// Reasons lists the closed set.
var Reasons = []Reason{ReasonSuccess, ReasonExitCode, ReasonStepTimeout, ReasonJobTimeout, ReasonOOM,
	ReasonImage, ReasonResources, ReasonCheckout, ReasonArtifacts, ReasonCanceled, ReasonLeaseExpired, ReasonSystemError, ReasonDrained}

// Valid reports whether r is in the closed set.
func (r Reason) Valid() bool {
	for _, v := range Reasons {
		if r == v {
			return true
		}
	}
	return false
}

// Outcome is what an executor reports when an attempt ends.
type Outcome string

const (
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeCanceled  Outcome = "canceled"
	// OutcomeErrored means the system failed; the coordinator re-queues the job
	// while attempts remain and errors it afterwards.
	OutcomeErrored Outcome = "errored"
)

// Valid reports whether o is a known outcome.
func (o Outcome) Valid() bool {
	switch o {
	case OutcomeSucceeded, OutcomeFailed, OutcomeCanceled, OutcomeErrored:
		return true
	}
	return false
}

// DefaultReason is the reason an outcome gets when the executor gave none.
func (o Outcome) DefaultReason() Reason {
	switch o {
	case OutcomeSucceeded:
		return ReasonSuccess
	case OutcomeFailed:
		return ReasonExitCode
	case OutcomeCanceled:
		return ReasonCanceled
	default:
		return ReasonSystemError
	}
}
