package bench

// What the sandbox benchmarks run on: the busybox test image served by an
// in-process registry and pulled into a real image cache, the product's
// rootfs.Provider turning it into one overlay per attempt (the oci runtime's
// ImageFunc), a raw OCI runtime CLI running a bundle over the same image, and
// Docker Engine — the host's dockerd when one answers, else one started here
// with a data root, exec root and socket of its own and stopped by PID.
//
// Raw crun on a hybrid cgroup host: crun refuses to run while controllers
// are bound to the cgroup2 hierarchy. The oci runtime runs it through a
// re-exec of its own binary that unmounts cgroup2 in a private mount
// namespace. The raw baseline must not pay for that, so it starts crun from
// an OS thread that has left the host's mount namespace once (unshare on a
// locked thread, cgroup2 unmounted there): the child inherits the thread's
// namespace, and crun starts as directly as from a shell.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	seccompprofile "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/gvisor"
	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/rootfs"
)

// sandboxEnv is one benchmark's image pipeline and scratch space.
type sandboxEnv struct {
	dir    string // every directory from / to here is searchable by others
	ref    string // the busybox image in the in-process registry, by tag
	digest string
	cache  *image.Cache
	images *rootfs.Provider
	init   string // a static build of the oci runtime's container init
}

var sandboxSeq atomic.Int64

// newSandboxEnv sets up the image pipeline for b; everything goes when b
// ends. It needs root (overlay and runtime mounts).
func newSandboxEnv(b *testing.B) *sandboxEnv {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("the sandbox benchmarks need root")
	}
	dir, err := os.MkdirTemp(*sandboxDir, "airlock-bench-sandbox-")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// Registered first, so it runs last: after every overlay and
		// runtime is gone. RemoveTree refuses to descend into a mount;
		// what is still mounted then is the raw runsc's pinned namespace
		// for its gofers (under its --root).
		if mps, err := hostfs.MountsUnder(dir); err == nil {
			for _, mp := range mps {
				if strings.HasSuffix(mp, "/null-netns") {
					unix.Unmount(mp, unix.MNT_DETACH)
				}
			}
		}
		if err := hostfs.RemoveTree(dir); err != nil {
			b.Errorf("removing %s: %v", dir, err)
		}
	})
	env := &sandboxEnv{dir: dir}
	reg := imagetest.NewRegistry(b, imagetest.RegistryOpts{})
	busybox := imagetest.Busybox(b)
	env.ref, env.digest = reg.Push(b, "busybox:1", busybox)
	env.cache, err = image.New(image.Options{Root: filepath.Join(dir, "cache")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { env.cache.Close() })
	env.images, err = rootfs.New(rootfs.Options{Cache: env.cache, Root: filepath.Join(dir, "rootfs")})
	if err != nil {
		b.Fatal(err)
	}
	// Fetch it once: every measured pull is a cache hit.
	img, err := env.cache.Get(context.Background(), env.ref, nil)
	if err != nil {
		b.Fatal(err)
	}
	img.Release()
	env.init = buildInit(b, dir)
	return env
}

// imageFunc is the oci runtime's ImageFunc over the env's Provider, as the
// executor wires it: the runtime stacks the cached layers itself, ID-mapped.
func (env *sandboxEnv) imageFunc() oci.ImageFunc { return env.images.ImageFunc() }

// openAttempt opens a sandbox as the executor does: Open, then pull the
// step's image for the attempt. close undoes both.
func (env *sandboxEnv) openAttempt(ctx context.Context, rt sandbox.Runtime, name string) (sb sandbox.Sandbox, close func() error, err error) {
	sb, err = rt.Open(ctx, sandbox.OpenParams{Name: name, Network: "none"})
	if err != nil {
		return nil, nil, err
	}
	close = func() error {
		return errors.Join(sb.Close(context.Background()), env.images.Release(name))
	}
	if _, err := env.images.Pull(ctx, name, env.ref, ""); err != nil {
		return nil, nil, errors.Join(err, close())
	}
	return sb, close, nil
}

// buildInit builds the oci runtime's init as a static program: the test
// binary itself is dynamically linked.
func buildInit(b *testing.B, dir string) string {
	b.Helper()
	out := filepath.Join(dir, "airlock-oci-init")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out,
		"github.com/airlock-run/airlock/internal/sandbox/oci/ociinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the container init: %v: %s", err, msg)
	}
	return out
}

// newOCIRuntime returns an oci runtime with binary over env's images, with
// its own Root and cgroup parent, both removed when b ends.
// runscBinary is AIRLOCK_RUNSC, else runsc in PATH.
func runscBinary() string {
	if p := os.Getenv("AIRLOCK_RUNSC"); p != "" {
		return p
	}
	return "runsc"
}

// newGVisorRuntime is the gvisor runtime over the env's images.
func newGVisorRuntime(b *testing.B, env *sandboxEnv) sandbox.Runtime {
	b.Helper()
	if _, err := exec.LookPath(runscBinary()); err != nil {
		b.Skipf("runsc is not installed: %v", err)
	}
	n := sandboxSeq.Add(1)
	cgParent := fmt.Sprintf("/airlock-bench-%d-%d", os.Getpid(), n)
	rt, err := gvisor.New(gvisor.Options{
		Root:         filepath.Join(env.dir, fmt.Sprintf("gvisor%d", n)),
		Runsc:        runscBinary(),
		Images:       env.imageFunc(),
		Init:         env.init,
		CgroupParent: cgParent,
	})
	if err != nil {
		b.Skipf("the gvisor runtime cannot run here: %v", err)
	}
	b.Cleanup(func() {
		if err := rt.RemoveLeftovers(context.Background(), nil); err != nil {
			b.Errorf("removing leftover sandboxes: %v", err)
		}
		if err := rt.Close(); err != nil {
			b.Error(err)
		}
		removeCgroup(b, cgParent)
	})
	return rt
}

func newOCIRuntime(b *testing.B, env *sandboxEnv, binary string) sandbox.Runtime {
	b.Helper()
	if _, err := exec.LookPath(binary); err != nil {
		b.Skipf("%s is not installed: %v", binary, err)
	}
	n := sandboxSeq.Add(1)
	cgParent := fmt.Sprintf("/airlock-bench-%d-%d", os.Getpid(), n)
	rt, err := oci.New(oci.Options{
		Root:         filepath.Join(env.dir, fmt.Sprintf("oci%d", n)),
		Binary:       binary,
		Images:       env.imageFunc(),
		Init:         env.init,
		CgroupParent: cgParent,
	})
	if err != nil {
		b.Skipf("the oci runtime with %s cannot run here: %v", binary, err)
	}
	b.Cleanup(func() {
		if err := rt.RemoveLeftovers(context.Background(), nil); err != nil {
			b.Errorf("removing leftover sandboxes: %v", err)
		}
		removeCgroup(b, cgParent)
	})
	return rt
}

// removeCgroup removes the cgroup rel (from the hierarchy roots) in every
// cgroup hierarchy of the host; it must be empty.
func removeCgroup(b *testing.B, rel string) {
	b.Helper()
	for _, mp := range cgroupMounts() {
		if err := os.Remove(filepath.Join(mp, rel)); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.Errorf("removing cgroup %s: %v", rel, err)
		}
	}
}

// cgroupMounts returns the mount points of every cgroup hierarchy, v1 and
// v2.
func cgroupMounts() []string {
	mps, _, _ := cgroupHierarchies()
	return mps
}

// cgroupHierarchies returns every cgroup mount point, the cgroup2 ones, and
// whether there are v1 hierarchies (beside cgroup2 ones: a hybrid host).
func cgroupHierarchies() (all, v2 []string, v1 bool) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 {
			continue
		}
		switch g[0] {
		case "cgroup":
			all, v1 = append(all, f[4]), true
		case "cgroup2":
			all, v2 = append(all, f[4]), append(v2, f[4])
		}
	}
	return all, v2, v1
}

// rawRuntime runs prepared bundles with an OCI runtime's own command line,
// as an operator would by hand: the baseline our runtime is compared with.
type rawRuntime struct {
	binary string   // "crun", "runc", "runsc" or a path
	global []string // flags before the command (runsc: --network=none, --platform=...)
	// hideCgroup2 starts the runtime in a mount namespace without the
	// cgroup2 hierarchy (crun on a hybrid host; see the file comment).
	hideCgroup2 bool

	path  string
	state string
	ns    *nsThread
	seq   atomic.Int64
}

// start prepares r for b: its --root in dir, the hiding thread if needed.
// Call it once the bundles' root filesystems are mounted: the thread's mount
// namespace is a copy, and a later mount reaches it only if the host's /
// propagates (it need not be a shared mount).
func (r *rawRuntime) start(b *testing.B, dir string) {
	b.Helper()
	var err error
	if r.path, err = exec.LookPath(r.binary); err != nil {
		b.Skipf("%s is not installed: %v", r.binary, err)
	}
	r.state = filepath.Join(dir, "raw-state-"+filepath.Base(r.binary))
	if err := os.MkdirAll(r.state, 0o700); err != nil {
		b.Fatal(err)
	}
	if r.hideCgroup2 {
		_, v2, v1 := cgroupHierarchies()
		if v1 && len(v2) > 0 {
			if r.ns, err = newCgroup2HidingThread(v2); err != nil {
				b.Skipf("cannot hide cgroup2 from raw %s: %v", r.binary, err)
			}
			b.Cleanup(r.ns.close)
		}
	}
}

// command returns `<runtime> run --bundle bundle ID`, not started, and
// the new container's ID.
func (r *rawRuntime) command(ctx context.Context, bundle string) (*exec.Cmd, string) {
	id := fmt.Sprintf("raw-%d-%d", os.Getpid(), r.seq.Add(1))
	return r.cli(ctx, "run", "--bundle", bundle, id), id
}

// cli returns the runtime with its --root and global flags and args.
func (r *rawRuntime) cli(ctx context.Context, args ...string) *exec.Cmd {
	all := append(append([]string{"--root", r.state}, r.global...), args...)
	return exec.CommandContext(ctx, r.path, all...)
}

// startCmd starts cmd, from the hiding thread when there is one.
func (r *rawRuntime) startCmd(cmd *exec.Cmd) error {
	if r.ns == nil {
		return cmd.Start()
	}
	return r.ns.start(cmd)
}

// nsThread is a locked OS thread in a mount namespace of its own, where the
// cgroup2 hierarchy is unmounted; processes started from it live there.
type nsThread struct {
	reqs chan func()
}

func newCgroup2HidingThread(v2 []string) (*nsThread, error) {
	t := &nsThread{reqs: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine rather than
		// going back to the scheduler with a namespace of its own.
		runtime.LockOSThread()
		err := unix.Unshare(unix.CLONE_NEWNS)
		if err == nil {
			// Slave: later host mounts still show here, nothing goes back.
			err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, "")
		}
		for _, mp := range v2 {
			if err == nil {
				err = unix.Unmount(mp, unix.MNT_DETACH)
			}
		}
		ready <- err
		if err != nil {
			return
		}
		for f := range t.reqs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

func (t *nsThread) start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	t.reqs <- func() { done <- cmd.Start() }
	return <-done
}

func (t *nsThread) close() { close(t.reqs) }

// rawBundle writes a bundle in dir whose spec runs args over rootfs with
// the isolation our runtime asks for (all namespaces, a user namespace
// mapping 65536 IDs from oci.DefaultIDBase, our capability set,
// no_new_privs, Docker's default seccomp profile, a read-only root, masked
// /proc paths) — but no init, no workspace mount and no cgroup limits: what
// one would hand the runtime by hand.
func rawBundle(b *testing.B, dir, rootfs string, args []string) string {
	b.Helper()
	caps := oci.Capabilities()
	sc, err := seccompprofile.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: caps},
	}})
	if err != nil {
		b.Fatal(err)
	}
	ids := []specs.LinuxIDMapping{{ContainerID: 0, HostID: oci.DefaultIDBase, Size: 65536}}
	spec := &specs.Spec{
		Version:  "1.0.2", // crun 1.8 refuses versions it does not know
		Hostname: "raw",
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Process: &specs.Process{
			Args:            args,
			Env:             []string{"PATH=" + oci.DefaultPath},
			Cwd:             "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
				{Type: specs.UserNamespace},
			},
			UIDMappings: ids,
			GIDMappings: ids,
			Seccomp:     sc,
			MaskedPaths: []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/sys/firmware"},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			},
		},
	}
	data, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	return dir
}

// dockerEngine is a Docker Engine to run the test image with.
type dockerEngine struct {
	cli   string
	env   []string // DOCKER_HOST when the engine is our own
	image string   // the loaded test image
	// started is our own dockerd, nil when the host's answered.
	started *exec.Cmd
}

// startDocker returns a Docker Engine: the host's if `docker info` answers,
// else a dockerd started here (no bridge, no iptables rules, its own data
// root, exec root and socket), stopped by PID when b ends. It loads the
// busybox test image. nil, with a logged reason, when there is no Docker.
func startDocker(b *testing.B, env *sandboxEnv, mode string) *dockerEngine {
	b.Helper()
	if mode == "off" {
		return nil
	}
	cli, err := exec.LookPath("docker")
	if err != nil {
		b.Logf("docker: not installed (%v); skipping it", err)
		return nil
	}
	d := &dockerEngine{cli: cli}
	if mode != "own" && d.run(5*time.Second, "info") == nil {
		b.Logf("docker: using the running dockerd")
	} else {
		dockerd, err := exec.LookPath("dockerd")
		if err != nil {
			b.Logf("docker: no dockerd running and none installed (%v); skipping it", err)
			return nil
		}
		// Short paths: containerd's sockets live under the exec root.
		dir, err := os.MkdirTemp("", "abd-")
		if err != nil {
			b.Fatal(err)
		}
		sock := filepath.Join(dir, "docker.sock")
		d.env = []string{"DOCKER_HOST=unix://" + sock}
		logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(dockerd,
			"--host", "unix://"+sock, "--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "x"),
			"--pidfile", filepath.Join(dir, "dockerd.pid"), "--bridge", "none", "--iptables=false", "--ip-masq=false",
			"--log-level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			b.Fatalf("starting dockerd: %v", err)
		}
		d.started = cmd
		b.Cleanup(func() { d.stop(b, dir, logf) })
		deadline := time.Now().Add(60 * time.Second)
		for {
			err := d.run(5*time.Second, "info")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("dockerd (pid %d) did not answer within 60s: %v\n%s", cmd.Process.Pid, err, tailFile(logf.Name()))
			}
			time.Sleep(100 * time.Millisecond) // polling: dockerd gives no readiness signal
		}
		b.Logf("docker: started dockerd, pid %d, socket %s (stopped by PID when the benchmark ends)", cmd.Process.Pid, sock)
	}
	tarPath := filepath.Join(env.dir, "busybox-docker.tar")
	d.image = "airlock-bench/busybox:" + strconv.Itoa(os.Getpid())
	imagetest.WriteDockerArchive(b, tarPath, imagetest.Busybox(b), d.image)
	if err := d.run(2*time.Minute, "load", "-q", "-i", tarPath); err != nil {
		b.Fatalf("docker load: %v", err)
	}
	b.Cleanup(func() {
		if d.started == nil { // our own dockerd goes with its data root
			_ = d.run(time.Minute, "image", "rm", "-f", d.image)
		}
	})
	return d
}

// command returns `docker args...` against the engine, not started.
func (d *dockerEngine) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.cli, args...)
	cmd.Env = append(os.Environ(), d.env...)
	return cmd
}

func (d *dockerEngine) run(timeout time.Duration, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := d.command(ctx, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// stop ends our own dockerd by PID (SIGTERM, then SIGKILL after 20s) and
// removes its directory.
func (d *dockerEngine) stop(b *testing.B, dir string, logf *os.File) {
	p := d.started.Process
	_ = p.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.started.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		b.Logf("dockerd (pid %d) did not stop on SIGTERM within 20s; killing it", p.Pid)
		_ = p.Kill()
		<-done
	}
	logf.Close()
	mps, err := hostfs.MountsUnder(dir)
	if err == nil {
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				b.Errorf("unmounting %s: %v", mp, err)
			}
		}
	}
	if err := hostfs.RemoveTree(dir); err != nil {
		b.Errorf("removing dockerd's directory: %v", err)
	}
}

func tailFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// firstByte is a writer that records when its first byte arrived.
type firstByte struct {
	at atomic.Int64 // UnixNano; 0 until the first write
}

func (f *firstByte) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.at.CompareAndSwap(0, time.Now().UnixNano())
	}
	return len(p), nil
}

// since returns the time from start to the first byte, or an error when
// none came.
func (f *firstByte) since(start time.Time) (time.Duration, error) {
	at := f.at.Load()
	if at == 0 {
		return 0, errors.New("no output")
	}
	return time.Unix(0, at).Sub(start), nil
}

// runTimedOutput starts cmd (through start), reads its stdout and returns
// the time from just before start to the first byte of it and to its exit.
func runTimedOutput(cmd *exec.Cmd, start func(*exec.Cmd) error) (first, total time.Duration, err error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, 0, err
	}
	cmd.Stdout = pw
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := start(cmd); err != nil {
		pr.Close()
		pw.Close()
		return 0, 0, err
	}
	pw.Close()
	buf := make([]byte, 512)
	n, rerr := pr.Read(buf)
	first = time.Since(t0)
	if n > 0 {
		_, rerr = io.Copy(io.Discard, pr)
	}
	pr.Close()
	werr := cmd.Wait()
	total = time.Since(t0)
	switch {
	case werr != nil:
		return 0, 0, fmt.Errorf("%w: %s", werr, bytes.TrimSpace(stderr.Bytes()))
	case n == 0:
		return 0, 0, fmt.Errorf("no output (%v): %s", rerr, bytes.TrimSpace(stderr.Bytes()))
	}
	return first, total, nil
}
