package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/queue"
)

// TestClaimHubHandsOffUnspentSignal: a claimer signalled while its store
// attempt is in flight, which then returns with a job anyway, passes the
// signal on to the next claimer, which asks the store again.
func TestClaimHubHandsOffUnspentSignal(t *testing.T) {
	t.Parallel()
	h := newClaimHub()
	ctx := context.Background()
	done := make(chan struct{})

	// A asks the store and is held there until released.
	aInTry, aRelease := make(chan struct{}), make(chan struct{})
	aResult := make(chan *queue.Claim, 1)
	go func() {
		c, _ := h.claim(ctx, []string{"q"}, 10*time.Second, done, func() (*queue.Claim, error) {
			close(aInTry)
			<-aRelease
			return &queue.Claim{Attempt: 1}, nil // a job that was there before the signal
		})
		aResult <- c
	}()
	<-aInTry

	// B finds nothing and waits, behind A in line.
	bTries := make(chan struct{}, 10)
	bResult := make(chan *queue.Claim, 1)
	go func() {
		n := 0
		c, _ := h.claim(ctx, []string{"q"}, 10*time.Second, done, func() (*queue.Claim, error) {
			n++
			bTries <- struct{}{}
			if n == 1 {
				return nil, nil
			}
			return &queue.Claim{Attempt: 2}, nil
		})
		bResult <- c
	}()
	<-bTries
	waitFor(t, "B to wait", func() bool { return h.waitingOn("q") == 2 })

	h.notify("q") // wakes A, the longest waiting, in the middle of its try
	if got := h.waitingOn("q"); got != 1 {
		t.Fatalf("%d waiting after one notify, want 1 (B)", got)
	}
	close(aRelease)
	if c := <-aResult; c == nil || c.Attempt != 1 {
		t.Fatalf("A got %+v, want its job", c)
	}
	select {
	case c := <-bResult:
		if c == nil || c.Attempt != 2 {
			t.Errorf("B got %+v, want the job it was handed the wake-up for", c)
		}
	case <-time.After(3 * time.Second): // well before B's 5s re-check
		t.Fatal("B was not woken by the signal A did not spend")
	}
}

// TestClaimHubWakesDistinctWaiters: n notifies with n waiters wake n distinct
// waiters; a notify with none waiting is dropped.
func TestClaimHubWakesDistinctWaiters(t *testing.T) {
	t.Parallel()
	h := newClaimHub()
	h.notify("q") // nobody waits: dropped
	done := make(chan struct{})
	defer close(done)
	woken := make(chan int, 3)
	for i := range 3 {
		go func() {
			tries := 0
			h.claim(context.Background(), []string{"q", "other"}, 10*time.Second, done, func() (*queue.Claim, error) {
				tries++
				if tries == 1 {
					return nil, nil
				}
				woken <- i
				return &queue.Claim{}, nil
			})
		}()
		waitFor(t, "the waiter to register", func() bool { return h.waitingOn("q") == i+1 })
	}
	h.notify("q")
	h.notify("other")
	seen := map[int]bool{}
	for range 2 {
		select {
		case i := <-woken:
			if seen[i] {
				t.Errorf("waiter %d woken twice", i)
			}
			seen[i] = true
		case <-time.After(3 * time.Second):
			t.Fatal("a notify woke nobody")
		}
	}
	// The two woken waiters leave once their try returns; the third stays.
	waitFor(t, "exactly one waiter left", func() bool { return h.waitingOn("q") == 1 })
	select {
	case i := <-woken:
		t.Errorf("waiter %d was woken too: two notifies woke three waiters", i)
	default:
	}
}
