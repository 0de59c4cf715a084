package coordinator

import (
	"context"
	"time"

	"github.com/airlock-run/airlock/internal/job"
)

// reapLoop ends expired attempts every ReapInterval until ctx ends.
func (s *Server) reapLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reapOnce(ctx)
		}
	}
}

// reapOnce re-queues, errors or cancels every running job whose lease
// expired, and wakes claimers for the re-queued ones and followers of all.
func (s *Server) reapOnce(ctx context.Context) {
	reaped, err := s.store.ReapExpired(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("reaping expired attempts", "err", err)
		}
		return
	}
	for _, rp := range reaped {
		s.metrics.reaped.WithLabelValues(string(rp.NewState)).Inc()
		s.log.Warn("reaped attempt: lease expired",
			"job_id", rp.Attempt.JobID, "attempt", rp.Attempt.Attempt, "new_state", rp.NewState)
		s.watch.wake(rp.Attempt.JobID)
		if rp.NewState != job.StateQueued {
			continue
		}
		j, err := s.store.Get(ctx, rp.Attempt.JobID)
		if err != nil {
			s.log.Warn("looking up reaped job", "job_id", rp.Attempt.JobID, "err", err)
			s.claims.notifyAll()
			continue
		}
		if j.State == job.StateQueued {
			s.claims.notify(j.Queue)
		}
	}
}
