package executor

import (
	"errors"
	"net/http"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// errClass says what to do about an error from the coordinator.
type errClass int

const (
	// errTransient: the coordinator is unreachable or failing (transport
	// error, 5xx, 429); retry with backoff.
	errTransient errClass = iota
	// errStale: the attempt is no longer current; abort, never retry.
	errStale
	// errRejected: the token was refused (401/403); the job token is dead,
	// the executor token needs an operator.
	errRejected
	// errRefused: any other 4xx; the request itself is wrong, retrying the
	// same request will not help.
	errRefused
)

// permanentError is a local failure that retrying will not mend.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// permanent marks err as not worth retrying (classify: errRefused).
func permanent(err error) error { return permanentError{err} }

func classify(err error) errClass {
	var pe permanentError
	if errors.As(err, &pe) {
		return errRefused
	}
	switch {
	case errors.Is(err, queue.ErrStaleAttempt):
		return errStale
	case errors.Is(err, api.ErrUnauthorized), errors.Is(err, api.ErrForbidden), errors.Is(err, queue.ErrUnknownToken):
		return errRejected
	case errors.Is(err, queue.ErrNotFound), errors.Is(err, queue.ErrInvalidState),
		errors.Is(err, queue.ErrLogGap), errors.Is(err, queue.ErrLogLimit):
		return errRefused
	}
	var se *api.StatusError
	if errors.As(err, &se) {
		code := se.Status
		if code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout {
			return errTransient
		}
		if code >= 400 {
			return errRefused
		}
	}
	return errTransient
}

// retryable reports whether a log append that failed with err may be retried.
func retryable(err error) bool { return classify(err) == errTransient }
