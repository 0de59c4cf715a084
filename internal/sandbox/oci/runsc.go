// gVisor's runsc as the OCI runtime: what differs from runc and crun.
//
// Package gvisor configures this flavor (Options.Runsc); everything else —
// the hardened spec, the bundle, the init as PID 1, the attempt's cgroup
// with its limits and OOM watch, the workspace and its disk limit, the
// output pipes, the kill sequence, the janitor — is the same code as for
// runc and crun. The differences, and why:
//
//   - Global flags, on every runsc command: --platform (systrap unless
//     configured); --network=none, or --network=sandbox for an attempt with
//     a Network (network.go); --host-uds=none, so that a step can neither
//     connect to nor create host Unix sockets through its mounts;
//     --host-fifo=open, so that a FIFO the executor made in the workspace
//     works as a FIFO (steps can only reach FIFOs in their image and
//     workspace); --oci-seccomp, so that the spec's seccomp profile is
//     enforced by the sentry for the step's processes (without it runsc
//     ignores the spec's profile and relies on its own filters on the
//     sentry alone); --overlay2=none, because the spec's root is read-only
//     and /work must write through to the host: runsc's default puts an
//     overlay with a file-backed upper layer inside the image's root
//     filesystem; and --shared-root, see below. Cgroups are not ignored:
//     runsc puts the sandbox's processes — the sentry, its systrap stub
//     processes, and the gofer — into the spec's cgroupsPath, below the
//     attempt's limits.
//
//   - The step's output and report pipes go in with --pass-fd 3:3 4:4 5:5
//     instead of --preserve-fds 3: runsc gives the sentry the host pipes,
//     and the init inside finds them at the same numbers.
//
//   - The user namespace is kept. The sentry is the boundary, but with
//     directfs (runsc's default) the sentry and the gofer open the mounts'
//     files themselves, and they do it as the spec's user: in the spec's
//     user namespace they run as the unprivileged host user IDBase rather
//     than as host root with the step's capabilities. The workspace and root
//     filesystem get the same ID-mapped mounts as with runc, so ownership in
//     /work and in the image works alike. The gofer binds the init onto the
//     root filesystem itself (runc and crun bind it onto the /dev tmpfs), so
//     the runtime creates that mount point beforehand, as host root: in a
//     root filesystem the user namespace does not own, the gofer could not.
//
//   - Pids: the host's pids controller counts the sandbox's host tasks —
//     the sentry's and the gofer's threads and the systrap stubs — not the
//     step's processes, and a sandbox that reaches the host limit loses its
//     sentry (the Go runtime cannot start a thread and aborts). So the step's
//     limit, Resources.Pids, is enforced inside the sentry: the init writes
//     it to its own cgroup's pids.max in gVisor's cgroupfs before it starts
//     the step (pidsMaxArg), and a fork in the step fails with EAGAIN past
//     it, as on Linux. The attempt's host cgroup gets runscHostPids of it
//     (about two host tasks per task of the step, plus the sandbox's own), a
//     backstop for the host. gVisor (2026-09) keeps a host stub for about
//     every fork it refuses, so a fork bomb reaches the backstop within
//     seconds, and so does a step that raises its own pids.max (root in the
//     sandbox may): the sentry dies, and Run reports the step as killed by
//     SIGKILL — a job's failure, not an error — when the step's host pids
//     cgroup, which the runtime makes so that it outlives runsc, shows the
//     limit reached. Ordinary process churn keeps a handful of stubs.
//
//   - Memory: the sentry holds the step's memory, so the kernel's OOM
//     killer, at the attempt's memory limit, kills the sentry (the largest
//     task) and with it the whole step. runsc then exits without the init's
//     report, and the OOM watch turns that into Result.OOMKilled.
//
//   - runsc keeps a container's state as files in --root
//     ("<id>_sandbox:<sandbox id>.state" and a lock file), not as a
//     directory per container, and the janitor lists them so.
//
//   - runsc runs each gofer in an empty "null" network namespace that it
//     pins with a bind mount in --shared-root; without one it makes and pins
//     a new one. The runtime points --shared-root at <Root>/.runsc and pins
//     that namespace once in New, so that concurrent first steps do not
//     race to pin one each and no attempt pays for it. The janitor leaves
//     <Root>/.runsc alone (it is not a sandbox name).
//
// When runsc's parent process dies (the executor was SIGKILLed, and runsc
// with it through Pdeathsig), the sandbox it started in attached mode dies
// too; its state files and cgroups stay for the janitor, which deletes the
// container with runsc and kills whatever is left in the cgroups.
package oci

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunscOptions make the runtime run steps with gVisor's runsc. Package
// gvisor sets them; see runsc.go.
type RunscOptions struct {
	// Platform is gVisor's platform: "systrap" (the default), "ptrace", or
	// "kvm" (needs /dev/kvm).
	Platform string
}

// DefaultRunscPlatform is RunscOptions.Platform's default.
const DefaultRunscPlatform = "systrap"

// runscHostPids returns the host pids limit of an attempt whose steps may
// have pids tasks: each task of a step costs about two host tasks (a
// systrap stub thread, and a stub process per address space), and the
// sentry and gofer have a few dozen threads of their own, more under load.
func runscHostPids(pids int) int {
	return 2*pids + 128
}

// runscSharedRoot is the directory under Root given as runsc's
// --shared-root.
const runscSharedRoot = ".runsc"

// runscFlags are the runsc flags this runtime uses: a runsc without them is
// too old.
var runscFlags = []string{"platform", "network", "host-uds", "host-fifo", "oci-seccomp", "overlay2", "shared-root", "log", "log-format"}

// runscFlavor is the runsc configuration of a Runtime.
type runscFlavor struct {
	platform   string
	sharedRoot string
}

// globalArgs are the flags every runsc command gets; see the file comment.
// A later --network flag overrides the one here.
func (f *runscFlavor) globalArgs() []string {
	return []string{
		"--platform=" + f.platform,
		"--shared-root=" + f.sharedRoot,
		"--network=none",
		"--host-uds=none",
		"--host-fifo=open",
		"--oci-seccomp",
		"--overlay2=none",
	}
}

// checkRunscPlatform checks that this host can run gVisor's platform p.
func checkRunscPlatform(p string) error {
	switch p {
	case "systrap", "ptrace":
		return nil
	case "kvm":
		if _, err := os.Stat("/dev/kvm"); err != nil {
			return fmt.Errorf("platform kvm needs /dev/kvm: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown gVisor platform %q (want systrap, ptrace or kvm)", p)
}

// flagLineRe matches a flag's line in the output of `runsc flags`.
var flagLineRe = regexp.MustCompile(`(?m)^\s*-([\w-]+)`)

// checkRunscFlags checks that the runsc at path knows every flag the runtime
// passes, which Debian's runsc (2022) does not.
func checkRunscFlags(path string) error {
	out, err := exec.Command(path, "flags").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s flags: %w (is it older than 2024? see the gvisor package doc)", path, err)
	}
	known := make(map[string]bool)
	for _, m := range flagLineRe.FindAllSubmatch(out, -1) {
		known[string(m[1])] = true
	}
	var missing []string
	for _, f := range runscFlags {
		if !known[f] {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s is too old: it lacks %s (build a current runsc; see the gvisor package doc)", path, strings.Join(missing, ", "))
	}
	return nil
}

// runscStateRe matches runsc's container state files.
var runscStateRe = regexp.MustCompile(`^(.+)_sandbox:(.+)\.state$`)

// containers lists the IDs of the containers whose state is in the OCI
// runtime's --root directory state.
func (r *Runtime) containers(state string) []string {
	entries, err := os.ReadDir(state)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range entries {
		if r.runsc == nil {
			if e.IsDir() {
				ids = append(ids, e.Name())
			}
			continue
		}
		if m := runscStateRe.FindStringSubmatch(e.Name()); m != nil && !slices.Contains(ids, m[1]) {
			ids = append(ids, m[1])
		}
	}
	return ids
}

// hasContainer reports whether the OCI runtime keeps state for container id
// in state.
func (r *Runtime) hasContainer(state, id string) bool {
	if r.runsc == nil {
		_, err := os.Stat(filepath.Join(state, id))
		return err == nil
	}
	return slices.Contains(r.containers(state), id)
}

// pinNullNetns makes path a bind mount of a new, empty network namespace,
// unless it already is one: runsc's "null" namespace for gofers.
func pinNullNetns(path string) error {
	if isNetns(path) {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return fmt.Errorf("creating the null network namespace's mount point: %w", err)
	}
	f.Close()
	// A child stopped at its execve (PTRACE_TRACEME) holds the namespace
	// while it is bound; it runs nothing.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"airlock-oci-null-netns"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Ptrace: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("creating the null network namespace: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	ns := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	if err := unix.Mount(ns, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("pinning the null network namespace: %w", err)
	}
	return nil
}

// isNetns reports whether path is a network namespace file.
func isNetns(path string) bool {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil || st.Type != unix.NSFS_MAGIC {
		return false
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	return err == nil && t == unix.CLONE_NEWNET
}
