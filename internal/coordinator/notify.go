package coordinator

// In-process wake-ups: claimHub for executors long-polling for work, jobWatch
// for clients following a job's log.
//
// # Claim wake-ups
//
// A claimer loops: register, ask the store, and if the store had nothing,
// wait for a signal. Registering before asking means a job committed after
// the store said "nothing" is always followed by a notify that finds the
// claimer registered: no lost wake-ups.
//
// notify(q) wakes exactly one registered claimer of queue q — the one that
// has waited longest — and unregisters it, so a burst of n submits wakes n
// different claimers instead of stampeding all of them onto the store for
// one job. That is only correct if every signal is either spent on a store
// attempt that starts after it arrived, or passed on: a claimer that leaves
// (it got a job from an attempt that started before the signal, its client
// went away) while holding a signal it did not spend hands it to the next
// claimer of the same queue; one whose wait ends just as it is signalled
// spends the signal on a last try. A notify that finds no
// unsignalled claimer is dropped: every registered claimer is then already
// on its way to the store, and a claimer arriving later asks the store
// before it waits.
//
// # Log wake-ups
//
// jobWatch keeps, per followed job, a channel that is closed (and replaced)
// on every change to the job: a log append, a claim, a finish, a cancel, a
// reap. A follower takes the current channel before it reads the store, so
// a change made after the read always closes the channel it then waits on.

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/airlock-run/airlock/internal/queue"
)

// claimRecheck is the safety net of a waiting claimer: it asks the store
// again this often even without a signal. Nothing on the fast path depends
// on it; it covers jobs made claimable by another process sharing the store.
const claimRecheck = 5 * time.Second

type claimHub struct {
	mu      sync.Mutex
	waiting map[string][]*claimWaiter // per queue, longest waiting first; unsignalled only
}

type claimWaiter struct {
	queues []string
	ch     chan struct{} // capacity 1; receives the one signal

	// Guarded by claimHub.mu.
	registered  bool
	signalledBy string // the queue whose notify woke it, until spent or passed on
}

func newClaimHub() *claimHub {
	return &claimHub{waiting: make(map[string][]*claimWaiter)}
}

// register puts w at the back of the line of each of its queues.
func (h *claimHub) register(w *claimWaiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.registered {
		return // not signalled since it last registered: keep its place in line
	}
	select { // drop the signal that woke it, if it was not received
	case <-w.ch:
	default:
	}
	w.registered = true
	w.signalledBy = ""
	for _, q := range w.queues {
		h.waiting[q] = append(h.waiting[q], w)
	}
}

// remove takes w out of every line. Callers hold h.mu.
func (h *claimHub) remove(w *claimWaiter) {
	for _, q := range w.queues {
		line := h.waiting[q]
		if i := slices.Index(line, w); i >= 0 {
			line = slices.Delete(line, i, i+1)
		}
		if len(line) == 0 {
			delete(h.waiting, q)
		} else {
			h.waiting[q] = line
		}
	}
	w.registered = false
}

// leave unregisters w and returns the queue of a signal it received but did
// not spend ("" if none), which the caller must pass on.
func (h *claimHub) leave(w *claimWaiter) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.registered {
		h.remove(w)
		return ""
	}
	q := w.signalledBy
	w.signalledBy = ""
	return q
}

// notify wakes the longest-waiting claimer of queue q, if any.
func (h *claimHub) notify(q string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	line := h.waiting[q]
	if len(line) == 0 {
		return
	}
	w := line[0]
	h.remove(w)
	w.signalledBy = q
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// notifyAll wakes every waiting claimer, for when the queue of a newly
// claimable job is not known.
func (h *claimHub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for q, line := range h.waiting {
		for _, w := range slices.Clone(line) {
			if !w.registered {
				continue // already woken through another of its queues
			}
			h.remove(w)
			w.signalledBy = q
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

// waitingOn reports how many claimers wait on queue q (for tests).
func (h *claimHub) waitingOn(q string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.waiting[q])
}

// claim calls try until it returns a claim or an error, waiting for a signal
// between calls, for at most wait. It returns (nil, nil) when the wait ends
// (or done is closed) without a job, and ctx's error if ctx ends first.
func (h *claimHub) claim(ctx context.Context, queues []string, wait time.Duration, done <-chan struct{},
	try func() (*queue.Claim, error)) (*queue.Claim, error) {
	w := &claimWaiter{queues: queues, ch: make(chan struct{}, 1)}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	recheck := time.NewTicker(min(claimRecheck, wait))
	defer recheck.Stop()
	for {
		h.register(w)
		c, err := try()
		if c != nil || err != nil {
			if q := h.leave(w); q != "" {
				h.notify(q) // a signal that arrived during try was not spent on it
			}
			return c, err
		}
		select {
		case <-w.ch:
			continue // leave would find w unregistered; register again and ask the store
		case <-recheck.C:
			continue // still registered (register keeps its place), or signalled: the next try spends it
		case <-deadline.C:
		case <-done:
		case <-ctx.Done():
		}
		q := h.leave(w)
		if err := ctx.Err(); err != nil {
			if q != "" {
				h.notify(q)
			}
			return nil, err
		}
		if q != "" {
			// Woken as the wait ended: spend the wake-up on a last try
			// rather than leave with it, since the caller is still here.
			return try()
		}
		return nil, nil
	}
}

// jobWatch broadcasts "this job changed" to the followers of its log.
type jobWatch struct {
	mu sync.Mutex
	m  map[int64]*watchEntry
}

type watchEntry struct {
	ch   chan struct{} // closed and replaced on every change
	refs int
}

// jobSub is one follower's subscription to one job.
type jobSub struct {
	jw *jobWatch
	id int64
	e  *watchEntry
}

func newJobWatch() *jobWatch {
	return &jobWatch{m: make(map[int64]*watchEntry)}
}

// subscribe starts following job id; call close when done.
func (jw *jobWatch) subscribe(id int64) *jobSub {
	jw.mu.Lock()
	defer jw.mu.Unlock()
	e := jw.m[id]
	if e == nil {
		e = &watchEntry{ch: make(chan struct{})}
		jw.m[id] = e
	}
	e.refs++
	return &jobSub{jw: jw, id: id, e: e}
}

// changed returns a channel closed by the next change to the job. Take it
// before reading the job's state, wait on it after.
func (s *jobSub) changed() <-chan struct{} {
	s.jw.mu.Lock()
	defer s.jw.mu.Unlock()
	return s.e.ch
}

func (s *jobSub) close() {
	s.jw.mu.Lock()
	defer s.jw.mu.Unlock()
	s.e.refs--
	if s.e.refs == 0 {
		delete(s.jw.m, s.id)
	}
}

// wake tells every follower of job id that it changed.
func (jw *jobWatch) wake(id int64) {
	jw.mu.Lock()
	defer jw.mu.Unlock()
	if e := jw.m[id]; e != nil {
		close(e.ch)
		e.ch = make(chan struct{})
	}
}

// followers reports how many followers job id has (for tests).
func (jw *jobWatch) followers(id int64) int {
	jw.mu.Lock()
	defer jw.mu.Unlock()
	if e := jw.m[id]; e != nil {
		return e.refs
	}
	return 0
}

// wakeAll tells every follower of every job that it may have changed.
func (jw *jobWatch) wakeAll() {
	jw.mu.Lock()
	defer jw.mu.Unlock()
	for _, e := range jw.m {
		close(e.ch)
		e.ch = make(chan struct{})
	}
}
