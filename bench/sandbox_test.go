package bench

// Sandbox benchmarks: what a step costs in each sandbox runtime, next to the
// raw runtime CLI and `docker run` on the same image; the memory an idle
// sandbox holds; and what resolving an already cached image adds to an
// attempt. See BENCHMARKS.md §4 for the method and the figures.
//
// Runtimes are rows of sandboxKinds: a name, how to make the runtime over
// the benchmark's image pipeline, and the raw CLI to compare it with.

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/sandbox"
)

var (
	sandboxRuns   = flag.Int("sandbox.runs", 30, "sandbox benchmarks: measured runs of each case per iteration (after one warm-up round)")
	sandboxIdle   = flag.Int("sandbox.idle", 10, "BenchmarkSandboxIdleMemory: idle sandboxes held at once")
	sandboxHits   = flag.Int("sandbox.hits", 200, "BenchmarkSandboxImageCacheHit: measured cache hits per iteration")
	sandboxDir    = flag.String("sandbox.dir", "", "sandbox benchmarks: the directory for the image cache, overlays and runtime state (default: the system temp dir)")
	sandboxDocker = flag.String("sandbox.docker", "auto", "sandbox benchmarks' docker rows: auto (the running dockerd, else one started and stopped here), own (always start one), off")
)

// sandboxKind is one runtime under benchmark.
type sandboxKind struct {
	name string
	// new returns the runtime over env's images; it skips b when the runtime
	// cannot run here, and removes what the runtime left when b ends.
	new func(b *testing.B, env *sandboxEnv) sandbox.Runtime
	// raw is the runtime's own CLI, run on a bundle over the same image.
	raw *rawRuntime
}

// sandboxKinds are the runtimes benchmarked, fresh for each benchmark.
func sandboxKinds() []sandboxKind {
	return []sandboxKind{
		{
			name: "oci-crun",
			new:  func(b *testing.B, env *sandboxEnv) sandbox.Runtime { return newOCIRuntime(b, env, "crun") },
			raw:  &rawRuntime{binary: "crun", hideCgroup2: true},
		},
		{
			name: "oci-runc",
			new:  func(b *testing.B, env *sandboxEnv) sandbox.Runtime { return newOCIRuntime(b, env, "runc") },
			raw:  &rawRuntime{binary: "runc"},
		},
		{
			name: "gvisor",
			new:  newGVisorRuntime,
			raw: &rawRuntime{binary: runscBinary(), global: []string{"--network=none", "--platform=systrap",
				"--host-uds=none", "--host-fifo=open", "--oci-seccomp", "--overlay2=none"}},
		},
	}
}

// BenchmarkSandboxStep times, interleaved round by round so that drift hits
// every case alike:
//
//   - step: Sandbox.Run of `true` in an open sandbox (a new container each);
//   - raw: `<runtime> run` of a bundle running `/bin/sh -c true` over the same
//     image, with the same namespaces, user namespace, capabilities and
//     seccomp profile, but no init, workspace or cgroup limits;
//   - out, raw-out: the same with `echo x`, from the call to the first byte of
//     the step's stdout;
//   - attempt: a whole one-step attempt, Open + image pull (a cache hit) +
//     Run(true) + Close + releasing the image;
//
// and, as the docker row, `docker run --rm --network none` of the same image.
// Metrics: p50 and p95 of each, and overhead = step − raw (p50).
func BenchmarkSandboxStep(b *testing.B) {
	for _, k := range sandboxKinds() {
		b.Run(k.name, func(b *testing.B) { benchSandboxStep(b, k) })
	}
	b.Run("docker", benchDockerStep)
}

func benchSandboxStep(b *testing.B, k sandboxKind) {
	ctx := context.Background()
	env := newSandboxEnv(b)
	rt := k.new(b, env)
	sb, closeSb, err := env.openAttempt(ctx, rt, "bench-step")
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := closeSb(); err != nil {
			b.Error(err)
		}
	}()
	rawImg, err := env.images.Image(ctx, "bench-raw", env.ref)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := env.images.Release("bench-raw"); err != nil {
			b.Error(err)
		}
	})
	k.raw.start(b, env.dir) // after the mount: see rawRuntime.start
	bundleTrue := rawBundle(b, filepath.Join(env.dir, "bundle-true"), rawImg.RootFS, []string{"/bin/sh", "-c", "true"})
	bundleEcho := rawBundle(b, filepath.Join(env.dir, "bundle-echo"), rawImg.RootFS, []string{"/bin/sh", "-c", "echo x"})
	attempts := 0

	cases := []timedCase{
		{"step", func() (time.Duration, error) {
			start := time.Now()
			res, err := sb.Run(ctx, sandbox.Step{Image: env.ref, Run: "true"})
			return time.Since(start), stepErr(res, err)
		}},
		{"raw", func() (time.Duration, error) {
			cmd, _ := k.raw.command(ctx, bundleTrue)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := k.raw.startCmd(cmd)
			if err == nil {
				err = cmd.Wait()
			}
			d := time.Since(start)
			if err != nil {
				return 0, fmt.Errorf("%w: %s", err, out.String())
			}
			return d, nil
		}},
		{"out", func() (time.Duration, error) {
			var fb firstByte
			start := time.Now()
			res, err := sb.Run(ctx, sandbox.Step{Image: env.ref, Run: "echo x", Stdout: &fb, Stderr: &fb})
			if err := stepErr(res, err); err != nil {
				return 0, err
			}
			return fb.since(start)
		}},
		{"raw-out", func() (time.Duration, error) {
			cmd, _ := k.raw.command(ctx, bundleEcho)
			first, _, err := runTimedOutput(cmd, k.raw.startCmd)
			return first, err
		}},
		{"attempt", func() (time.Duration, error) {
			attempts++
			start := time.Now()
			asb, closeA, err := env.openAttempt(ctx, rt, "bench-attempt-"+strconv.Itoa(attempts))
			if err != nil {
				return 0, err
			}
			res, err := asb.Run(ctx, sandbox.Step{Image: env.ref, Run: "true"})
			err = errors.Join(stepErr(res, err), closeA())
			return time.Since(start), err
		}},
	}
	samples := runInterleaved(b, cases, *sandboxRuns*b.N)
	for _, c := range cases {
		reportP50P95(b, c.name, samples[c.name])
	}
	b.ReportMetric(ms(median(samples["step"])-median(samples["raw"])), "overhead-p50-ms")
	b.ReportMetric(ms(median(samples["out"])-median(samples["raw-out"])), "overhead-out-p50-ms")
}

func benchDockerStep(b *testing.B) {
	env := newSandboxEnv(b)
	d := startDocker(b, env, *sandboxDocker)
	if d == nil {
		b.Skip("no docker")
	}
	ctx := context.Background()
	run := func(args ...string) *exec.Cmd {
		return d.command(ctx, append([]string{"run", "--rm", "--network", "none", "--pull", "never", d.image}, args...)...)
	}
	cases := []timedCase{
		{"run", func() (time.Duration, error) {
			cmd := run("true")
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				return 0, fmt.Errorf("%w: %s", err, out)
			}
			return time.Since(start), nil
		}},
		{"out", func() (time.Duration, error) {
			first, _, err := runTimedOutput(run("echo", "x"), (*exec.Cmd).Start)
			return first, err
		}},
	}
	samples := runInterleaved(b, cases, *sandboxRuns*b.N)
	for _, c := range cases {
		reportP50P95(b, c.name, samples[c.name])
	}
}

// BenchmarkSandboxIdleMemory holds -sandbox.idle sandboxes whose step is
// `sleep`, at once, per runtime, next to as many raw runtime containers and
// (the docker row) `docker run -d` containers, and reports per sandbox:
//
//   - pss-MB: the proportional set size of every process the sandbox added on
//     the host (the runtime CLI waiting in the foreground, the init, the
//     step's processes; for docker the containerd shim and the container's
//     processes; not dockerd or containerd themselves);
//   - cgroup-MB: the memory usage of the containers' memory cgroups (their
//     processes' pages plus kernel memory charged to them, e.g. page tables);
//   - host-MB: how much MemAvailable fell (noisy: anything else on the host
//     moves it too);
//   - fit-pss, fit-host: MemAvailable before, divided by pss-MB or host-MB —
//     an extrapolation of how many idle sandboxes fit, not a measurement.
func BenchmarkSandboxIdleMemory(b *testing.B) {
	for _, k := range sandboxKinds() {
		b.Run(k.name, func(b *testing.B) {
			env := newSandboxEnv(b)
			rt := k.new(b, env)
			benchIdleOurs(b, env, rt)
		})
		b.Run(k.name+"-raw", func(b *testing.B) {
			benchIdleRaw(b, newSandboxEnv(b), k.raw)
		})
	}
	b.Run("docker", func(b *testing.B) {
		env := newSandboxEnv(b)
		d := startDocker(b, env, *sandboxDocker)
		if d == nil {
			b.Skip("no docker")
		}
		benchIdleDocker(b, d)
	})
}

const idleScript = "echo ready; exec sleep 3600"

func benchIdleOurs(b *testing.B, env *sandboxEnv, rt sandbox.Runtime) {
	// One attempt first, so that what every sandbox shares (the image's
	// page cache, the runtime's binaries) is already loaded.
	sb, closeSb, err := env.openAttempt(context.Background(), rt, "bench-idle-warm")
	if err != nil {
		b.Fatal(err)
	}
	res, err := sb.Run(context.Background(), sandbox.Step{Image: env.ref, Run: "true"})
	if err := errors.Join(stepErr(res, err), closeSb()); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		idleRound(b, env, rt, *sandboxIdle)
	}
}

// idleRound opens n sandboxes whose step idles, measures them, and closes
// them.
func idleRound(b *testing.B, env *sandboxEnv, rt sandbox.Runtime, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := memAvailable(b)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var closers []func() error
	defer func() {
		cancel() // the steps end as interrupted
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Error(err)
		}
		for _, c := range closers {
			if err := c(); err != nil {
				b.Error(err)
			}
		}
	}()
	for i := range n {
		sb, closeSb, err := env.openAttempt(ctx, rt, fmt.Sprintf("bench-idle-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		closers = append(closers, closeSb)
		ready := newReadySignal()
		wg.Go(func() {
			res, err := sb.Run(ctx, sandbox.Step{Image: env.ref, Run: idleScript, Stdout: ready, Stderr: ready})
			if err != nil || !res.Interrupted {
				errs <- fmt.Errorf("idle step: %+v, %v", res, err)
			}
		})
		select {
		case <-ready.c:
		case err := <-errs:
			b.Fatal(err)
		case <-time.After(time.Minute):
			b.Fatal("an idle step printed nothing within a minute")
		}
	}
	reportIdle(b, n, before, descendants(os.Getpid()))
}

func benchIdleRaw(b *testing.B, env *sandboxEnv, raw *rawRuntime) {
	ctx := context.Background()
	n := *sandboxIdle
	img, err := env.images.Image(ctx, "bench-raw", env.ref)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := env.images.Release("bench-raw"); err != nil {
			b.Error(err)
		}
	})
	raw.start(b, env.dir) // after the mount: see rawRuntime.start
	bundle := rawBundle(b, filepath.Join(env.dir, "bundle-idle"), img.RootFS, []string{"/bin/sh", "-c", idleScript})
	warm, _ := raw.command(ctx, rawBundle(b, filepath.Join(env.dir, "bundle-true"), img.RootFS, []string{"/bin/true"}))
	if err := raw.startCmd(warm); err != nil {
		b.Fatal(err)
	}
	if err := warm.Wait(); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		before := memAvailable(b)
		type held struct {
			cmd *exec.Cmd
			id  string
		}
		var all []held
		stop := func() {
			for _, h := range all {
				for _, args := range [][]string{{"kill", h.id, "KILL"}, {"delete", "--force", h.id}} {
					if cmd := raw.cli(ctx, args...); raw.startCmd(cmd) == nil {
						_ = cmd.Wait()
					}
					if args[0] == "kill" {
						_ = h.cmd.Wait()
					}
				}
			}
		}
		for range n {
			cmd, id := raw.command(ctx, bundle)
			pr, pw, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			cmd.Stdout, cmd.Stderr = pw, pw
			if err := raw.startCmd(cmd); err != nil {
				stop()
				b.Fatal(err)
			}
			pw.Close()
			all = append(all, held{cmd, id})
			line, err := bufio.NewReader(pr).ReadString('\n')
			pr.Close() // the container's next write would fail; it writes no more
			if line != "ready\n" {
				stop()
				b.Fatalf("raw container said %q, %v", line, err)
			}
		}
		reportIdle(b, n, before, descendants(os.Getpid()))
		stop()
	}
}

func benchIdleDocker(b *testing.B, d *dockerEngine) {
	n := *sandboxIdle
	ctx := context.Background()
	if out, err := d.command(ctx, "run", "--rm", "--network", "none", "--pull", "never", d.image, "true").CombinedOutput(); err != nil {
		b.Fatalf("docker run: %v: %s", err, out)
	}
	for range b.N {
		before := memAvailable(b)
		var ids []string
		stop := func() {
			if len(ids) > 0 {
				if out, err := d.command(ctx, append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
					b.Errorf("docker rm: %v: %s", err, out)
				}
			}
		}
		for range n {
			out, err := d.command(ctx, "run", "-d", "--rm", "--network", "none", "--pull", "never", d.image, "sleep", "3600").Output()
			if err != nil {
				stop()
				b.Fatalf("docker run -d: %v", err)
			}
			ids = append(ids, strings.TrimSpace(string(out)))
		}
		// docker run -d returns once the container runs: its processes are
		// the shims and whatever sits in a cgroup named for a container.
		var pids []int
		for _, p := range allPids() {
			if matchesAny(p, ids) {
				pids = append(pids, p)
			}
		}
		reportIdle(b, n, before, pids)
		stop()
	}
}

// reportIdle reports the memory of n idle sandboxes made of pids.
func reportIdle(b *testing.B, n int, availBefore int64, pids []int) {
	b.Helper()
	pss, cg := pssKB(pids), cgroupUsage(pids)
	host := availBefore - memAvailable(b)
	// /proc counts in KiB; MB here is 10^6 bytes.
	perPSS := float64(pss) * 1024 / 1e6 / float64(n)
	perHost := float64(host) * 1024 / 1e6 / float64(n)
	b.ReportMetric(perPSS, "pss-MB")
	b.ReportMetric(float64(cg)/1e6/float64(n), "cgroup-MB")
	b.ReportMetric(perHost, "host-MB")
	b.ReportMetric(float64(len(pids))/float64(n), "procs")
	avail := float64(availBefore) * 1024 / 1e6
	if perPSS > 0 {
		b.ReportMetric(avail/perPSS, "fit-pss")
	}
	if perHost > 0 {
		b.ReportMetric(avail/perHost, "fit-host")
	}
}

// BenchmarkSandboxImageCacheHit times what an attempt's image costs when the
// image is already cached, on the executor's path (rootfs.Provider over
// image.Cache):
//
//   - get-digest: image.Cache.Get of repo@sha256:… (no registry request) and
//     Release;
//   - get-tag: the same by tag, which asks the (loopback) registry for the
//     tag's digest (Options.TagTTL is zero, as by default);
//   - pull: Provider.Pull of the tag for a new attempt, as the executor does
//     before the first step;
//   - mount: the runtime's ImageFunc, Provider.Image, for that attempt: the
//     attempt's overlay over the cached layers;
//   - hit: pull + mount, what a cache hit adds to an attempt (target ≤ 5 ms);
//   - release: Provider.Release of the attempt: unmount, end the lease.
func BenchmarkSandboxImageCacheHit(b *testing.B) {
	env := newSandboxEnv(b)
	ctx := context.Background()
	repo, ok := strings.CutSuffix(env.ref, ":1")
	if !ok {
		b.Fatalf("unexpected reference %q", env.ref)
	}
	byDigest := repo + "@" + env.digest
	get := func(ref string) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			start := time.Now()
			img, err := env.cache.Get(ctx, ref, nil)
			if err != nil {
				return 0, err
			}
			img.Release()
			return time.Since(start), nil
		}
	}
	n := 0
	var pull, mount, hit, release []time.Duration
	attempt := func() (time.Duration, error) {
		n++
		name := "bench-hit-" + strconv.Itoa(n)
		t0 := time.Now()
		if _, err := env.images.Pull(ctx, name, env.ref, ""); err != nil {
			return 0, err
		}
		t1 := time.Now()
		if _, err := env.imageFunc()(ctx, name, env.ref); err != nil {
			return 0, errors.Join(err, env.images.Release(name))
		}
		t2 := time.Now()
		err := env.images.Release(name)
		t3 := time.Now()
		pull, mount, hit, release = append(pull, t1.Sub(t0)), append(mount, t2.Sub(t1)), append(hit, t2.Sub(t0)), append(release, t3.Sub(t2))
		return t3.Sub(t0), err
	}
	cases := []timedCase{{"get-digest", get(byDigest)}, {"get-tag", get(env.ref)}, {"attempt", attempt}}
	samples := runInterleaved(b, cases, *sandboxHits*b.N)
	reportP50P95(b, "get-digest", samples["get-digest"])
	reportP50P95(b, "get-tag", samples["get-tag"])
	// The first round is the warm-up; drop its figures.
	reportP50P95(b, "pull", pull[1:])
	reportP50P95(b, "mount", mount[1:])
	reportP50P95(b, "hit", hit[1:])
	reportP50P95(b, "release", release[1:])
}

// timedCase is one thing to time; f returns the duration it measured.
type timedCase struct {
	name string
	f    func() (time.Duration, error)
}

// runInterleaved runs one unmeasured warm-up round, then rounds rounds of
// every case in turn, and returns each case's samples.
func runInterleaved(b *testing.B, cases []timedCase, rounds int) map[string][]time.Duration {
	b.Helper()
	samples := make(map[string][]time.Duration, len(cases))
	for round := range rounds + 1 {
		for _, c := range cases {
			d, err := c.f()
			if err != nil {
				b.Fatalf("%s (round %d): %v", c.name, round, err)
			}
			if round > 0 {
				samples[c.name] = append(samples[c.name], d)
			}
		}
	}
	return samples
}

func stepErr(res sandbox.Result, err error) error {
	if err == nil && !res.Success() {
		err = fmt.Errorf("step result %+v", res)
	}
	return err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(samples []time.Duration) time.Duration {
	s := slices.Clone(samples)
	slices.Sort(s)
	return percentile(s, 50)
}

// reportP50P95 reports the median and 95th percentile of samples in ms.
func reportP50P95(b *testing.B, prefix string, samples []time.Duration) {
	b.Helper()
	s := slices.Clone(samples)
	slices.Sort(s)
	b.ReportMetric(ms(percentile(s, 50)), prefix+"-p50-ms")
	b.ReportMetric(ms(percentile(s, 95)), prefix+"-p95-ms")
}

// readySignal closes c at the first byte written to it.
type readySignal struct {
	once sync.Once
	c    chan struct{}
}

func newReadySignal() *readySignal { return &readySignal{c: make(chan struct{})} }

func (r *readySignal) Write(p []byte) (int, error) {
	if len(p) > 0 {
		r.once.Do(func() { close(r.c) })
	}
	return len(p), nil
}

// --- reading the host's memory figures ---

// memAvailable returns /proc/meminfo's MemAvailable in KiB.
func memAvailable(b *testing.B) int64 {
	b.Helper()
	v, err := procField("/proc/meminfo", "MemAvailable:")
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// procField returns the number after field in a /proc file of "Name: N
// kB" lines.
func procField(path, field string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}

// allPids lists the processes of the host.
func allPids() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ppid returns pid's parent, or -1.
func ppid(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// PID (COMM) STATE PPID ...; COMM may hold spaces and parentheses.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return -1
	}
	p, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return p
}

// descendants returns every process below pid, not pid itself.
func descendants(pid int) []int {
	children := make(map[int][]int)
	for _, p := range allPids() {
		children[ppid(p)] = append(children[ppid(p)], p)
	}
	var out []int
	queue := slices.Clone(children[pid])
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

// matchesAny reports whether pid's command line or cgroup names one of ids
// (docker container IDs).
func matchesAny(pid int, ids []string) bool {
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, id := range ids {
		if id != "" && (strings.Contains(string(cmdline), id) || strings.Contains(string(cg), id)) {
			return true
		}
	}
	return false
}

// pssKB sums the Pss of pids, in KiB; processes gone meanwhile count 0.
func pssKB(pids []int) int64 {
	var total int64
	for _, p := range pids {
		v, err := procField(fmt.Sprintf("/proc/%d/smaps_rollup", p), "Pss:")
		if err == nil {
			total += v
		}
	}
	return total
}

// cgroupUsage sums, in bytes, the memory usage of the distinct memory
// cgroups pids are in, leaving out this process's own.
func cgroupUsage(pids []int) int64 {
	own := memoryCgroup(os.Getpid())
	seen := map[string]bool{own: true}
	var total int64
	for _, p := range pids {
		cg := memoryCgroup(p)
		if cg == "" || seen[cg] {
			continue
		}
		seen[cg] = true
		for _, f := range []string{"memory.usage_in_bytes", "memory.current"} {
			data, err := os.ReadFile(filepath.Join(cg, f))
			if err != nil {
				continue
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
			if err == nil {
				total += v
				break
			}
		}
	}
	return total
}

// memoryCgroup returns the directory of pid's memory cgroup: the v1 memory
// hierarchy's when there is one, else the unified one's.
func memoryCgroup(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	var v2 string
	for line := range strings.SplitSeq(strings.TrimSpace(string(data)), "\n") {
		// ID:CONTROLLERS:PATH
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), "memory") {
			return filepath.Join("/sys/fs/cgroup/memory", parts[2])
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
		}
	}
	if v2 == "" {
		return ""
	}
	_, v2mounts, _ := cgroupHierarchies()
	if len(v2mounts) == 0 {
		return ""
	}
	return filepath.Join(v2mounts[0], v2)
}
