package executor

import (
	"sync"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// testSignals let tests wait for what the executor did instead of sleeping,
// in the style of riverqueue/river's testsignal. They do nothing until Init.
type testSignals struct {
	claimFailed   testSignal[error]                // a claim failed (any error)
	claimed       testSignal[queue.AttemptRef]     // a job was claimed
	heartbeat     testSignal[api.HeartbeatRequest] // a heartbeat was acknowledged
	stepStarted   testSignal[stepEvent]            // a step is about to run
	jobDone       testSignal[jobReport]            // a job ended and its report is settled
	drainCanceled testSignal[int]                  // Stop's deadline passed; n jobs cancelled
	janitorPass   testSignal[error]                // a janitor pass ended
}

func (s *testSignals) Init() {
	s.claimFailed.Init()
	s.claimed.Init()
	s.heartbeat.Init()
	s.stepStarted.Init()
	s.jobDone.Init()
	s.drainCanceled.Init()
	s.janitorPass.Init()
}

type stepEvent struct {
	Ref  queue.AttemptRef
	Step string
}

// jobReport is what became of one attempt.
type jobReport struct {
	Ref      queue.AttemptRef
	Finish   api.FinishRequest // what was (or would have been) reported
	Reported bool              // Finish was acknowledged
	Lost     bool              // the attempt was lost; nothing was reported
}

// testSignal is an unbounded queue of values, inert until Init.
type testSignal[T any] struct {
	mu    sync.Mutex
	on    bool
	queue []T
	ready chan struct{} // closed and replaced when a value arrives
}

func (s *testSignal[T]) Init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on = true
	s.ready = make(chan struct{})
}

// Signal records v if the signal is initialised.
func (s *testSignal[T]) Signal(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return
	}
	s.queue = append(s.queue, v)
	close(s.ready)
	s.ready = make(chan struct{})
}

// WaitOrTimeout returns the oldest value not yet taken, waiting for one up to
// a generous timeout; it fails the test on timeout.
func (s *testSignal[T]) WaitOrTimeout(tb testingTB) T {
	tb.Helper()
	v, ok := s.wait(testSignalTimeout)
	if !ok {
		tb.Fatalf("timed out after %s waiting for a test signal", testSignalTimeout)
	}
	return v
}

// WaitFor returns the first value for which ok is true, dropping the others.
func (s *testSignal[T]) WaitFor(tb testingTB, ok func(T) bool) T {
	tb.Helper()
	deadline := time.Now().Add(testSignalTimeout)
	for {
		v, got := s.wait(time.Until(deadline))
		if !got {
			tb.Fatalf("timed out after %s waiting for a matching test signal", testSignalTimeout)
		}
		if ok(v) {
			return v
		}
	}
}

func (s *testSignal[T]) wait(d time.Duration) (T, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if !s.on {
			s.mu.Unlock()
			panic("test signal used before Init")
		}
		if len(s.queue) > 0 {
			v := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return v, true
		}
		ready := s.ready
		s.mu.Unlock()
		select {
		case <-ready:
		case <-timer.C:
			var zero T
			return zero, false
		}
	}
}

const testSignalTimeout = 20 * time.Second

// testingTB is the part of testing.TB the signals use, so that this
// production file need not import package testing.
type testingTB interface {
	Helper()
	Fatalf(format string, args ...any)
}
