// Running one step.
//
// Run owns the step's output pipes instead of letting os/exec create them:
// the step's shell gets the write ends as plain files, so exec.Cmd.Wait
// returns as soon as the shell has exited, and Run decides when reading
// stops. The order is: wait for the shell to exit without reaping it (or
// stop the whole tree when ctx is done), stop whatever the shell left
// behind, reap the shell, then read the pipes to their end. With every writer
// dead the pipes hold at most a pipe buffer each, so draining is quick; only a
// process that escaped the tree (see the package doc) can keep a pipe open,
// and Run stops reading once nothing has arrived for stepio.DrainIdle.
//
// When Stdout and Stderr are the same writer, both descriptors of the step
// are one pipe, so the bytes arrive in the order the step wrote them.
package shell

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/stepio"
)

// Run runs s.Run with /bin/sh -c in the workspace; see the package doc. A
// step whose ctx is done before it starts is not started, and its Result is
// {ExitCode: -1, Interrupted: true}.
//
// Output writers are called from one goroutine per pipe, never after Run
// returns. If a writer fails, the rest of that stream is discarded so that
// the step is not blocked, the step runs to its end, and Run returns its
// Result together with an error, because the output is incomplete.
func (b *box) Run(ctx context.Context, s sandbox.Step) (sandbox.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return sandbox.Result{}, errors.New("running step: the sandbox is closed")
	}
	if ctx.Err() != nil {
		return sandbox.Result{ExitCode: -1, Interrupted: true}, nil
	}
	dir, err := b.stepDir(s.Dir)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("running step: %w", err)
	}
	env, err := b.stepEnv(s.Env)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("running step: %w", err)
	}
	grace := s.KillGrace
	if grace <= 0 {
		grace = sandbox.DefaultKillGrace
	}

	out, err := stepio.New(s.Stdout, s.Stderr)
	if err != nil {
		return sandbox.Result{}, fmt.Errorf("running step: %w", err)
	}
	cmd := &exec.Cmd{
		Path: "/bin/sh",
		Args: []string{"sh", "-c", s.Run},
		Env:  env,
		Dir:  dir,
		// Pdeathsig: if the executor dies (SIGKILL, crash), the step's shell
		// dies with it rather than finishing the step a second time beside the
		// attempt that replaces it. Its children are found by the janitor.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if out.Stdout != nil { // a nil *os.File would make a non-nil io.Writer
		cmd.Stdout = out.Stdout
	}
	if out.Stderr != nil {
		cmd.Stderr = out.Stderr
	}
	if err := cmd.Start(); err != nil {
		out.Abort()
		return sandbox.Result{}, fmt.Errorf("running step: starting /bin/sh: %w", err)
	}
	out.Start()
	pgid := cmd.Process.Pid

	exited := make(chan error, 1)
	go func() { exited <- waitExited(pgid) }()
	interrupted := false
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-ctx.Done():
		select {
		case waitErr = <-exited: // it exited on its own just as ctx ended
		default:
			interrupted = true
			b.marker.stop(context.Background(), pgid, grace)
			waitErr = <-exited
		}
	}
	if waitErr != nil {
		// Without a zombie leader the group ID may be reused; kill by
		// group once while it is surely ours, then rely on the marker.
		_ = unix.Kill(-pgid, unix.SIGKILL)
		pgid = 0
	}
	if n, _ := b.marker.stop(context.Background(), pgid, grace); n > 0 && !interrupted {
		b.rt.log.Info("stopped processes the step left running", "sandbox", b.marker.name, "processes", n)
	}
	if err := cmd.Wait(); cmd.ProcessState == nil { // a non-zero exit is an *exec.ExitError, and not our concern
		out.Drain()
		return sandbox.Result{}, fmt.Errorf("running step: reaping /bin/sh: %w", err)
	}
	outErr := out.Drain()
	if out.Detached {
		b.rt.log.Warn("a process that escaped the step's process tree still holds its output open; stopped reading it",
			"sandbox", b.marker.name)
	}

	res := sandbox.Result{Interrupted: interrupted}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.ExitCode = -1
		res.Signal = signalName(ws.Signal())
	} else {
		res.ExitCode = ws.ExitStatus()
	}
	if waitErr != nil {
		return res, fmt.Errorf("running step: waiting for /bin/sh: %w", waitErr)
	}
	if outErr != nil {
		return res, fmt.Errorf("running step: copying its output: %w", outErr)
	}
	return res, nil
}

// waitExited waits until the child pid has exited, without reaping it.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// stepDir returns the host directory for Step.Dir, creating it if missing.
func (b *box) stepDir(dir string) (string, error) {
	if dir == "" {
		return b.work, nil
	}
	if !filepath.IsLocal(dir) {
		return "", fmt.Errorf("step directory %q is not inside the workspace", dir)
	}
	root, err := os.OpenRoot(b.work)
	if err != nil {
		return "", fmt.Errorf("opening workspace: %w", err)
	}
	defer root.Close()
	// os.Root refuses to follow a symlink out of the workspace, so a step
	// cannot make the next one create directories elsewhere.
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating step directory %q: %w", dir, err)
	}
	resolved, err := filepath.EvalSymlinks(filepath.Join(b.work, dir))
	if err != nil {
		return "", fmt.Errorf("resolving step directory %q: %w", dir, err)
	}
	if rel, err := filepath.Rel(b.work, resolved); err != nil || !filepath.IsLocal(rel) && rel != "." {
		return "", fmt.Errorf("step directory %q is not inside the workspace", dir)
	}
	return resolved, nil
}

// stepEnv returns the step's whole environment; see the package doc.
func (b *box) stepEnv(stepEnv map[string]string) ([]string, error) {
	env := make([]string, 0, len(stepEnv)+4)
	for k, v := range stepEnv {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("invalid environment variable %q", k)
		}
		if k == SandboxEnv || k == RootEnv {
			continue
		}
		env = append(env, k+"="+v)
	}
	if _, ok := stepEnv["HOME"]; !ok {
		env = append(env, "HOME="+b.work)
	}
	if _, ok := stepEnv["PATH"]; !ok {
		env = append(env, "PATH="+DefaultPath)
	}
	env = append(env, b.marker.env()...)
	slices.Sort(env)
	return env, nil
}
