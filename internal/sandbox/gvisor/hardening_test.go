package gvisor_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/gvisor"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
	"github.com/airlock-run/airlock/internal/testenv"
)

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
	rt := newRuntime(t, options(t))
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
		{"the spec's seccomp filter is active", `grep '^Seccomp:' /proc/self/status | tr -s '\t' ' '`, "Seccomp: 2\n"},
		// gVisor itself lets any process make a user namespace; Docker's
		// profile refuses unshare(2) without CAP_SYS_ADMIN. EPERM shows the
		// sentry enforcing the spec's profile (--oci-seccomp).
		{"the profile's refusals apply", `unshare -U true 2>&1 | cut -d: -f2-; echo $?`, " unshare(0x10000000): Operation not permitted\n0\n"},
		{"the kernel is gVisor's", `uname -r | grep -o gvisor; dmesg 2>&1; true`, "gvisor\ndmesg: klogctl: Operation not permitted\n"},
		{"/proc/sys and /sys are read-only", `echo 1 > /proc/sys/kernel/ns_last_pid 2>&1; touch /sys/x 2>&1; echo done`,
			"/bin/sh: can't create /proc/sys/kernel/ns_last_pid: Operation not permitted\ntouch: /sys/x: Read-only file system\ndone\n"},
		{"the network is loopback only", `ip -o link | cut -d: -f2`, " lo\n"},
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

// TestSandboxProcesses checks, from the host, who the sandbox's processes
// are: the sentry and the gofer run as the unprivileged host user IDBase, in
// the attempt's cgroup.
func TestSandboxProcesses(t *testing.T) {
	t.Parallel()
	opts := options(t)
	rt := newRuntime(t, opts)
	sb := open(t, rt, job.Resources{})
	ready := make(chan struct{})
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		w := &signalWriter{line: "ready\n", ch: ready}
		_, err := sb.Run(ctx, sandbox.Step{Run: "echo ready; sleep 1000", Stdout: w, KillGrace: 100 * time.Millisecond})
		done <- err
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("the step ended before it was ready: %v", err)
	}
	name := filepath.Base(filepath.Dir(sb.WorkDir()))
	pids := cgroupProcs(filepath.Join("/sys/fs/cgroup/pids", opts.CgroupParent, name))
	if len(pids) < 2 {
		t.Fatalf("processes in the attempt's cgroup: %v, want the sentry, the gofer and stubs", pids)
	}
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			continue // gone meanwhile
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && (f[0] == "Uid:" || f[0] == "Gid:") && f[1] != fmt.Sprint(oci.DefaultIDBase) {
				t.Errorf("process %s: %s, want %d", pid, line, oci.DefaultIDBase)
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// signalWriter closes ch once line has been written to it.
type signalWriter struct {
	line string
	ch   chan struct{}
	buf  bytes.Buffer
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if w.ch != nil && strings.Contains(w.buf.String(), w.line) {
		close(w.ch)
		w.ch = nil
	}
	return len(p), nil
}

func TestWorkspaceOwnership(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t))
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
		{"65534:65534", "uid=65534(nobody) gid=65534(nogroup)\n"},
		{"4242", "uid=4242 gid=0(root)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			t.Parallel()
			opts := options(t)
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
}

// --- limits ---

// cgroupFile reads a file of the attempt's cgroup in the v1 hierarchy of
// controller ctl, or of the v2 hierarchy when the host has no v1 ctl.
func cgroupFile(t *testing.T, opts gvisor.Options, sb sandbox.Sandbox, ctl, file string) string {
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
	opts := options(t)
	rt := newRuntime(t, opts)
	sb := open(t, rt, job.Resources{CPUs: 1.5, Memory: 256 << 20, Pids: 100})
	v2 := false
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		v2 = true
	}
	type limit struct{ ctl, file, want string }
	// The host's pids limit is the sandbox's backstop (runsc.go); the
	// step's own limit is inside the sentry.
	limits := []limit{
		{"memory", "memory.limit_in_bytes", "268435456"},
		{"pids", "pids.max", "328"},
		{"cpu", "cpu.cfs_quota_us", "150000"},
		{"cpu", "cpu.cfs_period_us", "100000"},
	}
	if v2 {
		limits = []limit{{"", "memory.max", "268435456"}, {"", "pids.max", "328"}, {"", "cpu.max", "150000 100000"}}
	}
	for _, l := range limits {
		if got := cgroupFile(t, opts, sb, l.ctl, l.file); got != l.want {
			t.Errorf("%s = %q, want %q", l.file, got, l.want)
		}
	}
	res, out := run(t, sb, "cat /sys/fs/cgroup/pids/pids.max")
	if !res.Success() || out != "100\n" {
		t.Errorf("Result %+v, the sandbox's pids.max %q; want success and 100", res, out)
	}
}

func TestMemoryBombIsOOMKilled(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t))
	sb := open(t, rt, job.Resources{Memory: 64 << 20})
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
	opts := options(t)
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
	elapsed := time.Since(start)
	if elapsed > 10*time.Second {
		t.Errorf("Run returned after %v, want soon after its 3s timeout", elapsed)
	}
	// Forks fail at the sandbox's limit; the step is stopped by its
	// timeout, or its sandbox dies at the host's backstop (runsc.go) and
	// the step is reported killed. Either way it fails, as a Result.
	if res.Success() || res.ExitCode != -1 {
		t.Errorf("Result = %+v, want a step ended by a signal", res)
	}
	// The shell says "can't fork" at the sandbox's limit — unless the
	// backstop killed the sentry first (a loaded host gets there sooner),
	// which loses what the shell had not yet written out; then the step
	// ended by SIGKILL before its timeout.
	backstop := res.Signal == "SIGKILL" && elapsed < 3*time.Second
	if !strings.Contains(out.String(), "can't fork") && !backstop {
		t.Errorf("the bomb never hit the pids limit; Result %+v after %v, output %.200q", res, elapsed, out.String())
	}
	if backstop {
		t.Logf("the host's backstop ended the bomb after %v (output: %d bytes, can't fork: %v)", elapsed, out.Len(), strings.Contains(out.String(), "can't fork"))
	}
	if got := cgroupFile(t, opts, sb, "pids", "pids.current"); got != "0" {
		t.Errorf("pids.current = %s after Run returned, want 0", got)
	}
	// The attempt goes on.
	if res, out := run(t, sb, "echo next"); !res.Success() || out != "next\n" {
		t.Errorf("next step: Result %+v, output %q; want success", res, out)
	}
}

func TestWorkspaceDiskLimit(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t))
	sb := open(t, rt, job.Resources{Disk: 16 << 20})
	res, out := run(t, sb, `ls -A; df -k /work | awk 'NR==2 {print ($2 > 14000 && $2 < 17000)}'; dd if=/dev/zero of=big bs=1M count=64 2>&1 | head -1`)
	if want := "1\ndd: error writing 'big': No space left on device\n"; out != want || !res.Success() {
		t.Errorf("Result %+v, output %q; want success and %q", res, out, want)
	}
	if fi, err := os.Stat(filepath.Join(sb.WorkDir(), "big")); err != nil || fi.Size() < 8<<20 {
		t.Errorf("the step's file on the host: %v, %v", fi, err)
	}
}

func TestOverlayRootFS(t *testing.T) {
	// A RootFS that cannot be ID-mapped, an overlay made by someone else:
	// its files show as nobody's, and runsc's gofer, which binds the init
	// onto the root filesystem itself, cannot create that mount point in a
	// /dev the user namespace does not own. The runtime makes it.
	// (Images from the cache get an ID-mapped overlay: TestImages.)
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
	// A lower layer of its own: runsc leaves the init's mount point in the
	// shared busybox root filesystem.
	lower, err := ocitest.BusyboxRootfs(filepath.Join(dir, "lower"))
	if err != nil {
		testenv.Missing(t, "busybox-static (/bin/busybox, statically linked)", err)
	}
	if err := syscall.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+workdir); err != nil {
		testenv.Missing(t, "overlayfs", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(merged, 0); err != nil {
			t.Errorf("unmounting the overlay: %v", err)
		}
		os.RemoveAll(dir)
	})
	opts := options(t)
	opts.Images = oci.DirImage(merged)
	sb := open(t, newRuntime(t, opts), job.Resources{})
	res, out := run(t, sb, `id -u; stat -c %u /bin/busybox; echo ok > /work/f && cat /work/f; touch /bin/x 2>&1`)
	if want := "0\n65534\nok\ntouch: /bin/x: Read-only file system\n"; out != want {
		t.Errorf("Result %+v, output %q; want %q", res, out, want)
	}
	var written []string
	err = filepath.WalkDir(upper, func(p string, d os.DirEntry, err error) error {
		if p != upper {
			written = append(written, strings.TrimPrefix(p, upper+"/"))
		}
		return err
	})
	if want := []string{"dev", "dev/.airlock-init"}; err != nil || !slices.Equal(written, want) {
		t.Errorf("the overlay's upper layer holds %q (%v), want only the init's mount point %q: the step wrote into its image", written, err, want)
	}
}
