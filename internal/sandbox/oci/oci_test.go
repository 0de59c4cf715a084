package oci_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
	"github.com/airlock-run/airlock/internal/sandbox/sandboxtest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// tmpRoot holds everything the tests create; every directory on its path is
// searchable by others (mode 0711), as the containers' user namespace needs.
var tmpRoot string

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		crashHelper()
		return
	}
	dir, err := os.MkdirTemp("", "airlock-oci-test-")
	if err == nil {
		err = os.Chmod(dir, 0o711)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "removing test directory:", err)
	}
	os.Exit(code)
}

// --- fixtures: the busybox root filesystem and the init ---

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error

	initOnce sync.Once
	initPath string
	initErr  error
)

// busyboxRootfs returns a root filesystem made of Debian's busybox-static
// (ocitest.BusyboxRootfs).
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	rootfsOnce.Do(func() { rootfsDir, rootfsErr = ocitest.BusyboxRootfs(filepath.Join(tmpRoot, "rootfs")) })
	if rootfsErr != nil {
		testenv.Missing(t, "busybox-static (/bin/busybox, statically linked)", rootfsErr)
	}
	return rootfsDir
}

// containerInit returns the init for the runtimes under test
// (ocitest.StaticInit).
func containerInit(t *testing.T) string {
	t.Helper()
	initOnce.Do(func() { initPath, initErr = ocitest.StaticInit(tmpRoot) })
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

// --- runtimes ---

var runtimeSeq atomic.Int64

// options returns Options for a runtime of its own: a Root and a cgroup
// parent nobody else uses.
func options(t *testing.T, binary string) oci.Options {
	t.Helper()
	if _, err := exec.LookPath(binary); err != nil {
		testenv.Missing(t, binary, err)
	}
	n := runtimeSeq.Add(1)
	return oci.Options{
		Root:         filepath.Join(tmpRoot, fmt.Sprintf("rt%d", n)),
		Binary:       binary,
		Images:       oci.DirImage(busyboxRootfs(t)),
		Init:         containerInit(t),
		CgroupParent: fmt.Sprintf("/airlock-test-%d-%d", os.Getpid(), n),
	}
}

// newRuntime returns a runtime and, when the test ends, checks that it left
// nothing behind — no attempt directory, mount, container state or cgroup —
// then removes its root and cgroup parent.
func newRuntime(t *testing.T, opts oci.Options) *oci.Runtime {
	t.Helper()
	rt, err := oci.New(opts)
	if err != nil {
		if _, err := exec.LookPath(opts.Binary); err != nil {
			testenv.Missing(t, opts.Binary, err)
		}
		testenv.Missing(t, "the oci runtime's host requirements", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// Sandboxes of failed tests may not have been closed: the janitor
			// cleans up, and leftovers are not reported on top of the failure.
			if err := rt.RemoveLeftovers(context.Background(), nil); err != nil {
				t.Errorf("RemoveLeftovers: %v", err)
			}
		} else if left, err := ocitest.Leftovers(rt.Root(), opts.CgroupParent); err != nil || len(left) > 0 {
			t.Errorf("left behind after every sandbox was closed (%v):\n%s", err, strings.Join(left, "\n"))
		}
		if err := ocitest.RemoveCgroupParent(opts.CgroupParent); err != nil {
			t.Error(err)
		}
		if err := ocitest.RemoveRoot(rt.Root()); err != nil {
			t.Error(err)
		}
	})
	return rt
}

var sandboxSeq atomic.Int64

func open(t *testing.T, rt *oci.Runtime, res job.Resources) sandbox.Sandbox {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", os.Getpid(), sandboxSeq.Add(1))
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name, Resources: res, Network: job.NetworkNone})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sb
}

// run runs script and returns its Result and combined output.
func run(t *testing.T, sb sandbox.Sandbox, script string) (sandbox.Result, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	res, err := sb.Run(ctx, sandbox.Step{Run: script, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("Run(%q): %v (output %q)", script, err, out.String())
	}
	return res, out.String()
}

// --- the conformance suite ---

func TestConformance(t *testing.T) {
	for _, binary := range []string{"runc", "crun"} {
		t.Run(binary, func(t *testing.T) {
			t.Parallel()
			rt := newRuntime(t, options(t, binary))
			sandboxtest.Exercise(t, rt, sandboxtest.Options{Image: "busybox"})
		})
	}
}

// --- hardening ---

// capMask returns the capability bitmask of names, as /proc/<pid>/status
// prints it.
func capMask(t *testing.T, names []string) string {
	t.Helper()
	bits := map[string]uint{
		"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
		"CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
		"CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31,
	}
	var m uint64
	for _, n := range names {
		b, ok := bits[n]
		if !ok {
			t.Fatalf("capMask: unknown capability %s", n)
		}
		m |= 1 << b
	}
	return fmt.Sprintf("%016x", m)
}

func TestHardening(t *testing.T) {
	t.Parallel()
	opts := options(t, "runc")
	rt := newRuntime(t, opts)
	sb := open(t, rt, job.Resources{})
	caps := capMask(t, oci.Capabilities())
	tests := []struct {
		name, script, want string
	}{
		{"the root filesystem is read-only", `touch /etc/x 2>&1; touch /bin/x 2>&1; mkdir /new 2>&1; echo done`,
			"touch: /etc/x: Read-only file system\ntouch: /bin/x: Read-only file system\nmkdir: can't create directory '/new': Read-only file system\ndone\n"},
		{"/work is writable", `echo hi > /work/f && cat /work/f`, "hi\n"},
		{"/tmp is a writable tmpfs", `echo hi > /tmp/f && cat /tmp/f && grep ' /tmp ' /proc/mounts | cut -d' ' -f3`, "hi\ntmpfs\n"},
		{"only the step's processes are visible", `ps -o comm > /tmp/ps; cat /tmp/ps`, "COMMAND\n.airlock-init\nsh\nps\n"},
		{"capabilities are reduced", `grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status | tr -s '\t' ' '`,
			"CapPrm: " + caps + "\nCapEff: " + caps + "\nCapBnd: " + caps + "\nCapAmb: 0000000000000000\n"},
		{"no_new_privs is set", `grep NoNewPrivs /proc/self/status | tr -s '\t' ' '`, "NoNewPrivs: 1\n"},
		{"a seccomp filter is active", `grep '^Seccomp:' /proc/self/status | tr -s '\t' ' '`, "Seccomp: 2\n"},
		{"root is an unprivileged host user", `id; tr -s ' ' < /proc/self/uid_map; tr -s ' ' < /proc/self/gid_map`,
			"uid=0(root) gid=0(root)\n 0 1000000000 65536\n 0 1000000000 65536\n"},
		{"/proc paths are masked", `wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l`, "0\n0\n0\n"},
		{"/proc/sys and /sys are read-only", `echo 1 > /proc/sys/kernel/ns_last_pid 2>&1; touch /sys/x 2>&1; echo done`,
			"/bin/sh: can't create /proc/sys/kernel/ns_last_pid: Read-only file system\ntouch: /sys/x: Read-only file system\ndone\n"},
		{"the network is loopback only", `ls /sys/class/net`, "lo\n"},
		{"mount is refused", `mkdir -p /tmp/m && mount -t tmpfs none /tmp/m 2>&1; echo $?`, "mount: permission denied (are you root?)\n1\n"},
		{"raw sockets are refused", `ping -c 1 127.0.0.1 2>&1; echo $?`, "PING 127.0.0.1 (127.0.0.1): 56 data bytes\nping: permission denied (are you root?)\n1\n"},
		{"kernel modules cannot be loaded", `echo x > /tmp/none.ko; insmod /tmp/none.ko 2>&1; echo $?`, "insmod: can't insert '/tmp/none.ko': Operation not permitted\n1\n"},
		{"the step's output can be reopened by path", `echo out > /dev/stdout; echo err > /dev/stderr`, "out\nerr\n"},
		{"the hostname is fixed", `hostname`, "airlock\n"},
		{"the umask is 022", `umask`, "0022\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out := run(t, sb, tt.script)
			if !res.Success() {
				t.Errorf("Result = %+v, want success; output %q", res, out)
			}
			if out != tt.want {
				t.Errorf("output = %q, want %q", out, tt.want)
			}
		})
	}
}

func TestWorkspaceOwnership(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t, "runc"))
	sb := open(t, rt, job.Resources{})
	// The executor fills the workspace as host root; root in the step owns
	// it, and what the step creates belongs to host root.
	if err := os.MkdirAll(filepath.Join(sb.WorkDir(), "checkout"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sb.WorkDir(), "checkout", "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, out := run(t, sb, `stat -c '%u:%g %n' checkout checkout/file && echo y >> checkout/file && mkdir checkout/made && touch checkout/made/f`)
	if !res.Success() {
		t.Fatalf("Result = %+v, want success; output %q", res, out)
	}
	if want := "0:0 checkout\n0:0 checkout/file\n"; out != want {
		t.Errorf("owners seen by the step = %q, want %q", out, want)
	}
	for _, p := range []string{"checkout/made", "checkout/made/f"} {
		fi, err := os.Stat(filepath.Join(sb.WorkDir(), p))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s is owned by %d:%d on the host, want 0:0", p, st.Uid, st.Gid)
		}
	}
}

func TestImageUser(t *testing.T) {
	t.Parallel()
	rootfs := busyboxRootfs(t)
	tests := []struct {
		user, want string
	}{
		{"", "uid=0(root) gid=0(root)\n"},
		{"builder", "uid=1000(builder) gid=1000(builder) groups=10(wheel)\n"},
		{"1000", "uid=1000(builder) gid=1000(builder) groups=10(wheel)\n"},
		{"65534:65534", "uid=65534(nobody) gid=65534(nogroup)\n"},
		{"builder:root", "uid=1000(builder) gid=0(root) groups=10(wheel)\n"},
		{"4242", "uid=4242 gid=0(root)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			t.Parallel()
			opts := options(t, "runc")
			opts.Images = func(context.Context, string, string) (oci.Image, error) {
				return oci.Image{RootFS: rootfs, User: tt.user}, nil
			}
			sb := open(t, newRuntime(t, opts), job.Resources{Pids: 100}) // as the executor always sets one
			res, out := run(t, sb, "id; touch /work/mine && grep -c CapEff:.0000000000000000 /proc/self/status")
			want := tt.want + "1\n"
			if tt.user == "" {
				want = tt.want + "0\n"
			}
			if out != want || res.ExitCode != map[bool]int{true: 1, false: 0}[tt.user == ""] {
				t.Errorf("Result %+v, output %q; want %q", res, out, want)
			}
			// Whoever the step runs as, its files belong to host root.
			fi, err := os.Stat(filepath.Join(sb.WorkDir(), "mine"))
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Errorf("the step's file is owned by %d:%d on the host, want 0:0", st.Uid, st.Gid)
			}
		})
	}
	t.Run("unknown user", func(t *testing.T) {
		t.Parallel()
		opts := options(t, "runc")
		opts.Images = func(context.Context, string, string) (oci.Image, error) {
			return oci.Image{RootFS: rootfs, User: "nosuchuser"}, nil
		}
		sb := open(t, newRuntime(t, opts), job.Resources{})
		if res, err := sb.Run(context.Background(), sandbox.Step{Run: "true"}); err == nil || !strings.Contains(err.Error(), "nosuchuser") {
			t.Errorf("Run = %+v, %v; want an error naming the user", res, err)
		}
	})
}

// --- limits ---

// cgroupFile reads a file of the attempt's cgroup in the v1 hierarchy of
// controller ctl, or of the v2 hierarchy when the host has no v1 ctl.
func cgroupFile(t *testing.T, opts oci.Options, sb sandbox.Sandbox, ctl, file string) string {
	t.Helper()
	name := filepath.Base(filepath.Dir(sb.WorkDir()))
	for _, dir := range []string{filepath.Join("/sys/fs/cgroup", ctl), "/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		b, err := os.ReadFile(filepath.Join(dir, opts.CgroupParent, name, file))
		if err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no %s in the attempt's cgroup", file)
	return ""
}

func TestLimitsAreSet(t *testing.T) {
	t.Parallel()
	opts := options(t, "runc")
	rt := newRuntime(t, opts)
	sb := open(t, rt, job.Resources{CPUs: 1.5, Memory: 256 << 20, Pids: 100})
	v2 := false
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		v2 = true
	}
	type limit struct{ ctl, file, want string }
	limits := []limit{
		{"memory", "memory.limit_in_bytes", "268435456"},
		{"pids", "pids.max", "100"},
		{"cpu", "cpu.cfs_quota_us", "150000"},
		{"cpu", "cpu.cfs_period_us", "100000"},
	}
	if v2 {
		limits = []limit{{"", "memory.max", "268435456"}, {"", "pids.max", "100"}, {"", "cpu.max", "150000 100000"}}
	}
	for _, l := range limits {
		if got := cgroupFile(t, opts, sb, l.ctl, l.file); got != l.want {
			t.Errorf("%s = %q, want %q", l.file, got, l.want)
		}
	}
	// A step's container is a child of the attempt's cgroup.
	res, out := run(t, sb, "cat /proc/self/cgroup")
	if !res.Success() || !strings.Contains(out, ":/\n") {
		t.Errorf("Result %+v, /proc/self/cgroup %q; want success and the container's cgroup namespace root", res, out)
	}
}

func TestMemoryBombIsOOMKilled(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t, "runc"))
	sb := open(t, rt, job.Resources{Memory: 32 << 20})
	res, out := run(t, sb, `s=0123456789abcdef; while :; do s="$s$s"; done`)
	want := sandbox.Result{ExitCode: -1, Signal: "SIGKILL", OOMKilled: true}
	if res != want {
		t.Errorf("Result = %+v, want %+v; output %q", res, want, out)
	}
	// The attempt goes on: the next step runs, and is not reported as OOM.
	if res, out := run(t, sb, "echo next"); !res.Success() || out != "next\n" {
		t.Errorf("next step: Result %+v, output %q; want success", res, out)
	}
}

func TestForkBombIsContained(t *testing.T) {
	t.Parallel()
	const pids = 64
	opts := options(t, "runc")
	rt := newRuntime(t, opts)
	sb := open(t, rt, job.Resources{Pids: pids})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	var out bytes.Buffer
	res, err := sb.Run(ctx, sandbox.Step{
		Run:       `bomb() { bomb | bomb & }; bomb; while :; do wait; done`,
		KillGrace: 100 * time.Millisecond,
		Stdout:    &out, Stderr: &out,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("Run returned after %v, want soon after its 3s timeout", elapsed)
	}
	// The shell either dies of a failed fork itself, or is stopped by the
	// timeout; either way the step fails and ends.
	if res.Success() {
		t.Errorf("Result = %+v, want a failure", res)
	}
	if !strings.Contains(out.String(), "can't fork") {
		t.Errorf("the bomb never hit the pids limit; output %.200q", out.String())
	}
	// The attempt's cgroup saw the bomb reach the limit and no further.
	if peak := cgroupFile(t, opts, sb, "pids", "pids.peak"); peak != fmt.Sprint(pids) {
		t.Errorf("pids.peak = %s, want the limit %d", peak, pids)
	}
	if got := cgroupFile(t, opts, sb, "pids", "pids.current"); got != "0" {
		t.Errorf("pids.current = %s after Run returned, want 0", got)
	}
}

func TestWorkspaceDiskLimit(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t, "runc"))
	sb := open(t, rt, job.Resources{Disk: 16 << 20})
	res, out := run(t, sb, `ls -A; df -k /work | awk 'NR==2 {print ($2 > 14000 && $2 < 17000)}'; dd if=/dev/zero of=big bs=1M count=64 2>&1 | head -1`)
	if want := "1\ndd: error writing 'big': No space left on device\n"; out != want || !res.Success() {
		t.Errorf("Result %+v, output %q; want success and %q", res, out, want)
	}
	// The executor sees the same workspace.
	if fi, err := os.Stat(filepath.Join(sb.WorkDir(), "big")); err != nil || fi.Size() < 8<<20 {
		t.Errorf("the step's file on the host: %v, %v", fi, err)
	}
	if _, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "tiny-disk", Resources: job.Resources{Disk: 1 << 20}}); err == nil {
		t.Errorf("Open with a 1 MiB disk succeeded, want an error")
	}
}

func TestOverlayRootFS(t *testing.T) {
	// A RootFS that cannot be ID-mapped, an overlay made by someone else:
	// its files show as nobody's and the step still runs. (Images from the
	// cache get an ID-mapped overlay: TestImages.)
	t.Parallel()
	dir := filepath.Join(tmpRoot, fmt.Sprintf("overlay-%d", runtimeSeq.Add(1)))
	upper, workdir, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, workdir, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lower := busyboxRootfs(t)
	if err := syscall.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+workdir); err != nil {
		testenv.Missing(t, "overlayfs", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(merged, 0); err != nil {
			t.Errorf("unmounting the overlay: %v", err)
		}
		os.RemoveAll(dir)
	})
	opts := options(t, "runc")
	opts.Images = oci.DirImage(merged)
	sb := open(t, newRuntime(t, opts), job.Resources{})
	res, out := run(t, sb, `stat -c %u /bin/busybox; id -u; echo ok > /work/f && cat /work/f`)
	if want := "65534\n0\nok\n"; !res.Success() || out != want {
		t.Errorf("Result %+v, output %q; want success and %q", res, out, want)
	}
}
