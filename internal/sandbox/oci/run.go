// Running one step.
//
// Run writes the step's bundle, then runs `<runtime> run` in the foreground,
// passing it three file descriptors for the container's init (--preserve-fds
// 3): the write end of a report pipe, where the init writes the shell's
// exact wait status, and the step's stdout and stderr pipes, which the init
// gives the shell as its stdout and stderr (see init.go). The runtime exits when the init
// does, after the kernel has killed whatever else was in the container's PID
// namespace, so when it returns the pipes hold at most what is buffered.
//
// When ctx is done, Run asks the runtime to send SIGTERM to the init (`kill
// <id> TERM`), which passes it to every process of the step; the container
// may not exist yet, so a failed kill is retried until it succeeds or the
// runtime has exited. After KillGrace, `kill <id> KILL` ends the init and
// with it the namespace; if even that fails, the processes in the step's
// cgroup get SIGKILL directly.
//
// The step's Result comes from the init's report. Without one, the init
// itself was killed: by Run (the Result says which signal Run sent last), or
// by the kernel for memory; anything else is the runtime failing, an error
// that carries the runtime's log.
package oci

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/stepio"
)

// killRetry is how often a runtime `kill` that failed because the container
// is not up yet is retried.
const killRetry = 5 * time.Millisecond

// killBackstop is how long Run waits after `kill KILL` before it kills the
// step's cgroup itself.
const killBackstop = 2 * time.Second

// box is one attempt's sandbox.
type box struct {
	rt    *Runtime
	name  string
	dir   string // <Root>/<name>
	work  string // the workspace on the host
	bind  string // what is bound at /work: work, or its ID-mapped mount
	state string // the OCI runtime's --root
	res   job.Resources
	oom   *oomWatch
	net   Network // nil: loopback only

	mu     sync.Mutex
	closed bool
	steps  int
	roots  map[string]string // the attempt's overlays over image layers, by layersKey
}

var _ sandbox.Sandbox = (*box)(nil)

func (b *box) WorkDir() string { return b.work }

// Close kills and deletes what is left of the attempt's containers and
// removes its cgroup, mounts and directory. When ctx is done it still does
// all of that, bounded by cleanupTimeout. A second Close does nothing.
func (b *box) Close(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	defer b.rt.release(b.name)
	b.oom.close()
	err := b.rt.remove(ctx, b.name)
	if b.net != nil {
		// After the containers are gone; bounded like the removal.
		nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		err = errors.Join(err, b.net.Close(nctx))
		cancel()
	}
	if err != nil {
		return fmt.Errorf("closing sandbox: %w", err)
	}
	return nil
}

// Run runs s in a new container; see the file comment and the package doc.
// A step whose ctx is done before it starts is not started, and its Result
// is {ExitCode: -1, Interrupted: true}.
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
	n := b.steps
	b.steps++
	st, err := b.prepare(ctx, n, s)
	if err != nil {
		if st != nil {
			st.cleanup(b)
		}
		if ctx.Err() != nil { // preparing was cut short: the step never started
			return sandbox.Result{ExitCode: -1, Interrupted: true}, nil
		}
		return sandbox.Result{}, fmt.Errorf("running step: %w", err)
	}
	res, err := b.run(ctx, st, s)
	if cerr := st.cleanup(b); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return res, fmt.Errorf("running step: %w", err)
	}
	return res, nil
}

// stepRun is a prepared step.
type stepRun struct {
	id      string // container ID
	bundle  string
	hostUID uint32 // the step user's host IDs
	hostGID uint32
	cgroup  string // the attempt's cgroup
	pids    string // runsc: the step's pids cgroup directory, made by the runtime
}

// prepare writes the bundle of step n.
func (b *box) prepare(ctx context.Context, n int, s sandbox.Step) (*stepRun, error) {
	r := b.rt
	st := &stepRun{
		id:     b.name + "-s" + strconv.Itoa(n),
		bundle: filepath.Join(b.dir, "steps", strconv.Itoa(n)),
		cgroup: r.cgroup(b.name),
	}
	if err := os.Mkdir(st.bundle, 0o711); err != nil {
		return nil, fmt.Errorf("creating the bundle: %w", err)
	}
	if err := os.Chmod(st.bundle, 0o711); err != nil {
		return st, err
	}
	if err := b.stepDir(s.Dir); err != nil {
		return st, err
	}
	img, err := r.images(ctx, b.name, s.Image)
	if err != nil {
		return st, fmt.Errorf("resolving image %q: %w", s.Image, err)
	}
	rootfs, mapped, err := b.rootFS(ctx, img)
	if err != nil {
		return st, fmt.Errorf("image %q: %w", s.Image, err)
	}
	userSpec := img.User
	if s.User != "" {
		userSpec = s.User
	}
	user, err := resolveUser(rootfs, userSpec)
	if err != nil {
		if s.User != "" {
			// The job named a user its image lacks: the job's mistake.
			return st, fmt.Errorf("%w: %w", sandbox.ErrImage, err)
		}
		return st, err
	}
	if r.ids != nil && (user.uid >= r.ids.size || user.gid >= r.ids.size) {
		return st, fmt.Errorf("%w: the step's user %q (%d:%d) is outside the %d IDs the user namespace maps", sandbox.ErrImage, userSpec, user.uid, user.gid, r.ids.size)
	}
	env, err := stepEnv(s.Env, img.Env)
	if err != nil {
		return st, err
	}
	if err := mountPoints(rootfs); err != nil {
		return st, err
	}
	if b.net != nil {
		if err := networkMountPoints(rootfs); err != nil {
			return st, err
		}
	}
	work := b.bind
	st.hostUID, st.hostGID = user.uid, user.gid
	if r.ids != nil {
		st.hostUID, st.hostGID = r.ids.host(user.uid), r.ids.host(user.gid)
		if !mapped {
			// ID-map a RootFS when its filesystem allows it, so that its
			// owners show as they are; else use it as is.
			mp := filepath.Join(st.bundle, "rootfs")
			if err := os.Mkdir(mp, 0o755); err != nil {
				return st, fmt.Errorf("creating the bundle: %w", err)
			}
			if err := idmapMount(rootfs, mp, r.userns, false); err == nil {
				rootfs = mp
			} else {
				r.idmapWarn.Do(func() {
					r.log.Warn("a step's root filesystem cannot be ID-mapped; its files show as owned by nobody in the container",
						"sandbox", b.name, "rootfs", rootfs, "error", err)
				})
			}
		}
		if user.uid != 0 || user.gid != 0 {
			ns, err := r.workspaceUserns(user.uid, user.gid)
			if err != nil {
				return st, err
			}
			work = filepath.Join(st.bundle, "work")
			if err := os.Mkdir(work, 0o755); err != nil {
				return st, fmt.Errorf("creating the bundle: %w", err)
			}
			if err := idmapMount(b.work, work, ns, false); err != nil {
				return st, fmt.Errorf("mapping the workspace for user %d:%d: %w", user.uid, user.gid, err)
			}
		}
	}
	stepCgroup := filepath.Join(st.cgroup, "s"+strconv.Itoa(n))
	if r.runsc != nil {
		// The step's pids cgroup outlives runsc (which leaves a cgroup it
		// did not make), so that Run can tell whether the step reached the
		// host's pids limit (cgroupHost.pidsExhausted).
		st.pids = r.cg.pidsDir(stepCgroup)
		if err := os.Mkdir(st.pids, 0o755); err != nil {
			st.pids = ""
			return st, fmt.Errorf("creating the step's pids cgroup: %w", err)
		}
	}
	args := []string{"/bin/sh", "-c", s.Run}
	procUser := user
	if r.runsc != nil && b.res.Pids > 0 {
		args = append([]string{pidsMaxArg + strconv.Itoa(b.res.Pids)}, args...)
		if user.uid != 0 || user.gid != 0 || len(user.groups) > 0 {
			// Only root in the sandbox may set the limit: the init starts
			// as root and becomes the step's user before it runs the step.
			args = append([]string{userArg + user.String()}, args...)
			procUser = stepUser{}
		}
	}
	var tmpSize int64
	if b.res.Memory > 0 {
		tmpSize = int64(b.res.Memory)
	}
	spec := buildSpec(specParams{
		rootfs:   rootfs,
		work:     work,
		init:     r.init,
		args:     args,
		env:      env,
		cwd:      containerDir(s.Dir),
		user:     procUser,
		ids:      r.ids,
		cgroup:   "/" + stepCgroup,
		hostname: "airlock",
		tmpSize:  tmpSize,
		seccomp:  r.seccomp,
	})
	if b.net != nil {
		joinNetwork(spec, b.net.Path(), b.dir, r.ids != nil && r.runsc == nil) // see network.go
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return st, fmt.Errorf("encoding the spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(st.bundle, "config.json"), data, 0o600); err != nil {
		return st, fmt.Errorf("writing the spec: %w", err)
	}
	if _, err := b.oom.fired(); err != nil { // forget what happened before this step
		return st, err
	}
	if b.net != nil {
		if err := b.net.Refresh(ctx); err != nil {
			return st, fmt.Errorf("refreshing the network: %w", err)
		}
	}
	return st, nil
}

// cleanup deletes the container if the runtime left it, unmounts the
// step's root and removes its bundle.
func (st *stepRun) cleanup(b *box) error {
	var errs []error
	if b.rt.hasContainer(b.state, st.id) {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		out, err := b.rt.command(ctx, b.state, "delete", "--force", st.id).CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting container %s: %w: %s", st.id, err, bytes.TrimSpace(out)))
		}
	}
	if st.pids != "" {
		// Best effort: a sandbox that died may take a moment to leave it,
		// and Close removes the attempt's whole cgroup tree anyway.
		_ = removeCgroupTree(st.pids)
	}
	if err := unmountAll(st.bundle); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(st.bundle); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// run starts the container and waits for it; see the file comment.
func (b *box) run(ctx context.Context, st *stepRun, s sandbox.Step) (sandbox.Result, error) {
	r := b.rt
	grace := s.KillGrace
	if grace <= 0 {
		grace = sandbox.DefaultKillGrace
	}
	out, err := stepio.New(s.Stdout, s.Stderr)
	if err != nil {
		return sandbox.Result{}, err
	}
	for _, f := range []*os.File{out.Stdout, out.Stderr} {
		if f != nil {
			if err := chownFd(f, st.hostUID, st.hostGID); err != nil {
				out.Abort()
				return sandbox.Result{}, err
			}
		}
	}
	reportR, reportW, err := os.Pipe()
	if err != nil {
		out.Abort()
		return sandbox.Result{}, fmt.Errorf("creating the report pipe: %w", err)
	}
	defer reportR.Close()

	// Discarded streams go to /dev/null.
	stdout, stderr := out.Stdout, out.Stderr
	if stdout == nil || stderr == nil {
		devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			reportW.Close()
			out.Abort()
			return sandbox.Result{}, err
		}
		defer devNull.Close()
		stdout, stderr = cmp.Or(stdout, devNull), cmp.Or(stderr, devNull)
	}
	logPath := filepath.Join(st.bundle, "runtime.log")
	args := []string{"--log", logPath, "--log-format", "json"}
	if r.runsc != nil && b.net != nil {
		args = append(args, "--network=sandbox")
	}
	args = append(args, "run", "--bundle", st.bundle)
	if r.runsc != nil {
		for fd := reportFd; fd < reportFd+extraFds; fd++ {
			args = append(args, "--pass-fd", fmt.Sprintf("%d:%d", fd, fd))
		}
	} else {
		args = append(args, "--preserve-fds", strconv.Itoa(extraFds))
	}
	cmd := r.command(context.Background(), b.state, append(args, st.id)...)
	// The runtime's own output (its errors, and what a crun container's init
	// writes before the step starts) is kept for the error message; the
	// step's output goes to the pipes passed as reportFd+1 and reportFd+2.
	var runtimeOut bytes.Buffer
	cmd.Stdout = &capped{w: &runtimeOut, n: 64 << 10}
	cmd.Stderr = cmd.Stdout
	cmd.ExtraFiles = []*os.File{reportW, stdout, stderr}
	// If the executor dies, the runtime dies with it; the container it
	// leaves is the janitor's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		reportW.Close()
		out.Abort()
		return sandbox.Result{}, fmt.Errorf("starting %s: %w", r.flavor, err)
	}
	reportW.Close()
	out.Start()

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	interrupted, lastSignal := false, ""
	select {
	case <-exited:
	case <-ctx.Done():
		select {
		case <-exited: // it ended on its own just as ctx ended
		default:
			interrupted = true
			lastSignal = b.stop(st, exited, grace)
		}
	}
	outErr := out.Drain()
	if out.Detached {
		r.log.Warn("a process still holds a step's output open after its container ended; stopped reading it",
			"sandbox", b.name, "container", st.id)
	}

	_ = reportR.SetReadDeadline(time.Now().Add(stepio.DrainIdle))
	report, _ := io.ReadAll(reportR)
	oom, oomErr := b.oom.fired()

	res := sandbox.Result{Interrupted: interrupted, OOMKilled: oom}
	switch kind, val, ok := parseReport(report); {
	case ok && kind == "exit":
		res.ExitCode = val
	case ok && kind == "signal":
		res.ExitCode, res.Signal = -1, signalName(syscall.Signal(val))
	case interrupted:
		res.ExitCode, res.Signal = -1, lastSignal
	case res.OOMKilled:
		res.ExitCode, res.Signal = -1, "SIGKILL"
	case r.runsc != nil && r.cg.pidsExhausted(st.pids, r.cgroup(b.name)):
		// The sentry could not start a thread: see runsc.go.
		r.log.Warn("a step's gVisor sandbox died at its host task limit", "sandbox", b.name, "container", st.id)
		res.ExitCode, res.Signal = -1, "SIGKILL"
	case bytes.HasPrefix(report, []byte("error ")):
		return sandbox.Result{}, fmt.Errorf("the container's init failed: %s", bytes.TrimSpace(report[len("error "):]))
	default:
		return sandbox.Result{}, fmt.Errorf("%s failed to run the container: %v%s", r.flavor, waitErr,
			runtimeLog(logPath, runtimeOut.Bytes()))
	}
	switch {
	case oomErr != nil:
		return res, oomErr
	case outErr != nil:
		return res, fmt.Errorf("copying its output: %w", outErr)
	}
	return res, nil
}

// stop ends a running container: SIGTERM through its init, SIGKILL after
// grace. It returns when the runtime has exited, and the last signal sent.
func (b *box) stop(st *stepRun, exited <-chan struct{}, grace time.Duration) string {
	deadline := time.Now().Add(grace)
	b.kill(st.id, "TERM", exited, deadline)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-exited:
		return "SIGTERM"
	case <-t.C:
	}
	b.kill(st.id, "KILL", exited, time.Now().Add(killBackstop))
	backstop := time.NewTimer(killBackstop)
	defer backstop.Stop()
	for {
		select {
		case <-exited:
			return "SIGKILL"
		case <-backstop.C:
			b.rt.log.Warn("the container outlived kill KILL; killing its cgroup", "sandbox", b.name, "container", st.id)
			for _, mnt := range b.rt.cg.mounts {
				killTree(filepath.Join(mnt, st.cgroup))
			}
			backstop.Reset(killBackstop)
		}
	}
}

// kill sends sig to the container's init through the runtime, retrying
// while the container is not up yet, until it succeeds, the runtime has
// exited, or deadline passes.
func (b *box) kill(id, sig string, exited <-chan struct{}, deadline time.Time) {
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
		err := b.rt.command(ctx, b.state, "kill", id, sig).Run()
		cancel()
		if err == nil {
			return
		}
		t := time.NewTimer(killRetry)
		select {
		case <-exited:
			t.Stop()
			return
		case <-t.C:
		}
		if time.Now().After(deadline) {
			return
		}
	}
}

// killTree sends SIGKILL to every process in cgroup dir and its
// descendants.
func killTree(dir string) {
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			killProcs(path)
		}
		return nil
	})
}

// parseReport reads the init's report: "exit N" or "signal N".
func parseReport(b []byte) (kind string, val int, ok bool) {
	kind, v, found := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !found || (kind != "exit" && kind != "signal") {
		return "", 0, false
	}
	val, err := strconv.Atoi(v)
	return kind, val, err == nil
}

// runtimeLog returns the error messages of a runtime's JSON log, or else
// its output, for an error message.
func runtimeLog(path string, output []byte) string {
	b, _ := os.ReadFile(path)
	var msgs []string
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(line, &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
			msgs = append(msgs, entry.Msg)
		}
	}
	if len(msgs) == 0 {
		if output = bytes.TrimSpace(output); len(output) > 0 {
			return ": " + string(output)
		}
		return ""
	}
	return ": " + strings.Join(msgs, "; ")
}

// capped writes to w until n bytes have been written, then discards.
type capped struct {
	w io.Writer
	n int
}

func (c *capped) Write(p []byte) (int, error) {
	if c.n > 0 {
		k := min(len(p), c.n)
		c.n -= k
		_, _ = c.w.Write(p[:k])
	}
	return len(p), nil
}

func signalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// rootFS returns the root filesystem of img for a step, and whether it
// already shows the image's owners as the containers' user namespace maps
// them: an image's Layers get the attempt's overlay, made by the first step
// that uses the image (see Image and mount.go).
func (b *box) rootFS(ctx context.Context, img Image) (string, bool, error) {
	switch {
	case img.RootFS != "" && len(img.Layers) > 0:
		return "", false, errors.New("the image hook gave both a root filesystem and layers")
	case img.RootFS != "":
		return img.RootFS, false, nil
	case len(img.Layers) == 0:
		return "", false, errors.New("the image hook gave neither a root filesystem nor layers")
	}
	key := layersKey(img.Layers)
	if rootfs, ok := b.roots[key]; ok {
		return rootfs, true, nil
	}
	images := filepath.Join(b.dir, "images")
	if err := os.MkdirAll(images, 0o711); err != nil {
		return "", false, err
	}
	var opts image.MountOpts
	if r := b.rt; r.ids != nil {
		opts = image.MountOpts{
			IDMap: func(src, dst string) error { return idmapMount(src, dst, r.userns, true) },
			UID:   int(r.ids.base),
			GID:   int(r.ids.base),
		}
	}
	l, err := image.MountLayers(ctx, img.Layers, filepath.Join(images, key), opts)
	if err != nil {
		return "", false, fmt.Errorf("making the attempt's root filesystem: %w", err)
	}
	if b.roots == nil {
		b.roots = make(map[string]string)
	}
	b.roots[key] = l.Rootfs
	return l.Rootfs, true, nil
}

// layersKey names an image's overlay in the attempt's directory: short,
// since overlayfs mount options are limited to a page on older kernels.
func layersKey(layers []string) string {
	sum := sha256.Sum256([]byte(strings.Join(layers, "\x00")))
	return hex.EncodeToString(sum[:8])
}

// stepDir checks that Step.Dir stays inside the workspace and creates it if
// missing, refusing to follow a symlink out of the workspace.
func (b *box) stepDir(dir string) error {
	if dir == "" {
		return nil
	}
	if !filepath.IsLocal(dir) {
		return fmt.Errorf("step directory %q is not inside the workspace", dir)
	}
	root, err := os.OpenRoot(b.work)
	if err != nil {
		return fmt.Errorf("opening workspace: %w", err)
	}
	defer root.Close()
	if err := root.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating step directory %q: %w", dir, err)
	}
	resolved, err := filepath.EvalSymlinks(filepath.Join(b.work, dir))
	if err != nil {
		return fmt.Errorf("resolving step directory %q: %w", dir, err)
	}
	if rel, err := filepath.Rel(b.work, resolved); err != nil || !filepath.IsLocal(rel) && rel != "." {
		return fmt.Errorf("step directory %q is not inside the workspace", dir)
	}
	return nil
}

// stepEnv returns a step's whole environment; see the package doc.
func stepEnv(stepEnv map[string]string, imageEnv []string) ([]string, error) {
	env := make([]string, 0, len(stepEnv)+2)
	for k, v := range stepEnv {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("invalid environment variable %q", k)
		}
		env = append(env, k+"="+v)
	}
	if _, ok := stepEnv["HOME"]; !ok {
		env = append(env, "HOME=/work")
	}
	if _, ok := stepEnv["PATH"]; !ok {
		path := DefaultPath
		for _, kv := range imageEnv {
			if v, ok := strings.CutPrefix(kv, "PATH="); ok {
				path = v
			}
		}
		env = append(env, "PATH="+path)
	}
	slices.Sort(env)
	return env, nil
}

// mountPoints creates, in an image's root filesystem, the directories the
// spec mounts on, when missing, so that the runtime need not create them
// from inside the user namespace, where it may lack the permission. That
// includes the init's file under /dev: runc and crun bind it onto the /dev
// tmpfs, but runsc's gofer binds it onto the root filesystem itself (and,
// in a /dev that the user namespace does not own, cannot create it).
func mountPoints(rootfs string) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("opening the root filesystem: %w", err)
	}
	defer root.Close()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "work"} {
		if err := root.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("creating mount point /%s in the root filesystem: %w", d, err)
		}
	}
	name := strings.TrimPrefix(InitPath, "/")
	if _, err := root.Lstat(name); err == nil {
		return nil
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating mount point %s in the root filesystem: %w", InitPath, err)
	}
	if f != nil {
		f.Close()
	}
	return nil
}
