package executor

// The claim loop keeps up to min(MaxJobs, MaxClaimsInFlight) long-poll claims
// in flight, so that an executor is not held to one job per claim round trip.
//
// It runs that many claimers. Each one, over and over:
//
//  1. All but the first wait until the executor is busy. When a claim comes
//     back empty the queue has been idle for a whole long poll, and several
//     parked polls would only cost the coordinator: the first claimer alone
//     keeps claiming until a claim returns a job again.
//  2. It reserves a job slot (Executor.slots) for the answer before sending,
//     so that running jobs plus claims in flight never exceed MaxJobs and a
//     job that arrives always runs at once. The slot goes back when the claim
//     comes back empty or fails; with a job, it passes to the job.
//  3. It passes the backoff gate that all claimers share (below).
//  4. It claims on the claim loop's context. Stopping cancels that context,
//     which aborts every long poll at once. A claim answered with a job as it
//     was being aborted still starts that job: the coordinator handed it out,
//     and dropping it would leave it to the lease reaper. Under a hard stop
//     the job is cancelled at once and reported errored/drained, which
//     re-queues it; under a drain it runs to its end like every other job.
//
// The gate paces claims when the coordinator fails them. Open, it lets every
// claimer through. The first failure of a claim sent while the gate was in
// its current state closes it for a backoff delay; failures of claims sent
// before that (in flight when the coordinator went away) only repeat what the
// gate already knows, and change nothing. Once the delay has passed, one
// claimer probes, with a claim that waits only a moment for a job: its answer
// opens the gate, its failure closes it again for the next, longer delay. An
// unreachable coordinator therefore sees one claim per backoff delay, as from
// an executor that keeps a single claim in flight, however many the executor
// keeps in flight otherwise.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/airlock-run/airlock/internal/api"
)

// claimLoop runs the claimers until ctx is done and they have all returned.
func (e *Executor) claimLoop(ctx context.Context) {
	defer close(e.claimDone)
	var wg sync.WaitGroup
	for i := range min(e.cfg.MaxJobs, e.cfg.MaxClaimsInFlight) {
		wg.Go(func() { e.claimer(ctx, i == 0) })
	}
	wg.Wait()
}

// claimer claims jobs, one claim at a time, until ctx is done. The first
// claimer claims even while the executor is idle.
func (e *Executor) claimer(ctx context.Context, first bool) {
	for {
		if !first && !e.demand.wait(ctx) {
			return
		}
		select {
		case e.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		ticket, ok := e.gate.enter(ctx)
		if !ok {
			<-e.slots
			return
		}
		wait := e.cfg.ClaimWait
		if ticket.probe {
			// The probe asks whether the coordinator answers again; a long
			// poll would hold the gate shut while the queue is empty.
			wait = probeWait
		}
		claim, err := e.claim(ctx, wait)
		if ctx.Err() != nil {
			if claim != nil {
				// The long poll was answered as it was being aborted: the
				// job is ours, so run it (a hard stop cancels it at once).
				e.startJob(claim)
			} else {
				<-e.slots
			}
			return
		}
		if err != nil {
			<-e.slots
			e.testSignals.claimFailed.Signal(err)
			e.claimFailed(ticket, err)
			continue
		}
		if n := e.gate.succeed(ticket); n > 0 {
			e.log.Info("coordinator reachable again", "failed_attempts", n)
		}
		if claim == nil {
			<-e.slots
			if !ticket.probe {
				e.demand.set(true)
			}
			continue
		}
		e.demand.set(false)
		// The slot is released by the job when its report is settled.
		e.startJob(claim)
	}
}

// probeWait is the long poll of the claim that probes a failing coordinator.
const probeWait = time.Millisecond

// claim long-polls for a job for up to wait.
func (e *Executor) claim(ctx context.Context, wait time.Duration) (*api.ClaimResponse, error) {
	// Guard against a connection that hangs past the long poll.
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	e.mu.Lock()
	info := e.infoLocked()
	e.mu.Unlock()
	// The client's errors already say "claiming a job".
	return e.c.Claim(ctx, api.ClaimRequest{
		Executor: info,
		Queues:   slices.Clone(e.cfg.Queues),
		WaitMS:   max(wait.Milliseconds(), 1),
	})
}

// claimFailed closes the gate for a claim that failed with err, and logs
// the failure.
func (e *Executor) claimFailed(ticket gateTicket, err error) {
	class := classify(err)
	n, d, counted := e.gate.fail(ticket, func(failures int) time.Duration {
		if class == errTransient {
			return e.cfg.Backoff.Delay(failures)
		}
		return e.cfg.Backoff.Max
	})
	if !counted {
		// Sent before the gate closed: the failure that closed it was logged.
		e.log.Debug("claim failed while the coordinator was failing", "error", err)
		return
	}
	switch class {
	case errRejected:
		e.log.Error(fmt.Sprintf("executor token rejected by the coordinator, retrying in %s", round(d)),
			"error", err, "attempt", n)
	case errRefused:
		e.log.Error(fmt.Sprintf("coordinator refused the claim, retrying in %s", round(d)),
			"error", err, "attempt", n)
	default:
		e.log.Warn(fmt.Sprintf("coordinator unreachable, retrying in %s", round(d)),
			"error", err, "attempt", n)
	}
}

// claimGate paces the claimers while claims fail; see the top of the file.
type claimGate struct {
	mu       sync.Mutex
	gen      uint64        // bumped whenever the gate opens or closes
	failures int           // consecutive failures counted; 0 while open
	until    time.Time     // while closed: no probe before then
	probing  bool          // while closed: a probe is in flight
	changed  chan struct{} // closed and replaced when the state changes
}

// gateTicket is a claimer's pass through the gate: the state it passed in,
// and whether it is the probe.
type gateTicket struct {
	gen   uint64
	probe bool
}

func newClaimGate() *claimGate {
	return &claimGate{changed: make(chan struct{})}
}

// enter waits until a claim may be sent; ok is false when ctx ended first.
func (g *claimGate) enter(ctx context.Context) (t gateTicket, ok bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		g.mu.Lock()
		if g.failures == 0 {
			t = gateTicket{gen: g.gen}
			g.mu.Unlock()
			return t, true
		}
		wait := time.Until(g.until)
		if !g.probing && wait <= 0 {
			g.probing = true
			t = gateTicket{gen: g.gen, probe: true}
			g.mu.Unlock()
			return t, true
		}
		// While a probe is in flight, wait for its outcome alone.
		var expired <-chan time.Time
		if !g.probing {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			expired = timer.C
		}
		changed := g.changed
		g.mu.Unlock()
		select {
		case <-changed:
		case <-expired:
		case <-ctx.Done():
			return gateTicket{}, false
		}
	}
}

// fail records that the claim sent with t failed. When the gate had not
// changed since t was issued, the failure counts: the gate closes for
// delay(n), n being the consecutive failures so far, and counted is true.
// Otherwise the failure changes nothing.
func (g *claimGate) fail(t gateTicket, delay func(n int) time.Duration) (n int, d time.Duration, counted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.gen != g.gen {
		return g.failures, 0, false
	}
	g.failures++
	d = delay(g.failures)
	g.until = time.Now().Add(d)
	g.probing = false
	g.changedLocked()
	return g.failures, d, true
}

// succeed records that the claim sent with t was answered. When it was the
// probe, the gate opens and succeed returns the failures that had closed it.
func (g *claimGate) succeed(t gateTicket) (recovered int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.gen != g.gen || g.failures == 0 {
		return 0
	}
	recovered = g.failures
	g.failures = 0
	g.probing = false
	g.changedLocked()
	return recovered
}

func (g *claimGate) changedLocked() {
	g.gen++
	close(g.changed)
	g.changed = make(chan struct{})
}

// claimDemand says whether the claimers beyond the first should claim: not
// after a claim came back empty, until a claim returns a job again.
type claimDemand struct {
	mu   sync.Mutex
	idle bool
	busy chan struct{} // closed when idle turns false
}

func newClaimDemand() *claimDemand {
	return &claimDemand{busy: make(chan struct{})}
}

// set records whether the latest claim came back empty (idle true) or with a
// job (idle false).
func (d *claimDemand) set(idle bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.idle == idle {
		return
	}
	d.idle = idle
	if !idle {
		close(d.busy)
		d.busy = make(chan struct{})
	}
}

// wait waits until the executor is busy; it reports false when ctx ended
// first.
func (d *claimDemand) wait(ctx context.Context) bool {
	d.mu.Lock()
	idle, busy := d.idle, d.busy
	d.mu.Unlock()
	if !idle {
		return true
	}
	select {
	case <-busy:
		return true
	case <-ctx.Done():
		return false
	}
}
