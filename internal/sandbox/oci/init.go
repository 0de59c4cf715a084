// The container's init, and the wrapper that hides cgroup v2 from crun.
//
// Both run from the executor's own binary, chosen by argv[0] in this
// package's init function, before main runs.
//
// # Container init
//
// A step's shell must not be its container's PID 1. The kernel shields a PID
// namespace's init from every signal it has no handler for, so a shell as
// PID 1 ignores SIGTERM from the runtime and even `kill -KILL $$` from
// itself; and the runtimes report an init killed by signal N as exit status
// 128+N, which a step's `exit 143` is too. So every container's process is
// this init, bind-mounted read-only at InitPath: it starts the step's shell
// as its only child, with the step's output pipes (file descriptors 4 and 5)
// as its stdout and stderr, reaps every process that is reparented to it, forwards
// SIGTERM (and SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2) to every process of
// the container with kill(-1) — a step's whole process tree gets the signal,
// as the sandbox contract asks, whatever process group or session it moved
// to — and, when the shell has exited, writes its exact wait status to file
// descriptor 3 (which the runtime passes through with --preserve-fds) and
// exits. Its exit takes down the PID namespace: the kernel kills whatever the
// step left running before the runtime returns. It adds nothing to the
// environment and holds nothing the step can see but PID 1.
//
// The init must run in any image, so the binary that contains it must be
// statically linked: Options.Init names it — by default the executor's own
// executable (build it with CGO_ENABLED=0), else a build of ./ociinit, a
// 3.5 MB program that is only this init and starts a few milliseconds
// faster — and New refuses a dynamically linked one.
//
// # Hiding cgroup v2 from crun
//
// crun refuses to run on a hybrid cgroup host when controllers are bound to
// the cgroup2 hierarchy ("cgroups in hybrid mode not supported, drop all
// controllers from cgroupv2"). The runtime then runs crun through this
// wrapper: it enters a new mount namespace (mounts become slaves of the
// host's, so later mounts still propagate in), unmounts the cgroup2
// hierarchy there, and execs crun, which sees a plain cgroup v1 host. Only
// crun's own view changes; the host's mounts and cgroups are untouched.
package oci

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitPath is where the init is mounted in every container.
const InitPath = "/dev/.airlock-init"

// hideCgroup2Arg0 is argv[0] of the crun wrapper; argv[1] is crun's path.
const hideCgroup2Arg0 = "airlock-oci-hide-cgroup2"

// The init's file descriptors besides stdio, passed by the runtime with
// --preserve-fds: its report, and the step's stdout and stderr. The step's
// output bypasses the runtime's own stdio, which runc copies through pipes
// of its own — one per stream, so the order of the two streams would be lost.
const (
	reportFd = 3
	stdoutFd = 4
	stderrFd = 5
	extraFds = 3
)

func init() {
	if len(os.Args) == 0 {
		return
	}
	switch os.Args[0] {
	case InitPath:
		os.Exit(containerInit(os.Args[1:]))
	case hideCgroup2Arg0:
		hideCgroup2AndExec(os.Args[1:])
	}
}

// forwarded are the signals the init passes on to every process.
var forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// containerInit runs args as its child and returns the exit code the init
// exits with; the exact status goes to reportFd as "exit N", "signal N" or
// "error MESSAGE".
func containerInit(args []string) int {
	for fd := reportFd; fd < reportFd+extraFds; fd++ {
		unix.CloseOnExec(fd)
	}
	out := os.NewFile(reportFd, "report")
	report := func(format string, a ...any) {
		_, _ = fmt.Fprintf(out, format+"\n", a...)
	}
	var cred *syscall.Credential
	if len(args) > 0 {
		if v, ok := strings.CutPrefix(args[0], userArg); ok {
			u, err := parseStepUser(v)
			if err != nil {
				report("error %v", err)
				return 127
			}
			groups := make([]uint32, len(u.groups))
			copy(groups, u.groups)
			cred = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: groups}
			args = args[1:]
		}
	}
	if len(args) > 0 {
		if v, ok := strings.CutPrefix(args[0], pidsMaxArg); ok {
			if err := limitPids(v); err != nil {
				report("error setting the pids limit in the sandbox: %v", err)
				return 127
			}
			args = args[1:]
		}
	}
	if len(args) == 0 {
		report("error the init was given no command")
		return 127
	}
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)

	wd, _ := os.Getwd()
	pid, err := syscall.ForkExec(args[0], args, &syscall.ProcAttr{Dir: wd, Env: os.Environ(), Files: []uintptr{0, stdoutFd, stderrFd},
		Sys: &syscall.SysProcAttr{Credential: cred}})
	if err != nil {
		fmt.Fprintf(os.NewFile(stderrFd, "stderr"), "airlock: cannot run %s in this image: %v\n", args[0], err)
		report("exit 127")
		return 127
	}
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			s := sig.(unix.Signal)
			_ = unix.Kill(-1, s) // every process of the namespace but this one
			if s == unix.SIGTERM {
				_ = unix.Kill(-1, unix.SIGCONT) // so that stopped processes act on it
			}
			continue
		}
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil || got <= 0 {
				break
			}
			if got != pid {
				continue
			}
			if ws.Signaled() {
				report("signal %d", int(ws.Signal()))
				return 128 + int(ws.Signal())
			}
			report("exit %d", ws.ExitStatus())
			return ws.ExitStatus()
		}
	}
	return 127 // unreachable: sigs is never closed
}

// pidsMaxArg, as the init's first argument with a number appended, makes it
// set its own cgroup's pids.max before it starts the step. Under runsc the
// host's pids limit counts the sandbox's host tasks, and a step reaching it
// would take the sentry down with it; the limit on the step's processes is
// enforced by the sentry's cgroups instead (see runsc.go).
const pidsMaxArg = "--airlock-pids-max="

// userArg, as the init's first argument with a stepUser appended, makes the
// init (started as root) run the step as that user: setgroups, setgid and
// setuid in the child before exec, so the step holds no capabilities. It
// comes before pidsMaxArg, which needs root.
const userArg = "--airlock-user="

// limitPids writes max to the pids.max of this process's pids cgroup, which
// /sys/fs/cgroup/pids shows either whole or from that cgroup down (gVisor
// mounts a container's own cgroup there).
func limitPids(max string) error {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || !slices.Contains(strings.Split(f[1], ","), "pids") {
			continue
		}
		file := filepath.Join("/sys/fs/cgroup/pids", f[2], "pids.max")
		if _, err := os.Stat(file); err != nil {
			file = "/sys/fs/cgroup/pids/pids.max"
		}
		return os.WriteFile(file, []byte(max), 0)
	}
	return errors.New("no pids cgroup in /proc/self/cgroup")
}

// hideCgroup2AndExec execs args[0] with args in a mount namespace without
// cgroup2 mounts; see the file comment. It never returns.
func hideCgroup2AndExec(args []string) {
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "airlock: hiding cgroup v2 from the OCI runtime: %v\n", err)
		os.Exit(125)
	}
	if len(args) == 0 {
		fail(fmt.Errorf("no runtime to run"))
	}
	// Namespaces belong to threads until exec: unshare and exec on one.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		fail(fmt.Errorf("unshare: %w", err))
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		fail(fmt.Errorf("making mounts slaves: %w", err))
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		fail(err)
	}
	for _, m := range parseMountinfo(b) {
		if m.fstype == "cgroup2" {
			if err := unix.Unmount(m.point, unix.MNT_DETACH); err != nil {
				fail(fmt.Errorf("unmounting %s: %w", m.point, err))
			}
		}
	}
	fail(unix.Exec(args[0], args, os.Environ()))
}
