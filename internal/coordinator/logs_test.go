package coordinator

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

// chanWriter hands every write to the test as it happens.
type chanWriter chan []byte

func (w chanWriter) Write(p []byte) (int, error) {
	w <- bytes.Clone(p)
	return len(p), nil
}

type follower struct {
	e    *env
	out  chanWriter
	got  bytes.Buffer
	done chan struct{}
	next int64
	err  error
}

// follow starts Logs with Follow and waits until the coordinator holds the
// follow open.
func (e *env) follow(id int64, opts api.LogOptions) *follower {
	e.t.Helper()
	f := &follower{e: e, out: make(chanWriter, 100), done: make(chan struct{})}
	before := e.srv.watch.followers(id)
	opts.Follow = true
	go func() {
		defer close(f.done)
		f.next, f.err = e.client.Logs(context.Background(), id, opts, f.out)
	}()
	waitFor(e.t, "the follow to start", func() bool { return e.srv.watch.followers(id) > before })
	return f
}

// expect waits until the follower has received want in total.
func (f *follower) expect(want string) {
	f.e.t.Helper()
	timeout := time.After(5 * time.Second)
	for f.got.String() != want {
		if f.got.Len() >= len(want) {
			f.e.t.Fatalf("follower got %q, want %q", f.got.String(), want)
		}
		select {
		case p := <-f.out:
			f.got.Write(p)
		case <-timeout:
			f.e.t.Fatalf("follower got %q, want %q", f.got.String(), want)
		}
	}
}

// wait waits for Logs to return and drains what it wrote last.
func (f *follower) wait() {
	f.e.t.Helper()
	select {
	case <-f.done:
	case <-time.After(5 * time.Second):
		f.e.t.Fatal("Logs did not return")
	}
	for {
		select {
		case p := <-f.out:
			f.got.Write(p)
		default:
			return
		}
	}
}

func (e *env) finish(c *api.ClaimResponse, o job.Outcome, r job.Reason) {
	e.t.Helper()
	if _, err := e.exec.Finish(context.Background(), c.Token, ref(c), api.FinishRequest{Outcome: o, Reason: r}); err != nil {
		e.t.Fatalf("Finish: %v", err)
	}
}

func TestLogFollowLive(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(testSpec("q"))
	c := e.claim("exec", "q")
	e.appendLog(c.Token, ref(c), 0, "before\n")
	f := e.follow(c.Job.ID, api.LogOptions{})
	f.expect("before\n")
	e.appendLog(c.Token, ref(c), 7, "one\n")
	f.expect("before\none\n")
	e.appendLog(c.Token, ref(c), 11, "two\n")
	f.expect("before\none\ntwo\n")
	select {
	case <-f.done:
		t.Fatal("Logs returned while the job runs")
	default:
	}
	e.finish(c, job.OutcomeSucceeded, job.ReasonSuccess)
	f.wait()
	if f.err != nil || f.next != 15 || f.got.String() != "before\none\ntwo\n" {
		t.Errorf("Logs = %q, next %d, %v; want all 15 bytes, nil", f.got.String(), f.next, f.err)
	}
}

func TestLogFollowFromOffset(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(testSpec("q"))
	c := e.claim("exec", "q")
	e.appendLog(c.Token, ref(c), 0, "0123456789")
	f := e.follow(c.Job.ID, api.LogOptions{Attempt: 1, Offset: 4})
	f.expect("456789")
	e.finish(c, job.OutcomeFailed, job.ReasonExitCode)
	f.wait()
	if f.err != nil || f.next != 10 {
		t.Errorf("Logs next %d, %v; want 10, nil", f.next, f.err)
	}
}

func TestLogFollowWaitsForFirstAttempt(t *testing.T) {
	t.Parallel()
	e := setup(t)
	j := e.submit(testSpec("q"))
	f := e.follow(j.ID, api.LogOptions{})
	c := e.claim("exec", "q")
	e.appendLog(c.Token, ref(c), 0, "started\n")
	f.expect("started\n")
	e.finish(c, job.OutcomeSucceeded, job.ReasonSuccess)
	f.wait()
	if f.err != nil || f.next != 8 {
		t.Errorf("Logs next %d, %v; want 8, nil", f.next, f.err)
	}
}

func TestLogFollowQueuedJobCanceled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	j := e.submit(testSpec("q"))
	f := e.follow(j.ID, api.LogOptions{})
	if _, err := e.client.Cancel(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	f.wait()
	if f.err != nil || f.next != 0 || f.got.Len() != 0 {
		t.Errorf("Logs = %q, next %d, %v; want nothing, nil", f.got.String(), f.next, f.err)
	}
}

// TestLogFollowSuperseded: the follow of an attempt ends when the reaper
// takes it back; a new follow of the re-queued job waits for attempt 2.
func TestLogFollowSuperseded(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.ReapInterval = 5 * time.Millisecond })
	e.submit(testSpec("q"))
	first := e.claim("exec", "q")
	e.appendLog(first.Token, ref(first), 0, "first\n")
	f := e.follow(first.Job.ID, api.LogOptions{})
	f.expect("first\n")
	e.clock.Advance(DefaultLease + time.Second)
	f.wait()
	if f.err != nil || f.next != 6 {
		t.Errorf("Logs next %d, %v; want 6, nil", f.next, f.err)
	}

	f = e.follow(first.Job.ID, api.LogOptions{})
	second := e.claim("exec", "q")
	e.appendLog(second.Token, ref(second), 0, "second\n")
	f.expect("second\n")
	e.finish(second, job.OutcomeSucceeded, job.ReasonSuccess)
	f.wait()
	if f.err != nil || f.got.String() != "second\n" {
		t.Errorf("Logs = %q, %v; want only attempt 2's log", f.got.String(), f.err)
	}
}

// TestLogFollowResumes cuts the connection mid-stream: the client reconnects
// and resumes at its offset, with nothing lost or repeated.
func TestLogFollowResumes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.submit(testSpec("q"))
	c := e.claim("exec", "q")
	f := e.follow(c.Job.ID, api.LogOptions{})
	e.appendLog(c.Token, ref(c), 0, "a\n")
	f.expect("a\n")
	e.ts.CloseClientConnections()
	e.appendLog(c.Token, ref(c), 2, "b\n")
	f.expect("a\nb\n")
	e.appendLog(c.Token, ref(c), 4, "c\n")
	f.expect("a\nb\nc\n")
	e.finish(c, job.OutcomeSucceeded, job.ReasonSuccess)
	f.wait()
	if f.err != nil || f.next != 6 || f.got.String() != "a\nb\nc\n" {
		t.Errorf("Logs = %q, next %d, %v; want %q, 6, nil", f.got.String(), f.next, f.err, "a\nb\nc\n")
	}
}

// TestLogReadHeaders checks the headers of a plain read and a read of a job
// never claimed.
func TestLogReadHeaders(t *testing.T) {
	t.Parallel()
	e := setup(t)
	j := e.submit(testSpec("q"))
	status, _, h := e.raw("GET", api.Prefix+"/jobs/1/logs", clientToken, "", nil)
	if status != 200 || h.Get(api.HeaderLogAttempt) != "0" || h.Get(api.HeaderLogOffset) != "0" {
		t.Errorf("log of a queued job: %d attempt %q offset %q, want 200 0 0", status, h.Get(api.HeaderLogAttempt), h.Get(api.HeaderLogOffset))
	}
	c := e.claim("exec", "q")
	e.appendLog(c.Token, ref(c), 0, "hello")
	status, _, h = e.raw("GET", api.Prefix+"/jobs/1/logs?offset=2", clientToken, "", nil)
	if status != 200 || h.Get(api.HeaderLogAttempt) != "1" || h.Get(api.HeaderLogOffset) != "2" ||
		h.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("log read: %d attempt %q offset %q type %q", status, h.Get(api.HeaderLogAttempt), h.Get(api.HeaderLogOffset), h.Get("Content-Type"))
	}
	_ = j
}
