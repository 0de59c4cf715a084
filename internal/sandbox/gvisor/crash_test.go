package gvisor_test

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
	"github.com/airlock-run/airlock/internal/sandbox/gvisor"
	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
)

// crashHelperEnv, when set, makes the test binary an executor that opens a
// sandbox, starts a step and waits to be killed. Its value is a crashConfig.
const crashHelperEnv = "AIRLOCK_GVISOR_CRASH_HELPER"

// crashConfig configures the crash helper: its runtime, and the image its
// step runs in, Image in the cache directory Images (ocitest.ImageCache).
type crashConfig struct {
	Runsc, Root, Init, CgroupParent, Images, Image, Name string
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
	rt, err := gvisor.New(gvisor.Options{Runsc: c.Runsc, Root: c.Root, Init: c.Init, CgroupParent: c.CgroupParent, Images: images.ImageFunc()})
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

// runscProcs returns the PIDs of live processes whose command line mentions
// dir: runsc's own, and the sandbox's sentry and gofer.
func runscProcs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
			continue // a zombie waiting for init to reap it
		}
		pids = append(pids, e.Name())
	}
	return pids
}

func TestRemoveLeftoversAfterExecutorCrash(t *testing.T) {
	t.Parallel()
	opts := options(t)
	const stale = "crashed-1"
	cache := ocitest.NewImageCache(t, tmpRoot)
	cfg, err := json.Marshal(crashConfig{
		Runsc: opts.Runsc, Root: opts.Root, Init: opts.Init, CgroupParent: opts.CgroupParent,
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
	attempt := filepath.Join(opts.Root, stale)
	cg := filepath.Join("/sys/fs/cgroup/pids", opts.CgroupParent, stale)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg = filepath.Join("/sys/fs/cgroup", opts.CgroupParent, stale)
	}

	// runsc died with the executor; its container's state and cgroups stay.
	states, _ := filepath.Glob(filepath.Join(attempt, "state", "*.state"))
	if len(states) == 0 {
		t.Fatalf("no runsc state in %s after the crash: nothing for the janitor to do", attempt)
	}
	if _, err := os.Stat(cg); err != nil {
		t.Fatalf("the crashed attempt's cgroup: %v", err)
	}

	if mps, _ := hostfs.MountsUnder(filepath.Join(attempt, "images")); len(mps) == 0 {
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
	if _, err := os.Stat(attempt); !os.IsNotExist(err) {
		t.Errorf("the crashed attempt's directory: %v, want it gone", err)
	}
	if pids := cgroupProcs(cg); len(pids) > 0 {
		t.Errorf("processes of the crashed attempt are in its cgroup: %v", pids)
	}
	// runsc's sentry and gofer name the bundle on their command lines; the
	// kernel may take a moment to finish them off after the kill.
	deadline := time.Now().Add(5 * time.Second)
	for len(runscProcs(t, attempt)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if pids := runscProcs(t, attempt); len(pids) > 0 {
		t.Errorf("runsc processes of the crashed attempt are alive: %v", pids)
	}
	if res, out := run(t, open, "echo still here"); !res.Success() || out != "still here\n" {
		t.Errorf("an open sandbox after RemoveLeftovers: Result %+v, output %q", res, out)
	}
	// The leftovers check of newRuntime covers mounts and cgroups.
	cache.CheckUnchanged(t)
}

func TestCloseAfterInterruptedStepLeavesNothing(t *testing.T) {
	t.Parallel()
	opts := options(t)
	rt := newRuntime(t, opts)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "interrupted-1", Resources: job.Resources{Memory: 128 << 20, Pids: 50, Disk: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res, err := sb.Run(ctx, sandbox.Step{Run: "trap '' TERM; sleep 1000 & setsid sleep 1000 & wait", KillGrace: 100 * time.Millisecond})
	if err != nil || !res.Interrupted {
		t.Fatalf("Run = %+v, %v; want Interrupted", res, err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if pids := runscProcs(t, filepath.Join(rt.Root(), "interrupted-1")); len(pids) > 0 {
		t.Errorf("runsc processes are alive after Close: %v", pids)
	}
	out, err := exec.Command("losetup", "-a").Output()
	if err == nil && strings.Contains(string(out), rt.Root()) {
		t.Errorf("a loop device still refers to the sandbox: %s", out)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	opts := options(t)
	var names []string
	for _, it := range gvisor.Check(opts) {
		names = append(names, it.Name)
		if !it.OK {
			t.Errorf("%s: not OK on this host: %s", it.Name, it.Detail)
		}
	}
	want := []string{"runsc", "gVisor platform", "container init", "cgroups", "user namespace", "workspace disk limit"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("Check items = %q, want %q", names, want)
	}
	tests := []struct {
		name   string
		change func(*gvisor.Options)
		item   string
		detail string
	}{
		{"missing runsc", func(o *gvisor.Options) { o.Runsc = "/nonexistent/runsc" }, "runsc", "/nonexistent/runsc"},
		{"not runsc", func(o *gvisor.Options) { o.Runsc = "/bin/true" }, "runsc", "not runsc"},
		{"unknown platform", func(o *gvisor.Options) { o.Platform = "hypervisor" }, "gVisor platform", "hypervisor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts
			tt.change(&o)
			var found bool
			for _, it := range gvisor.Check(o) {
				if it.Name == tt.item {
					found = true
					if it.OK || !strings.Contains(it.Detail, tt.detail) {
						t.Errorf("%s: %+v, want not OK and naming %q", tt.item, it, tt.detail)
					}
				}
			}
			if !found {
				t.Errorf("Check has no %s item", tt.item)
			}
			if _, err := gvisor.New(o); err == nil {
				t.Errorf("New succeeded, want an error")
			}
		})
	}
}
