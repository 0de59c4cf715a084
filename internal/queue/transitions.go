package queue

import (
	"fmt"

	"github.com/airlock-run/airlock/internal/job"
)

// Where a job goes when an attempt ends, once for every implementation
// (the Finish and ReapExpired contracts in store.go).

// JobEnd is what becomes of a job when its current attempt ends: its new
// state and, if that is terminal, its reason and message.
type JobEnd struct {
	State   job.State
	Reason  job.Reason
	Message string
}

// AttemptBudget is what a running job's attempt bookkeeping says: attempts
// used since the budget last started afresh, the budget, and whether
// cancellation was requested.
type AttemptBudget struct {
	Used            int
	MaxAttempts     int
	CancelRequested bool
}

// AfterFinish is where a job goes when its executor reports outcome (with
// the attempt's reason and message): an errored attempt re-queues the job
// while attempts remain, unless cancellation was requested; the job's own
// outcomes map onto the states of the same name.
func AfterFinish(b AttemptBudget, outcome job.Outcome, reason job.Reason, message string) JobEnd {
	switch {
	case outcome == job.OutcomeErrored && b.CancelRequested:
		return JobEnd{State: job.StateCanceled, Reason: job.ReasonCanceled}
	case outcome == job.OutcomeErrored && b.Used < b.MaxAttempts:
		return JobEnd{State: job.StateQueued} // try again; the attempt keeps the reason
	case outcome == job.OutcomeErrored:
		return JobEnd{State: job.StateErrored, Reason: reason, Message: message}
	}
	return JobEnd{State: job.State(outcome), Reason: reason, Message: message}
}

// AfterLeaseExpiry is where a running job goes when its lease ends.
func AfterLeaseExpiry(b AttemptBudget) JobEnd {
	switch {
	case b.CancelRequested:
		return JobEnd{State: job.StateCanceled, Reason: job.ReasonCanceled}
	case b.Used >= b.MaxAttempts:
		return JobEnd{State: job.StateErrored, Reason: job.ReasonLeaseExpired,
			Message: fmt.Sprintf("the executor stopped heartbeating; all %d attempts used", b.Used)}
	}
	return JobEnd{State: job.StateQueued}
}
