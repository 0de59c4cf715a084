// Package sandboxtest is the conformance suite every sandbox.Runtime passes:
// the package contract of internal/sandbox, checked with real steps.
//
// It is written against the interface only. Where runtimes legitimately
// differ, they say so in Options. A bug found in one runtime becomes a case
// here.
//
// Steps use a POSIX /bin/sh and a few common utilities: cat, head, yes,
// sleep, setsid, pwd, mkdir, chmod, ln, touch (coreutils, util-linux or
// busybox all do). They also read /proc/$$/environ, and the process-tree
// cases use FIFOs that the suite creates in the workspace: every process of
// the tree holds one open (its "lifeline"), so the tree is gone exactly when
// nobody holds it — a check that needs neither host PIDs nor waiting.
//
// The writers the suite passes to Step.Stdout and Step.Stderr are not safe
// for concurrent use, so running the suite under -race also checks that a
// runtime never calls one writer from two goroutines at once, nor after Run
// has returned.
package sandboxtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/sandbox"
)

// Options describe how the runtime under test legitimately differs.
type Options struct {
	// Image is put in every Step.Image. It must provide the tools listed in
	// the package doc. The shell runtime ignores it.
	Image string
	// ExtraEnv names the variables the runtime adds to every step's
	// environment besides HOME and PATH (the shell runtime adds its marker
	// variables). Any other variable a step was not given fails the suite.
	ExtraEnv []string
	// HostPIDs says that the PIDs a step sees are host PIDs (no PID
	// namespace). The process-tree cases then also check, in the host's
	// /proc, that every PID the step recorded is gone or a zombie.
	HostPIDs bool
}

const (
	// canaryEnv is set in the test process; no step may see it.
	canaryEnv = "AIRLOCK_SANDBOXTEST_CANARY"
	// grace is the KillGrace of the steps the suite interrupts: short, to
	// keep the suite fast.
	grace = 200 * time.Millisecond
	// margin is how much longer than its KillGrace an interrupted Run may
	// take to return.
	margin = 2 * time.Second
	// runTimeout bounds every Run, so that a broken runtime fails the suite
	// instead of hanging it.
	runTimeout = time.Minute
)

// Exercise runs the suite against rt. Its subtests run in parallel, each with
// sandboxes of its own; Exercise returns when they have all finished.
//
// It sets an environment variable in the test process (a canary no step
// may see) and leaves it set: unsetting it under a concurrent Exercise would
// make that run's check vacuous.
func Exercise(t *testing.T, rt sandbox.Runtime, opts Options) {
	t.Helper()
	os.Setenv(canaryEnv, "the executor's environment leaked into a step")
	s := &suite{rt: rt, opts: opts}
	t.Run("sandboxtest", func(t *testing.T) {
		for _, c := range s.cases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.fn(t)
			})
		}
	})
}

type suite struct {
	rt   sandbox.Runtime
	opts Options
}

type testCase struct {
	name string
	fn   func(t *testing.T)
}

func (s *suite) cases() []testCase {
	return []testCase{
		{"exit codes are preserved", s.testExitCodes},
		{"a step killed by a signal reports the signal", s.testKilledBySignal},
		{"the environment is the step's env and the documented additions only", s.testEnv},
		{"stdin is empty", s.testStdin},
		{"a step runs in the workspace or in its Dir inside it", s.testWorkingDir},
		{"steps share the workspace", s.testSharedWorkspace},
		{"stdout and stderr keep their order on one writer", s.testOrderOneWriter},
		{"stdout and stderr go to their own writers", s.testSeparateWriters},
		{"nil writers discard output", s.testNilWriters},
		{"very large output arrives whole", s.testLargeOutput},
		{"very fast output arrives whole", s.testFastOutput},
		{"many tiny writes arrive whole and in order", s.testTinyWrites},
		{"a slow writer holds the step back and loses nothing", s.testSlowWriter},
		{"a timeout kills the whole process tree", s.testTimeoutKillsTree},
		{"cancelling kills the whole process tree promptly", s.testCancelKillsTree},
		{"a successful step does not leave processes behind", s.testNoLeftoversAfterSuccess},
		{"an interrupted step gets SIGTERM first", s.testTermFirst},
		{"a step ignoring SIGTERM is killed after KillGrace", s.testKillAfterGrace},
		{"a step whose context is already done does not run", s.testDoneBeforeRun},
		{"Close removes the workspace", s.testCloseRemoves},
		{"Close removes the workspace when its context is done", s.testCloseDoneCtx},
		{"sandboxes in parallel have their own workspaces", s.testParallelSandboxes},
	}
}

// --- exit status ---

func (s *suite) testExitCodes(t *testing.T) {
	sb := s.open(t)
	for _, code := range []int{0, 1, 3, 126, 255} {
		t.Run(fmt.Sprintf("exit %d", code), func(t *testing.T) {
			got := s.mustRun(t, sb, s.step(fmt.Sprintf("exit %d", code)))
			want := sandbox.Result{ExitCode: code}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Result mismatch (-want +got):\n%s", diff)
			}
			if got.Success() != (code == 0) {
				t.Errorf("Success() = %v for exit code %d", got.Success(), code)
			}
		})
	}
}

func (s *suite) testKilledBySignal(t *testing.T) {
	sb := s.open(t)
	for _, sig := range []string{"KILL", "TERM", "USR1"} {
		t.Run("SIG"+sig, func(t *testing.T) {
			got := s.mustRun(t, sb, s.step("kill -"+sig+" $$; sleep 10"))
			want := sandbox.Result{ExitCode: -1, Signal: "SIG" + sig}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Result mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// --- environment, stdin, working directory, workspace ---

func (s *suite) testEnv(t *testing.T) {
	given := map[string]string{
		"PLAIN":   "value",
		"SPACES":  "a b  c ",
		"EQUALS":  "k=v=w",
		"NEWLINE": "line one\nline two",
		"EMPTY":   "",
		"UNICODE": "π ≈ 3.14",
		"QUOTES":  `"'$HOME` + "`id`",
	}
	tests := []struct {
		name string
		add  map[string]string // HOME and PATH, when the step sets them
	}{
		{"without HOME or PATH", nil},
		{"with HOME and PATH", map[string]string{"HOME": "/sandboxtest-home", "PATH": "/usr/local/bin:/usr/bin:/bin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := s.open(t)
			env := make(map[string]string)
			for k, v := range given {
				env[k] = v
			}
			for k, v := range tt.add {
				env[k] = v
			}
			st := s.step("cat /proc/$$/environ > environ.out; exit 0")
			st.Env = env
			if res := s.mustRun(t, sb, st); !res.Success() {
				t.Fatalf("Result = %+v, want success", res)
			}
			got := readEnviron(t, filepath.Join(sb.WorkDir(), "environ.out"))

			if v, ok := got[canaryEnv]; ok {
				t.Errorf("the step saw the executor's %s=%q", canaryEnv, v)
			}
			for _, k := range []string{"HOME", "PATH"} {
				if _, set := tt.add[k]; set {
					continue
				}
				if got[k] == "" {
					t.Errorf("%s is empty or unset; the runtime adds it when the step does not set it", k)
				}
				delete(got, k)
			}
			for _, k := range s.opts.ExtraEnv {
				delete(got, k)
			}
			if diff := cmp.Diff(env, got); diff != "" {
				t.Errorf("step environment mismatch (-given +seen, runtime additions removed):\n%s", diff)
			}
		})
	}
}

func (s *suite) testStdin(t *testing.T) {
	sb := s.open(t)
	var out bytes.Buffer
	st := s.step(`if read line; then echo "read: $line"; else echo eof; fi`)
	st.Stdout = &out
	s.mustSucceed(t, sb, st)
	if got, want := out.String(), "eof\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

func (s *suite) testWorkingDir(t *testing.T) {
	tests := []struct {
		name, dir string
	}{
		{"workspace root", ""},
		{"Dir", "sub"},
		{"nested Dir", "sub/dir/deeper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := s.open(t)
			if tt.dir != "" {
				if err := os.MkdirAll(filepath.Join(sb.WorkDir(), tt.dir), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			st := s.step("echo here > marker.txt; pwd -P")
			st.Dir = tt.dir
			st.Stdout = &out
			s.mustSucceed(t, sb, st)
			b, err := os.ReadFile(filepath.Join(sb.WorkDir(), tt.dir, "marker.txt"))
			if err != nil {
				t.Fatalf("the step's file is not in the expected directory: %v", err)
			}
			if got, want := string(b), "here\n"; got != want {
				t.Errorf("marker.txt = %q, want %q", got, want)
			}
			if pwd := strings.TrimSuffix(out.String(), "\n"); tt.dir != "" && !strings.HasSuffix(pwd, "/"+tt.dir) {
				t.Errorf("pwd = %q, want a path ending in /%s", pwd, tt.dir)
			}
		})
	}
}

func (s *suite) testSharedWorkspace(t *testing.T) {
	sb := s.open(t)
	if err := os.WriteFile(filepath.Join(sb.WorkDir(), "input.txt"), []byte("from the executor\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.mustSucceed(t, sb, s.step("cat input.txt > copy.txt && mkdir -p made/here && echo from step 1 > made/here/f"))

	var out bytes.Buffer
	st := s.step("cat f ../../copy.txt")
	st.Dir = "made/here"
	st.Stdout = &out
	s.mustSucceed(t, sb, st)
	if got, want := out.String(), "from step 1\nfrom the executor\n"; got != want {
		t.Errorf("step 2 stdout = %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(sb.WorkDir(), "made", "here", "f"))
	if err != nil {
		t.Fatalf("the executor does not see the step's file: %v", err)
	}
	if got, want := string(b), "from step 1\n"; got != want {
		t.Errorf("made/here/f = %q, want %q", got, want)
	}
}

// --- output ---

const alternating = `i=0; while [ $i -lt 500 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`

func (s *suite) testOrderOneWriter(t *testing.T) {
	sb := s.open(t)
	var out bytes.Buffer
	st := s.step(alternating)
	st.Stdout, st.Stderr = &out, &out
	s.mustSucceed(t, sb, st)
	var want []string
	for i := range 500 {
		want = append(want, fmt.Sprintf("out %d", i), fmt.Sprintf("err %d", i))
	}
	if diff := cmp.Diff(want, lines(out.String())); diff != "" {
		t.Errorf("combined output out of order (-want +got):\n%s", diff)
	}
}

func (s *suite) testSeparateWriters(t *testing.T) {
	sb := s.open(t)
	var stdout, stderr bytes.Buffer
	st := s.step(alternating)
	st.Stdout, st.Stderr = &stdout, &stderr
	s.mustSucceed(t, sb, st)
	var wantOut, wantErr []string
	for i := range 500 {
		wantOut = append(wantOut, fmt.Sprintf("out %d", i))
		wantErr = append(wantErr, fmt.Sprintf("err %d", i))
	}
	if diff := cmp.Diff(wantOut, lines(stdout.String())); diff != "" {
		t.Errorf("stdout mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantErr, lines(stderr.String())); diff != "" {
		t.Errorf("stderr mismatch (-want +got):\n%s", diff)
	}
}

func (s *suite) testNilWriters(t *testing.T) {
	sb := s.open(t)
	s.mustSucceed(t, sb, s.step("head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2"))
}

func (s *suite) testLargeOutput(t *testing.T) {
	const size = 200 << 20
	const line = "airlock sandboxtest: very large output 0123456789 abcdefghijklmnopqrstuvwxyz"
	sb := s.open(t)
	out, errOut := newDigest(), newDigest()
	st := s.step(fmt.Sprintf("yes '%s' | head -c %d", line, size))
	st.Stdout, st.Stderr = out, errOut
	s.mustSucceed(t, sb, st)
	if got, want := out.String(), repeatDigest(line+"\n", size); got != want {
		t.Errorf("stdout = %s, want %s", got, want)
	}
	if errOut.n != 0 {
		t.Errorf("stderr has %d bytes, want none", errOut.n)
	}
}

func (s *suite) testFastOutput(t *testing.T) {
	const size = 50_000_000
	sb := s.open(t)
	out := newDigest()
	st := s.step(fmt.Sprintf("yes | head -c %d", size))
	st.Stdout = out
	s.mustSucceed(t, sb, st)
	if got, want := out.String(), repeatDigest("y\n", size); got != want {
		t.Errorf("stdout = %s, want %s", got, want)
	}
}

func (s *suite) testTinyWrites(t *testing.T) {
	const n = 50_000
	sb := s.open(t)
	var out bytes.Buffer
	st := s.step(fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo $i; i=$((i+1)); done`, n))
	st.Stdout, st.Stderr = &out, &out
	s.mustSucceed(t, sb, st)
	var want strings.Builder
	for i := range n {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	if got := out.String(); got != want.String() {
		t.Errorf("stdout (%d bytes) differs from the %d numbers written (%d bytes); first difference at byte %d",
			len(got), n, want.Len(), firstDiff(got, want.String()))
	}
}

func (s *suite) testSlowWriter(t *testing.T) {
	// The step writes 4 MiB, far more than any pipe and copy buffer hold,
	// then creates a file. While the writer is blocked the file must not
	// appear: the runtime is holding the step back, not buffering its output.
	const size = 4 << 20
	sb := s.open(t)
	w := &gatedWriter{d: newDigest(), first: make(chan struct{}), release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(w.release) })
	defer release() // before the cleanup that waits for Run
	st := s.step(fmt.Sprintf("head -c %d /dev/zero; touch done", size))
	st.Stdout = w
	run := s.start(t, context.Background(), sb, st)

	select {
	case <-w.first:
	case <-run.done:
		t.Fatalf("Run returned (%+v, %v) before writing to Stdout", run.res, run.err)
	}
	done := filepath.Join(sb.WorkDir(), "done")
	deadline := time.After(300 * time.Millisecond)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-deadline:
			break wait
		case <-run.done:
			t.Fatalf("Run returned (%+v, %v) while its writer was blocked", run.res, run.err)
		case <-tick.C:
			if _, err := os.Stat(done); err == nil {
				t.Fatalf("the step finished writing %d bytes while the writer had accepted none: the runtime buffers without bound", size)
			}
		}
	}
	release()
	<-run.done
	if run.err != nil || !run.res.Success() {
		t.Fatalf("Run = %+v, %v; want success", run.res, run.err)
	}
	if got, want := w.d.String(), repeatDigest("\x00", size); got != want {
		t.Errorf("stdout = %s, want %s", got, want)
	}
}

// --- process trees and interruption ---

// treeScript starts a process tree, every process of it holding the lifeline
// FIFO on fd 3: a background child; a child with a child of its own; a child
// that exits at once, orphaning its child; a child that calls setsid to leave
// the process group and session; a child that ignores SIGTERM. Each records
// its PID in pids; the script waits until all of them have started (each
// writes a line to the confirm FIFO on fd 4), prints "ready", then runs tail.
const treeScript = `exec 3<>lifeline 4<>confirm
echo $$ >> pids
sleep 1000 & echo $! >> pids
sh -c 'sleep 1000 & echo $! >> pids; echo $$ >> pids; echo >&4; wait' &
sh -c 'sleep 1000 & echo $! >> pids; echo >&4' &
setsid sh -c 'echo $$ >> pids; echo >&4; exec sleep 1000' &
sh -c 'trap "" TERM; echo $$ >> pids; echo >&4; exec sleep 1000' &
for i in 1 2 3 4; do read line <&4; done
echo ready
`

// treePids is how many PIDs treeScript records.
const treePids = 7

// startTree runs treeScript with tail in a new sandbox and returns once the
// tree is up.
func (s *suite) startTree(t *testing.T, ctx context.Context, tail string) (sandbox.Sandbox, *running) {
	sb := s.open(t)
	for _, name := range []string{"lifeline", "confirm"} {
		mkfifo(t, filepath.Join(sb.WorkDir(), name))
	}
	ready := newLineWatcher("ready")
	st := s.step(treeScript + tail)
	st.Stdout = ready
	st.KillGrace = grace
	run := s.start(t, ctx, sb, st)
	select {
	case <-ready.seen:
	case <-run.done:
		t.Fatalf("Run returned (%+v, %v) before the process tree was up; output: %q", run.res, run.err, ready.String())
	}
	return sb, run
}

// checkTreeGone fails t if any process of the tree is still alive.
func (s *suite) checkTreeGone(t *testing.T, sb sandbox.Sandbox) {
	t.Helper()
	if fifoHasWriters(t, filepath.Join(sb.WorkDir(), "lifeline")) {
		t.Errorf("a process of the step's tree is still alive after Run returned")
	}
	if !s.opts.HostPIDs {
		return
	}
	b, err := os.ReadFile(filepath.Join(sb.WorkDir(), "pids"))
	if err != nil {
		t.Fatal(err)
	}
	pids := strings.Fields(string(b))
	if len(pids) != treePids {
		t.Errorf("the step recorded %d PIDs, want %d: %q", len(pids), treePids, pids)
	}
	for _, pid := range pids {
		if state, alive := procState(pid); alive {
			t.Errorf("process %s of the step is alive (state %c) after Run returned", pid, state)
		}
	}
}

func (s *suite) testTimeoutKillsTree(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	sb, run := s.startTree(t, ctx, "wait")
	<-run.done
	if run.err != nil {
		t.Fatalf("Run error = %v, want nil", run.err)
	}
	if !run.res.Interrupted || run.res.Success() {
		t.Errorf("Result = %+v, want Interrupted", run.res)
	}
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Errorf("context cause = %v; Run returned before the timeout", context.Cause(ctx))
	}
	s.checkTreeGone(t, sb)
}

func (s *suite) testCancelKillsTree(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sb, run := s.startTree(t, ctx, "wait")
	cancel(errors.New("canceled by sandboxtest"))
	start := time.Now()
	<-run.done
	elapsed := time.Since(start)
	if run.err != nil {
		t.Fatalf("Run error = %v, want nil", run.err)
	}
	if !run.res.Interrupted || run.res.Success() {
		t.Errorf("Result = %+v, want Interrupted", run.res)
	}
	if elapsed > grace+margin {
		t.Errorf("Run returned %v after the cancel, want at most KillGrace %v + %v", elapsed, grace, margin)
	}
	s.checkTreeGone(t, sb)
}

func (s *suite) testNoLeftoversAfterSuccess(t *testing.T) {
	sb, run := s.startTree(t, context.Background(), "exit 0")
	<-run.done
	if run.err != nil || run.res != (sandbox.Result{}) {
		t.Fatalf("Run = %+v, %v; want exit 0", run.res, run.err)
	}
	s.checkTreeGone(t, sb)
}

func (s *suite) testTermFirst(t *testing.T) {
	// A long grace: a runtime that sends SIGKILL at once reports SIGKILL,
	// and one that waits out the grace although the step is gone is slow.
	const longGrace = 10 * time.Second
	sb := s.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := newLineWatcher("ready")
	st := s.step("echo ready; sleep 1000")
	st.Stdout = ready
	st.KillGrace = longGrace
	run := s.start(t, ctx, sb, st)
	waitReady(t, ready, run)
	cancel()
	start := time.Now()
	<-run.done
	if elapsed := time.Since(start); elapsed >= longGrace {
		t.Errorf("Run returned %v after the cancel, not before KillGrace %v although the step ended on SIGTERM", elapsed, longGrace)
	}
	want := sandbox.Result{ExitCode: -1, Signal: "SIGTERM", Interrupted: true}
	if diff := cmp.Diff(want, run.res); diff != "" || run.err != nil {
		t.Errorf("Run error = %v, Result mismatch (-want +got):\n%s", run.err, diff)
	}
}

func (s *suite) testKillAfterGrace(t *testing.T) {
	const killGrace = 500 * time.Millisecond
	sb := s.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := newLineWatcher("ready")
	st := s.step("trap '' TERM; echo ready; sleep 1000")
	st.Stdout = ready
	st.KillGrace = killGrace
	run := s.start(t, ctx, sb, st)
	waitReady(t, ready, run)
	cancel()
	start := time.Now()
	<-run.done
	elapsed := time.Since(start)
	if elapsed < killGrace || elapsed > killGrace+margin {
		t.Errorf("Run returned %v after the cancel, want between KillGrace %v and %v more", elapsed, killGrace, margin)
	}
	want := sandbox.Result{ExitCode: -1, Signal: "SIGKILL", Interrupted: true}
	if diff := cmp.Diff(want, run.res); diff != "" || run.err != nil {
		t.Errorf("Run error = %v, Result mismatch (-want +got):\n%s", run.err, diff)
	}
}

func (s *suite) testDoneBeforeRun(t *testing.T) {
	sb := s.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := sb.Run(ctx, s.step("touch ran"))
	if err != nil {
		t.Fatalf("Run error = %v, want nil", err)
	}
	if !res.Interrupted || res.Success() {
		t.Errorf("Result = %+v, want Interrupted", res)
	}
	if _, err := os.Stat(filepath.Join(sb.WorkDir(), "ran")); err == nil {
		t.Errorf("the step ran although its context was done")
	}
}

// --- Close and isolation between sandboxes ---

func (s *suite) testCloseRemoves(t *testing.T) {
	sb := s.openNoClose(t)
	outside := filepath.Join(t.TempDir(), "outside.txt")
	if err := os.WriteFile(outside, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.mustSucceed(t, sb, s.step(`mkdir -p tree/ro/sub && echo x > tree/ro/sub/f && echo y > tree/file &&
chmod 0444 tree/file && chmod 0500 tree/ro/sub tree/ro &&
ln -s '`+outside+`' link && ln -s / rootlink`))
	if err := sb.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(sb.WorkDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace %s after Close: %v, want it gone", sb.WorkDir(), err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep me" {
		t.Errorf("Close followed a symlink out of the workspace: %s = %q, %v", outside, b, err)
	}
}

func (s *suite) testCloseDoneCtx(t *testing.T) {
	sb := s.openNoClose(t)
	s.mustSucceed(t, sb, s.step("mkdir -p a/b && echo x > a/b/c"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = sb.Close(ctx) // it may report what it could not do; the files must go regardless
	if _, err := os.Lstat(sb.WorkDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace %s after Close: %v, want it gone", sb.WorkDir(), err)
	}
}

func (s *suite) testParallelSandboxes(t *testing.T) {
	const n = 4
	boxes := make([]sandbox.Sandbox, n)
	for i := range boxes {
		boxes[i] = s.open(t)
	}
	outs := make([]bytes.Buffer, n)
	var wg sync.WaitGroup
	for i, sb := range boxes {
		wg.Go(func() {
			st := s.step(fmt.Sprintf("test ! -e who || exit 10; echo %d > who; ls; cat who", i))
			st.Stdout = &outs[i]
			res, err := sb.Run(context.Background(), st)
			if err != nil || !res.Success() {
				t.Errorf("sandbox %d: Run = %+v, %v; want success", i, res, err)
			}
		})
	}
	wg.Wait()
	seen := make(map[string]int)
	for i, sb := range boxes {
		if j, dup := seen[sb.WorkDir()]; dup {
			t.Errorf("sandboxes %d and %d share the workspace %s", j, i, sb.WorkDir())
		}
		seen[sb.WorkDir()] = i
		if got, want := outs[i].String(), fmt.Sprintf("who\n%d\n", i); got != want {
			t.Errorf("sandbox %d saw %q, want %q", i, got, want)
		}
	}
}

// --- helpers ---

var seq atomic.Int64

// open opens a sandbox that is closed when the test ends.
func (s *suite) open(t *testing.T) sandbox.Sandbox {
	t.Helper()
	sb := s.openNoClose(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		defer cancel()
		if err := sb.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sb
}

func (s *suite) openNoClose(t *testing.T) sandbox.Sandbox {
	t.Helper()
	name := fmt.Sprintf("sandboxtest-%d-%d", os.Getpid(), seq.Add(1))
	sb, err := s.rt.Open(context.Background(), sandbox.OpenParams{Name: name})
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	return sb
}

func (s *suite) step(script string) sandbox.Step {
	return sandbox.Step{Image: s.opts.Image, Run: script}
}

func (s *suite) mustRun(t *testing.T, sb sandbox.Sandbox, st sandbox.Step) sandbox.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	res, err := sb.Run(ctx, st)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Interrupted {
		t.Fatalf("Run was interrupted after %v: %+v", runTimeout, res)
	}
	return res
}

func (s *suite) mustSucceed(t *testing.T, sb sandbox.Sandbox, st sandbox.Step) {
	t.Helper()
	if res := s.mustRun(t, sb, st); !res.Success() {
		t.Fatalf("Result = %+v, want success", res)
	}
}

// running is a Run in progress; res and err are set when done is closed.
type running struct {
	done chan struct{}
	res  sandbox.Result
	err  error
}

func (s *suite) start(t *testing.T, ctx context.Context, sb sandbox.Sandbox, st sandbox.Step) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	r := &running{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer cancel()
		r.res, r.err = sb.Run(ctx, st)
	}()
	t.Cleanup(func() { <-r.done }) // before the sandbox's Close
	return r
}

func waitReady(t *testing.T, w *lineWatcher, run *running) {
	t.Helper()
	select {
	case <-w.seen:
	case <-run.done:
		t.Fatalf("Run returned (%+v, %v) before the step was ready; output: %q", run.res, run.err, w.String())
	}
}

func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func readEnviron(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := make(map[string]string)
	for _, kv := range strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// digest counts and hashes what is written to it, without keeping it.
type digest struct {
	h hash.Hash
	n int64
}

func newDigest() *digest { return &digest{h: sha256.New()} }

func (d *digest) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return d.h.Write(p)
}

func (d *digest) String() string {
	return fmt.Sprintf("%d bytes, sha256 %s", d.n, hex.EncodeToString(d.h.Sum(nil)))
}

// repeatDigest describes pattern repeated up to size bytes.
func repeatDigest(pattern string, size int) string {
	chunk := []byte(strings.Repeat(pattern, max(1, (64<<10)/len(pattern))))
	d := newDigest()
	for left := size; left > 0; {
		n := min(left, len(chunk))
		d.Write(chunk[:n])
		left -= n
	}
	return d.String()
}

// gatedWriter blocks its first Write until release is closed.
type gatedWriter struct {
	d       *digest
	first   chan struct{}
	release chan struct{}
	started bool
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.started = true
		close(w.first)
		<-w.release
	}
	return w.d.Write(p)
}

// lineWatcher keeps what is written to it and closes seen once a line equal
// to want has been written. It is safe for concurrent use, since the test
// reads it while Run writes.
type lineWatcher struct {
	want string
	seen chan struct{}

	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, seen: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains("\n"+w.buf.String(), "\n"+w.want+"\n") {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := os.Chmod(path, 0o666); err != nil { // past the umask, for runtimes that map users
		t.Fatal(err)
	}
}

// fifoHasWriters reports whether any process holds the FIFO at path open for
// writing. A non-blocking read of a FIFO returns end-of-file when it has no
// writers and EAGAIN when it has some but no data.
func fifoHasWriters(t *testing.T, path string) bool {
	t.Helper()
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer syscall.Close(fd)
	var b [1]byte
	n, err := syscall.Read(fd, b[:])
	switch {
	case errors.Is(err, syscall.EAGAIN):
		return true
	case err != nil:
		t.Fatalf("reading %s: %v", path, err)
	}
	return n > 0
}

// procState returns the state of the host process pid and whether it is
// alive: present in /proc and not a zombie.
func procState(pid string) (byte, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, false
	}
	state := b[i+2]
	return state, state != 'Z' && state != 'X'
}
