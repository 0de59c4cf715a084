package oci_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// crashHelperEnv, when set, makes the test binary an executor that opens a
// sandbox, starts a step and waits to be killed. Its value is a crashConfig.
const crashHelperEnv = "AIRLOCK_OCI_CRASH_HELPER"

// crashConfig configures the crash helper: its runtime, and the image its
// step runs in, Image in the cache directory Images (ocitest.ImageCache).
type crashConfig struct {
	Root, Binary, Init, CgroupParent, Images, Image, Name string
}

func crashHelper() {
	var c crashConfig
	if err := json.Unmarshal([]byte(os.Getenv(crashHelperEnv)), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	images, _, err := ocitest.OpenImages(c.Images)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rt, err := oci.New(oci.Options{Root: c.Root, Binary: c.Binary, Init: c.Init, CgroupParent: c.CgroupParent, Images: images.ImageFunc()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: c.Name, Resources: job.Resources{Pids: 100, Disk: 8 << 20}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// As the executor does: pull the image for the attempt, then run.
	if _, err := images.Pull(context.Background(), c.Name, c.Image, ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	_, err = sb.Run(context.Background(), sandbox.Step{Image: c.Image, Run: "sleep 1000 & echo ready; wait", Stdout: os.Stdout})
	fmt.Fprintln(os.Stderr, "the step ended before the helper was killed:", err)
	os.Exit(2)
}

// cgroupProcs returns the PIDs in cgroup dir and its descendants.
func cgroupProcs(dir string) []string {
	var pids []string
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			pids = append(pids, strings.Fields(string(b))...)
		}
		return nil
	})
	return pids
}

func TestRemoveLeftoversAfterExecutorCrash(t *testing.T) {
	t.Parallel()
	for _, binary := range []string{"runc", "crun"} {
		t.Run(binary, func(t *testing.T) {
			t.Parallel()
			opts := options(t, binary)
			const stale = "crashed-1"
			cache := ocitest.NewImageCache(t, tmpRoot)
			cfg, err := json.Marshal(crashConfig{
				Root: opts.Root, Binary: binary, Init: opts.Init, CgroupParent: opts.CgroupParent,
				Images: cache.Dir, Image: cache.Root, Name: stale,
			})
			if err != nil {
				t.Fatal(err)
			}
			// The crashing executor: it starts a step, says so, and is SIGKILLed.
			helper := exec.Command(os.Args[0], "-test.run=^$")
			helper.Env = append(os.Environ(), crashHelperEnv+"="+string(cfg))
			helper.Stderr = os.Stderr
			stdout, err := helper.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := helper.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(stdout).ReadString('\n')
			helper.Process.Kill()
			helper.Wait()
			if line != "ready\n" {
				t.Fatalf("the helper said %q, %v; want ready", line, err)
			}
			cg := filepath.Join("/sys/fs/cgroup/pids", opts.CgroupParent, stale)
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
				cg = filepath.Join("/sys/fs/cgroup", opts.CgroupParent, stale)
			}
			// The runtime died with the executor; the container lives on.
			deadline := time.Now().Add(5 * time.Second)
			for len(cgroupProcs(cg)) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if len(cgroupProcs(cg)) == 0 {
				t.Fatalf("no process left in %s after the crash: nothing for the janitor to do", cg)
			}

			// Its step's overlay stays mounted too.
			if mps, _ := hostfs.MountsUnder(filepath.Join(opts.Root, stale, "images")); len(mps) == 0 {
				t.Fatalf("no image overlay mounted for the crashed attempt: nothing for the janitor to do")
			}

			// The restarted executor.
			rt := newRuntime(t, opts)
			open := open(t, rt, job.Resources{})
			kept := filepath.Join(rt.Root(), "kept-1")
			if err := os.Mkdir(kept, 0o700); err != nil {
				t.Fatal(err)
			}
			err = rt.RemoveLeftovers(context.Background(), func(name string) bool { return name == "kept-1" })
			if err != nil {
				t.Fatalf("RemoveLeftovers: %v", err)
			}
			if _, err := os.Stat(kept); err != nil {
				t.Errorf("a kept attempt was removed: %v", err)
			}
			if err := os.Remove(kept); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(rt.Root(), stale)); !os.IsNotExist(err) {
				t.Errorf("the crashed attempt's directory: %v, want it gone", err)
			}
			if pids := cgroupProcs(cg); len(pids) > 0 {
				t.Errorf("processes of the crashed attempt are alive: %v", pids)
			}
			if res, out := run(t, open, "echo still here"); !res.Success() || out != "still here\n" {
				t.Errorf("an open sandbox after RemoveLeftovers: Result %+v, output %q", res, out)
			}
			// The leftovers check of newRuntime covers mounts and cgroups.
			cache.CheckUnchanged(t)
		})
	}
}

func TestCloseAfterInterruptedStepLeavesNothing(t *testing.T) {
	t.Parallel()
	opts := options(t, "runc")
	rt := newRuntime(t, opts)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "interrupted-1", Resources: job.Resources{Memory: 64 << 20, Disk: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := sb.Run(ctx, sandbox.Step{Run: "trap '' TERM; sleep 1000 & setsid sleep 1000 & wait", KillGrace: 100 * time.Millisecond})
	if err != nil || !res.Interrupted {
		t.Fatalf("Run = %+v, %v; want Interrupted", res, err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// newRuntime's cleanup checks directories, mounts and cgroups; the loop
	// device of the disk goes with its mount.
	out, err := exec.Command("losetup", "-a").Output()
	if err == nil && strings.Contains(string(out), rt.Root()) {
		t.Errorf("a loop device still refers to the sandbox: %s", out)
	}
}

func TestRunRefusesDirOutsideWorkspace(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t, "runc"))
	sb := open(t, rt, job.Resources{})
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(sb.WorkDir(), "link")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"..", "../x", "a/../../x", "/", outside, "link", "link/new"} {
		if res, err := sb.Run(context.Background(), sandbox.Step{Run: "touch ran", Dir: dir}); err == nil {
			t.Errorf("Run with Dir %q = %+v, want an error", dir, res)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("a refused Dir created %v outside the workspace", entries)
	}
}

func TestRunAfterCloseFails(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t, "runc"))
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "closed-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if _, err := sb.Run(context.Background(), sandbox.Step{Run: "true"}); err == nil {
		t.Errorf("Run after Close succeeded, want an error")
	}
}

func TestOpenRefusesBadAndBusyNames(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t, options(t, "runc"))
	for _, name := range []string{"", ".hidden", "-x", "a/b", "a..b", strings.Repeat("x", 129)} {
		if _, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name}); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", name)
		}
	}
	open(t, rt, job.Resources{})
	busy := "busy-1"
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: busy})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close(context.Background())
	if _, err := rt.Open(context.Background(), sandbox.OpenParams{Name: busy}); err == nil {
		t.Errorf("a second Open(%q) succeeded, want an error", busy)
	}
}

func TestNewRefusesADynamicInit(t *testing.T) {
	t.Parallel()
	opts := options(t, "runc")
	dynamic, err := exec.LookPath("ls")
	if err == nil {
		var static bool
		if static, err = oci.IsStatic(dynamic); err == nil && static {
			err = fmt.Errorf("%s is statically linked", dynamic)
		}
	}
	if err != nil {
		testenv.Missing(t, "a dynamically linked ls", err)
	}
	opts.Init = dynamic
	if _, err := oci.New(opts); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("New with init %s: %v, want an error saying it is dynamically linked", dynamic, err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	opts := options(t, "runc")
	items := oci.Check(opts)
	var names []string
	for _, it := range items {
		names = append(names, it.Name)
		if !it.OK {
			t.Errorf("%s: not OK on this host: %s", it.Name, it.Detail)
		}
	}
	want := []string{"OCI runtime", "container init", "cgroups", "user namespace", "workspace disk limit"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("Check items = %q, want %q", names, want)
	}
	opts.Binary = "/nonexistent/runc"
	var found bool
	for _, it := range oci.Check(opts) {
		if it.Name == "OCI runtime" {
			found = true
			if it.OK || !strings.Contains(it.Detail, "/nonexistent/runc") {
				t.Errorf("Check with a missing binary: %+v, want not OK and naming it", it)
			}
		}
	}
	if !found {
		t.Errorf("Check has no OCI runtime item")
	}
}
