package coordinator

// Replicas. Several coordinators may share one store (PostgreSQL) behind a
// load balancer. Everything a request needs is in the store or the blob
// store, except the wake-ups of notify.go, which are in-process: a job
// submitted on replica A must wake a claimer long-polling on replica B, and
// a log appended through A must wake a follower reading through B. Peers
// carries those between replicas (PostgreSQL's LISTEN/NOTIFY, which the
// store sends right after the transactions that make a job claimable or change
// it). A lost wake-up costs latency, never correctness: claimers re-ask the
// store every claimRecheck and followers every followRecheck.

import (
	"context"
	"strconv"
)

// Peers tells a coordinator what the other replicas sharing its store did.
// Each channel delivers until ctx ends; an empty string means wake-ups may
// have been lost (a reconnect), so everything must be re-checked.
type Peers interface {
	// Claimable delivers the names of queues that got a claimable job.
	Claimable(ctx context.Context) (<-chan string, error)
	// JobChanges delivers the decimal IDs of jobs that changed (log, end,
	// cancellation).
	JobChanges(ctx context.Context) (<-chan string, error)
}

// listenPeers relays the peers' wake-ups into the claim hub and the job
// watch until ctx ends.
func (s *Server) listenPeers(ctx context.Context) error {
	claimable, err := s.cfg.Peers.Claimable(ctx)
	if err != nil {
		return err
	}
	changes, err := s.cfg.Peers.JobChanges(ctx)
	if err != nil {
		return err
	}
	go func() {
		for q := range claimable {
			if q == "" {
				s.claims.notifyAll()
				continue
			}
			s.claims.notify(q)
		}
	}()
	go func() {
		for p := range changes {
			if p == "" {
				s.watch.wakeAll()
				continue
			}
			if id, err := strconv.ParseInt(p, 10, 64); err == nil {
				s.watch.wake(id)
			}
		}
	}()
	return nil
}
