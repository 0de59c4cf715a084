package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

func TestSubmittedJobStreamsLiveLogsAndSucceeds(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(1)
	gate := filepath.Join(t.TempDir(), "gate")

	// The step prints a line, then waits for the test to open the gate: the
	// test can only open it after it saw the line arrive live.
	spec := shellSpec(
		fmt.Sprintf(`echo "first line"; while [ ! -e %s ]; do sleep 0.05; done; echo "after the gate" >&2`, gate),
		`echo "second step"`)
	j := c.submit(spec)

	pr, pw := io.Pipe()
	followed := make(chan string, 1)
	go func() {
		var all strings.Builder
		_, err := c.client.Logs(context.Background(), j.ID, api.LogOptions{Follow: true}, io.MultiWriter(pw, &all))
		pw.CloseWithError(err)
		followed <- all.String()
	}()
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for !strings.Contains(string(buf), "first line") {
		n, err := pr.Read(tmp)
		if err != nil {
			t.Fatalf("log stream ended before the first line: %v (%q)", err, buf)
		}
		buf = append(buf, tmp[:n]...)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	var log string
	select {
	case log = <-followed:
	case <-time.After(30 * time.Second):
		t.Fatal("following the log did not end after the job finished")
	}
	got := c.waitJob(j.ID, 30*time.Second)
	if got.State != job.StateSucceeded || got.Reason != job.ReasonSuccess {
		t.Fatalf("job ended %s/%s (%s), want succeeded/success", got.State, got.Reason, got.Message)
	}
	for _, want := range []string{"first line", "after the gate", "second step"} {
		if !strings.Contains(log, want) {
			t.Errorf("followed log lacks %q:\n%s", want, log)
		}
	}
	if strings.Index(log, "first line") > strings.Index(log, "second step") {
		t.Errorf("log out of order:\n%s", log)
	}
}

func TestSubmitFollowThroughTheCLIMirrorsTheOutcome(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(1)

	stdout, stderr, code := c.cli("submit", "../examples/hello.yaml", "--follow")
	if code != 0 {
		t.Fatalf("submit --follow of the demo exited %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"hello from job", "greeting: hi there", "written by step 1", "tick 3", "this line goes to stderr"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}

	stdout, stderr, code = c.cli("submit", "../examples/failing.yaml", "--follow")
	if code != 1 {
		t.Fatalf("submit --follow of a failing job exited %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, `"broken"`) || !strings.Contains(stderr, "3") {
		t.Errorf("stderr does not name the failing step and its exit code:\n%s", stderr)
	}
	if strings.Contains(stdout, "not reached") {
		t.Errorf("a step after the failing one ran:\n%s", stdout)
	}
}

func TestFailingStepFailsTheJobNamingStepAndExitCode(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(1)

	j := c.submit(job.Spec{Version: 1, Steps: []job.Step{
		{Name: "prepare", Run: "echo ready"},
		{Name: "compile", Run: "echo boom >&2; exit 42"},
		{Name: "publish", Run: "echo should not run"},
	}})
	got := c.waitJob(j.ID, 30*time.Second)
	if got.State != job.StateFailed || got.Reason != job.ReasonExitCode {
		t.Fatalf("job ended %s/%s, want failed/exit_code", got.State, got.Reason)
	}
	if !strings.Contains(got.Message, "compile") || !strings.Contains(got.Message, "42") {
		t.Errorf("message %q does not name the step and the exit code", got.Message)
	}
	if got.Attempt != 1 {
		t.Errorf("a failing step was retried: attempt %d, want 1", got.Attempt)
	}
	if len(got.Attempts) != 1 || len(got.Attempts[0].Steps) != 2 {
		t.Fatalf("want one attempt with two step results, got %+v", got.Attempts)
	}
	if s := got.Attempts[0].Steps[1]; s.Name != "compile" || s.ExitCode != 42 {
		t.Errorf("step result %+v, want compile with exit code 42", s)
	}
	if log := c.logOf(j.ID); strings.Contains(log, "should not run") || !strings.Contains(log, "boom") {
		t.Errorf("log:\n%s", log)
	}
}

func TestCancelMidStepKillsTheProcessTree(t *testing.T) {
	t.Parallel()
	const heartbeat, grace = 300 * time.Millisecond, time.Second
	c := newCluster(t, clusterOpts{heartbeat: heartbeat})
	c.startExecutor(1, "--kill-grace", grace.String())
	pids := filepath.Join(t.TempDir(), "pids")

	// A step that leaves children, a grandchild in its own session, and one
	// that ignores SIGTERM, all recording their PIDs.
	j := c.submit(shellSpec(fmt.Sprintf(`
sleep 300 & echo $! >> %[1]s
setsid sh -c 'echo $$ >> %[1]s; sleep 300' &
sh -c 'trap "" TERM; echo $$ >> %[1]s; while true; do sleep 0.1; done' &
echo $$ >> %[1]s
wait`, pids)))
	waitFile(t, pids, 4, 30*time.Second)

	start := time.Now()
	if out, errOut, code := c.cli("cancel", strconv.FormatInt(j.ID, 10)); code != 0 {
		t.Fatalf("airlock cancel exited %d: %s %s", code, out, errOut)
	}
	got := c.waitJob(j.ID, 30*time.Second)
	took := time.Since(start)
	if got.State != job.StateCanceled {
		t.Fatalf("job ended %s/%s, want canceled", got.State, got.Reason)
	}
	t.Logf("canceled in %v", took)
	// SIGTERM goes out at the next heartbeat; the process that ignores it is
	// SIGKILLed after the grace. Allow generously for a loaded machine.
	if limit := heartbeat + grace + 5*time.Second; took > limit {
		t.Errorf("cancellation took %v, want under %v (one heartbeat interval plus the kill grace)", took, limit)
	}
	for _, l := range lines(t, pids) {
		pid, _ := strconv.Atoi(l)
		if pidAlive(pid) {
			t.Errorf("process %d of the canceled job is still running", pid)
		}
	}
}

func TestKilledExecutorsJobIsReapedAndFinishesOnAnotherExactlyOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{lease: 2 * time.Second, heartbeat: 300 * time.Millisecond})
	dir := t.TempDir()
	started, finished := filepath.Join(dir, "started"), filepath.Join(dir, "finished")
	first := c.startExecutor(1)

	j := c.submit(shellSpec(fmt.Sprintf(`echo "$AIRLOCK_ATTEMPT" >> %s; sleep 2; echo "$AIRLOCK_JOB_ID" >> %s`, started, finished)))
	waitFile(t, started, 1, 30*time.Second)
	first.kill() // SIGKILL: no drain, no report
	c.startExecutor(1)

	got := c.waitJob(j.ID, 60*time.Second)
	if got.State != job.StateSucceeded {
		t.Fatalf("job ended %s/%s (%s), want succeeded", got.State, got.Reason, got.Message)
	}
	if got.Attempt != 2 || len(got.Attempts) != 2 {
		t.Fatalf("job ran %d attempts, want 2: %+v", got.Attempt, got.Attempts)
	}
	if a := got.Attempts[0]; a.Reason != job.ReasonLeaseExpired || a.Executor != "executor-1" {
		t.Errorf("first attempt %+v, want lease_expired on executor-1", a)
	}
	if a := got.Attempts[1]; a.Executor != "executor-2" {
		t.Errorf("second attempt ran on %s, want executor-2", a.Executor)
	}
	time.Sleep(3 * time.Second) // long enough for an orphaned first attempt to have finished, had it survived
	if l := lines(t, finished); len(l) != 1 {
		t.Errorf("the job's step completed %d times, want exactly once: %v", len(l), l)
	}
}

func TestTwoExecutorsRacingOver500JobsRunEachExactlyOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	runs := filepath.Join(t.TempDir(), "runs")
	const n = 500
	ids := make([]int64, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			j, err := c.client.Submit(context.Background(), shellSpec(fmt.Sprintf(`echo "$AIRLOCK_JOB_ID" >> %s`, runs)))
			if err != nil {
				errs <- err
				return
			}
			ids[i] = j.ID
		}(i)
		if i%50 == 49 {
			wg.Wait()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("submitting: %v", err)
	}
	c.startExecutor(4)
	c.startExecutor(4)

	deadline := time.Now().Add(3 * time.Minute)
	for {
		list, err := c.client.List(context.Background(), api.ListOptions{States: []job.State{job.StateQueued, job.StateRunning}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Jobs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs still pending after 3 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	counts := map[string]int{}
	for _, l := range lines(t, runs) {
		counts[l]++
	}
	var dup []string
	for id, n := range counts {
		if n != 1 {
			dup = append(dup, fmt.Sprintf("%s×%d", id, n))
		}
	}
	sort.Strings(dup)
	if len(dup) > 0 {
		t.Errorf("jobs ran more than once: %v", dup)
	}
	if len(counts) != n {
		t.Errorf("%d distinct jobs ran, want %d", len(counts), n)
	}
	executors := map[string]int{}
	for _, id := range ids {
		j, err := c.client.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.StateSucceeded || j.Attempt != 1 {
			t.Errorf("job %d: %s after %d attempts, want succeeded after 1", id, j.State, j.Attempt)
		}
		if len(j.Attempts) > 0 {
			executors[j.Attempts[0].Executor]++
		}
	}
	t.Logf("jobs per executor: %v", executors)
	if len(executors) != 2 {
		t.Errorf("only %d executor(s) ran jobs: %v", len(executors), executors)
	}
}

func TestCoordinatorRestartMidJobTheExecutorReconnectsAndTheJobCompletes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{lease: 20 * time.Second, heartbeat: 300 * time.Millisecond})
	c.startExecutor(1)
	started := filepath.Join(t.TempDir(), "started")

	j := c.submit(shellSpec(fmt.Sprintf(`echo started >> %s; for i in $(seq 1 40); do echo "tick $i"; sleep 0.1; done`, started)))
	waitFile(t, started, 1, 30*time.Second)
	c.coord.kill() // SIGKILL the coordinator mid-job
	time.Sleep(1 * time.Second)
	c.startCoordinator() // same address, same database

	got := c.waitJob(j.ID, 60*time.Second)
	if got.State != job.StateSucceeded || got.Attempt != 1 {
		t.Fatalf("job ended %s/%s after %d attempts (%s), want succeeded after 1", got.State, got.Reason, got.Attempt, got.Message)
	}
	log := c.logOf(j.ID)
	ticks := regexp.MustCompile(`tick (\d+)`).FindAllStringSubmatch(log, -1)
	if len(ticks) != 40 {
		t.Fatalf("log has %d ticks, want 40 (no loss, no duplicate):\n%s", len(ticks), log)
	}
	for i, m := range ticks {
		if m[1] != strconv.Itoa(i+1) {
			t.Fatalf("tick %d is %s: log out of order or duplicated:\n%s", i+1, m[1], log)
		}
	}
}
