package gvisor_test

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
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/gvisor"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
	"github.com/airlock-run/airlock/internal/sandbox/sandboxtest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// runscEnv names the runsc to test; else runsc is looked up in PATH.
const runscEnv = "AIRLOCK_RUNSC"

// tmpRoot holds everything the tests create; every directory on its path is
// searchable by others (mode 0711), as the sandboxes' user namespace needs.
var tmpRoot string

func TestMain(m *testing.M) {
	if os.Getenv(crashHelperEnv) != "" {
		crashHelper()
		return
	}
	dir, err := os.MkdirTemp("", "airlock-gvisor-test-")
	if err == nil {
		err = os.Chmod(dir, 0o711)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	if err := ocitest.RemoveRoot(dir); err != nil {
		fmt.Fprintln(os.Stderr, "removing test directory:", err)
	}
	os.Exit(code)
}

// --- fixtures ---

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error

	initOnce sync.Once
	initPath string
	initErr  error
)

func busyboxRootfs(t *testing.T) string {
	t.Helper()
	rootfsOnce.Do(func() { rootfsDir, rootfsErr = ocitest.BusyboxRootfs(filepath.Join(tmpRoot, "rootfs")) })
	if rootfsErr != nil {
		testenv.Missing(t, "busybox-static (/bin/busybox, statically linked)", rootfsErr)
	}
	return rootfsDir
}

func containerInit(t *testing.T) string {
	t.Helper()
	initOnce.Do(func() { initPath, initErr = ocitest.StaticInit(tmpRoot) })
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

// runsc returns the runsc to test: $AIRLOCK_RUNSC, else runsc in PATH.
func runsc(t *testing.T) string {
	t.Helper()
	p := os.Getenv(runscEnv)
	if p == "" {
		p = "runsc"
	}
	p, err := exec.LookPath(p)
	if err != nil {
		testenv.Missing(t, "runsc", fmt.Errorf("%w (set $%s, or put runsc in PATH)", err, runscEnv))
	}
	return p
}

var runtimeSeq atomic.Int64

// options returns Options for a runtime of its own: a Root and a cgroup
// parent nobody else uses.
func options(t *testing.T) gvisor.Options {
	t.Helper()
	n := runtimeSeq.Add(1)
	return gvisor.Options{
		Runsc:        runsc(t),
		Root:         filepath.Join(tmpRoot, fmt.Sprintf("rt%d", n)),
		Images:       oci.DirImage(busyboxRootfs(t)),
		Init:         containerInit(t),
		CgroupParent: fmt.Sprintf("/airlock-gvisor-test-%d-%d", os.Getpid(), n),
	}
}

// newRuntime returns a runtime and, when the test ends, checks that it left
// nothing behind — no attempt directory, mount, container state or cgroup —
// then removes its root and cgroup parent.
func newRuntime(t *testing.T, opts gvisor.Options) *gvisor.Runtime {
	t.Helper()
	rt, err := gvisor.New(opts)
	if err != nil {
		testenv.Missing(t, "the gvisor runtime's host requirements", err)
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

func open(t *testing.T, rt sandbox.Runtime, res job.Resources) sandbox.Sandbox {
	t.Helper()
	return openNet(t, rt, res, job.NetworkNone)
}

func openNet(t *testing.T, rt sandbox.Runtime, res job.Resources, policy job.Network) sandbox.Sandbox {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", os.Getpid(), sandboxSeq.Add(1))
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name, Resources: res, Network: policy})
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
	rt := newRuntime(t, options(t))
	if got := rt.Name(); got != gvisor.Name {
		t.Errorf("Name() = %q, want %q", got, gvisor.Name)
	}
	sandboxtest.Exercise(t, rt, sandboxtest.Options{Image: "busybox"})
}

// TestPlatforms runs steps on each platform this host offers: systrap (the
// default, which the rest of the tests use) and ptrace.
func TestPlatforms(t *testing.T) {
	t.Parallel()
	for _, platform := range []string{"systrap", "ptrace"} {
		t.Run(platform, func(t *testing.T) {
			t.Parallel()
			opts := options(t)
			opts.Platform = platform
			sb := open(t, newRuntime(t, opts), job.Resources{Pids: 32, Memory: 256 << 20})
			res, out := run(t, sb, `echo "$(cat /proc/version | cut -d' ' -f3) $(id -u)"; exit 3`)
			if want := (sandbox.Result{ExitCode: 3}); res != want || out != "4.19.0-gvisor 0\n" {
				t.Errorf("Result %+v, output %q; want %+v and the gVisor kernel", res, out, want)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ready := make(chan struct{})
			go func() {
				<-ready
				cancel()
			}()
			res, err := sb.Run(ctx, sandbox.Step{Run: "echo ready; sleep 1000", KillGrace: time.Second,
				Stdout: &signalWriter{line: "ready\n", ch: ready}})
			if want := (sandbox.Result{ExitCode: -1, Signal: "SIGTERM", Interrupted: true}); err != nil || res != want {
				t.Errorf("interrupted Run = %+v, %v; want %+v", res, err, want)
			}
		})
	}
}
