package bench

// Repository checkout through the coordinator (issue 4): how long until a
// job's workspace holds its repository at the job's commit, the first time
// (the coordinator's mirror and the executor's cache both empty) and again
// (the executor's cache warm), next to a plain git clone from the same
// mirror.
//
// The pieces are the real ones, in this process: a coordinator over SQLite
// with a gitmirror.Mirrors, serving its API and its git endpoint on a
// loopback listener; an upstream, the generated repository of
// checkout_repo_test.go served by git http-backend on another loopback
// listener and registered through the repositories API; and the executor's
// side, a checkout.Cache given the Params the executor builds from a claim
// (internal/executor/run.go: the attempt's git URL, the job token, the cache
// key "coordinator URL#name"). A checkout row is timed from just before the
// submit to the workspace being ready: submit, claim, checkout, as an idle
// executor sees it. Each row is a new job, and so a new attempt and token.
//
// One iteration, for shallow history (the default) and for full history,
// each on a fresh coordinator:
//
//	first          empty mirror, empty executor cache. The submit starts the
//	               mirror's fetch of the whole history (prefetch); the
//	               executor's first git request waits for it. mirror-fetch
//	               is that fetch alone, as gitmirror logs it.
//	repeat         the same cache, a fresh workspace.
//	new-executor   another, empty, executor cache; the mirror is warm. What
//	               every executor but the first pays.
//	clone-mirror   git clone file://<the mirror> (--depth 1 for shallow).
//	clone-endpoint git clone of the attempt's git URL with the job token.
//
// Every workspace and clone is checked afterwards (HEAD at the tip; one
// commit, or all of them), outside the timing.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/checkout"
	"github.com/airlock-run/airlock/internal/coordinator"
	"github.com/airlock-run/airlock/internal/gitmirror"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
	"github.com/airlock-run/airlock/internal/testenv"
)

var (
	checkoutCommits  = flag.Int("checkout.commits", 20000, "BenchmarkCheckoutThroughCoordinator: commits in the generated repository")
	checkoutFiles    = flag.Int("checkout.files", 1000, "BenchmarkCheckoutThroughCoordinator: files at the tip; every commit after the first rewrites one")
	checkoutFileSize = flag.Int("checkout.filesize", 5200, "BenchmarkCheckoutThroughCoordinator: bytes of incompressible content per file version")
	checkoutCache    = flag.String("checkout.cache", "/var/cache/airlock-bench", "BenchmarkCheckoutThroughCoordinator: directory keeping generated repositories between runs (\"\": a temporary one)")
	checkoutDir      = flag.String("checkout.dir", "", "BenchmarkCheckoutThroughCoordinator: directory for the mirrors, executor caches and workspaces (default: the system temp dir)")
)

// checkoutRepoName is the name the upstream is registered under.
const checkoutRepoName = "bench-repo"

// checkoutRows are the timed rows, in the order they run and are reported.
var checkoutRows = []string{"first", "mirror-fetch", "new-executor", "repeat", "clone-mirror", "clone-endpoint"}

// BenchmarkCheckoutThroughCoordinator checks a generated repository of
// -checkout.commits commits out through an in-process coordinator's git
// endpoint, first and repeat, shallow and full, next to plain git clones of
// its mirror; see the top of this file.
//
//	go test -run '^$' -bench CheckoutThroughCoordinator -benchtime 1x -timeout 30m ./bench/
func BenchmarkCheckoutThroughCoordinator(b *testing.B) {
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(b, "git", err)
	}
	shape := repoShape{Commits: *checkoutCommits, Files: *checkoutFiles, FileSize: *checkoutFileSize}
	t0 := time.Now()
	repo := cachedRepo(b, *checkoutCache, shape)
	ready := time.Since(t0)
	upstream := serveRepos(b, repo.root) + "/" + repo.name
	for _, full := range []bool{false, true} {
		name := "shallow"
		if full {
			name = "full"
		}
		b.Run(name, func(b *testing.B) {
			// (A benchmark with sub-benchmarks prints its own log only when
			// it fails: the sub-benchmarks log.)
			b.Logf("repository %s: %d commits, %d files at the tip, %.1f MB on disk (ready in %s)",
				filepath.Join(repo.root, repo.name), repo.commits, shape.Files, float64(repo.bytes)/1e6, ready.Round(time.Millisecond))
			b.Logf("load average before: %s", loadAverage())
			scratch := scratchDir(b, *checkoutDir)
			samples := make(map[string][]time.Duration)
			for b.Loop() {
				checkoutScenario(b, scratch, upstream, repo, full, samples)
			}
			s := func(name string) float64 { return median(samples[name]).Seconds() }
			for _, row := range checkoutRows {
				b.ReportMetric(s(row), row+"-s")
			}
			b.ReportMetric(s("first-cpu"), "first-cpu-s")
			b.ReportMetric(s("repeat-cpu"), "repeat-cpu-s")
			b.ReportMetric(s("first")/s("repeat"), "speedup-x")
			b.ReportMetric(s("new-executor")/s("repeat"), "speedup-warm-mirror-x")
			b.ReportMetric(float64(repo.bytes)/1e6, "repo-MB")
			b.Logf("load average after: %s", loadAverage())
		})
	}
}

// checkoutScenario runs one iteration (the rows at the top of this file) in
// a directory under scratch, removed at the end, and appends its times to
// samples.
func checkoutScenario(b *testing.B, scratch, upstream string, repo genRepo, full bool, samples map[string][]time.Duration) {
	ctx := context.Background()
	dir, err := os.MkdirTemp(scratch, "run-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	g := startGitCoordinator(b, filepath.Join(dir, "coordinator"))
	defer g.stop(b)
	if _, err := g.client.PutRepository(ctx, job.Remote{Name: checkoutRepoName, URL: upstream}); err != nil {
		b.Fatal(err)
	}
	wantCommits := 1
	if full {
		wantCommits = repo.commits
	}
	// workspace returns a new empty directory, removing the one before.
	var last string
	workspace := func() string {
		if last != "" {
			os.RemoveAll(last)
		}
		d, err := os.MkdirTemp(dir, "ws-")
		if err != nil {
			b.Fatal(err)
		}
		last = d
		return d
	}

	// first: empty mirror, empty cache.
	cache := openCheckoutCache(b, filepath.Join(dir, "cache-1"))
	defer cache.Close()
	ws := workspace()
	cpu0, t0 := cpuWithChildren(b), time.Now()
	c := g.attempt(ctx, b, repo.tip, full)
	res := g.checkout(ctx, b, cache, c, ws)
	samples["first"] = append(samples["first"], time.Since(t0))
	samples["first-cpu"] = append(samples["first-cpu"], cpuWithChildren(b)-cpu0)
	g.finish(ctx, b, c)
	if !res.Fetched {
		b.Fatal("the first checkout did not fetch")
	}
	samples["mirror-fetch"] = append(samples["mirror-fetch"], g.awaitFetch(b))
	b.Logf("first: executor fetch %s (waiting for the mirror included), workspace %s",
		res.FetchTime.Round(time.Millisecond), res.CheckoutTime.Round(time.Millisecond))
	checkWorkspace(b, ws, repo.tip, wantCommits)

	// repeat: the same cache, a fresh workspace.
	ws = workspace()
	cpu0, t0 = cpuWithChildren(b), time.Now()
	c = g.attempt(ctx, b, repo.tip, full)
	res = g.checkout(ctx, b, cache, c, ws)
	samples["repeat"] = append(samples["repeat"], time.Since(t0))
	samples["repeat-cpu"] = append(samples["repeat-cpu"], cpuWithChildren(b)-cpu0)
	g.finish(ctx, b, c)
	if res.Fetched {
		b.Fatal("the repeat checkout fetched")
	}
	checkWorkspace(b, ws, repo.tip, wantCommits)

	// new-executor: an empty cache, the mirror warm.
	other := openCheckoutCache(b, filepath.Join(dir, "cache-2"))
	defer other.Close()
	ws = workspace()
	t0 = time.Now()
	c = g.attempt(ctx, b, repo.tip, full)
	res = g.checkout(ctx, b, other, c, ws)
	samples["new-executor"] = append(samples["new-executor"], time.Since(t0))
	g.finish(ctx, b, c)
	if !res.Fetched {
		b.Fatal("a new executor's first checkout did not fetch")
	}
	checkWorkspace(b, ws, repo.tip, wantCommits)

	// clone-mirror: git clone of the mirror's directory, through git's
	// file transport (a plain path would hard-link the objects instead).
	ws = workspace()
	clone := filepath.Join(ws, "clone")
	samples["clone-mirror"] = append(samples["clone-mirror"], gitClone(b, "file://"+g.mirrorDir, clone, full, nil))
	checkWorkspace(b, clone, repo.tip, wantCommits)

	// clone-endpoint: git clone of the attempt's git URL, job token in an
	// extra header passed through the environment as the checkout does.
	ws = workspace()
	clone = filepath.Join(ws, "clone")
	c = g.attempt(ctx, b, repo.tip, full)
	auth := []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Bearer " + c.Token}
	samples["clone-endpoint"] = append(samples["clone-endpoint"], gitClone(b, g.gitURL(c), clone, full, auth))
	g.finish(ctx, b, c)
	checkWorkspace(b, clone, repo.tip, wantCommits)

	// The mirror fetched once, for the first job.
	select {
	case f := <-g.fetches:
		b.Errorf("the mirror fetched again (%s, error %q): the rows after the first include it", f.d, f.err)
	default:
	}
}

// scratchDir returns a new directory in parent ("": the system temp dir),
// removed when b ends.
func scratchDir(b *testing.B, parent string) string {
	b.Helper()
	if parent == "" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp(parent, "airlock-checkout-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// gitCoordinator is a coordinator with repository mirrors serving its API
// and git endpoint on a loopback listener, in this process.
type gitCoordinator struct {
	url       string
	client    *api.Client // client token
	exec      *api.Client // executor token
	mirrorDir string      // the mirror of checkoutRepoName
	fetches   chan mirrorFetch
	stop      func(b *testing.B)
}

// startGitCoordinator starts a coordinator keeping its database and mirrors
// in dir. Its lease is long, so that an attempt outlives a slow checkout
// without the heartbeats the benchmark does not send.
func startGitCoordinator(b *testing.B, dir string) *gitCoordinator {
	b.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	store, err := sqlite.Open(ctx, filepath.Join(dir, "queue.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	fetches := make(chan mirrorFetch, 64)
	mirrorRoot := filepath.Join(dir, "mirrors")
	mirrors, err := gitmirror.New(gitmirror.Options{Root: mirrorRoot, Logger: slog.New(fetchLog{fetches})})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := coordinator.New(coordinator.Config{
		Store:          store,
		ClientTokens:   []string{clientToken},
		ExecutorTokens: []string{executorToken},
		Mirrors:        mirrors,
		Lease:          30 * time.Minute,
		Logger:         discardLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, "", "") }()
	url := "http://" + ln.Addr().String()
	return &gitCoordinator{
		url:       url,
		client:    api.NewClient(url, clientToken),
		exec:      api.NewClient(url, executorToken),
		mirrorDir: filepath.Join(mirrorRoot, checkoutRepoName+".git"),
		fetches:   fetches,
		stop: func(b *testing.B) {
			cancel()
			if err := <-served; err != nil {
				b.Errorf("serving: %v", err)
			}
			stopCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
			defer stop()
			if err := srv.Stop(stopCtx); err != nil {
				b.Errorf("stopping coordinator: %v", err)
			}
			if err := store.Close(); err != nil {
				b.Errorf("closing store: %v", err)
			}
		},
	}
}

// attempt submits a job naming the repository at commit and claims it, as
// an idle executor would.
func (g *gitCoordinator) attempt(ctx context.Context, b *testing.B, commit string, full bool) *api.ClaimResponse {
	b.Helper()
	spec := noopSpec()
	spec.Repository = &job.Repository{Name: checkoutRepoName, Commit: commit}
	if full {
		shallow := false
		spec.Repository.Shallow = &shallow
	}
	j, err := g.client.Submit(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	c, err := g.exec.Claim(ctx, api.ClaimRequest{
		Executor: queue.ExecutorInfo{Name: "bench-checkout", MaxJobs: 1},
		Queues:   []string{benchQueue},
		WaitMS:   10_000,
	})
	switch {
	case err != nil:
		b.Fatal(err)
	case c == nil:
		b.Fatalf("job %d was not claimed within 10s", j.ID)
	case c.Job.ID != j.ID:
		b.Fatalf("claimed job %d, want the job just submitted, %d", c.Job.ID, j.ID)
	}
	return c
}

// gitURL is the attempt's fetch URL of its repository, as the executor
// builds it.
func (g *gitCoordinator) gitURL(c *api.ClaimResponse) string {
	return fmt.Sprintf("%s%s/attempts/%d/%d/git/%s.git", g.url, api.Prefix, c.Job.ID, c.Attempt, c.Job.Spec.Repository.Name)
}

// checkout puts the claimed job's repository into dir through cache, with
// the Params the executor uses.
func (g *gitCoordinator) checkout(ctx context.Context, b *testing.B, cache *checkout.Cache, c *api.ClaimResponse, dir string) checkout.Result {
	b.Helper()
	repo := *c.Job.Spec.Repository
	p := checkout.ParamsFor(dir, g.gitURL(c), c.Token, repo)
	p.CacheKey = g.url + "#" + repo.Name
	res, err := cache.Checkout(ctx, p)
	if err != nil {
		b.Fatal(err)
	}
	return res
}

func (g *gitCoordinator) finish(ctx context.Context, b *testing.B, c *api.ClaimResponse) {
	b.Helper()
	if _, err := g.exec.Finish(ctx, c.Token, refOf(c), succeeded); err != nil {
		b.Fatal(err)
	}
}

// awaitFetch returns the duration of the mirror's next fetch.
func (g *gitCoordinator) awaitFetch(b *testing.B) time.Duration {
	b.Helper()
	select {
	case f := <-g.fetches:
		if f.err != "" {
			b.Fatalf("the mirror's fetch failed after %s: %s", f.d, f.err)
		}
		return f.d
	case <-time.After(time.Minute):
		b.Fatal(`gitmirror logged no "git fetch" within a minute of the first checkout`)
		return 0
	}
}

// mirrorFetch is one fetch of a mirror from its upstream.
type mirrorFetch struct {
	d   time.Duration
	err string // "" when it succeeded
}

// fetchLog is the mirrors' slog.Handler: it passes the fetches gitmirror
// reports (its "git fetch" and "git fetch failed" records, with
// duration_ms) to a channel and drops every other record. The log line is
// the one signal of the prefetch's end that the coordinator gives.
type fetchLog struct{ fetches chan<- mirrorFetch }

func (h fetchLog) Enabled(context.Context, slog.Level) bool { return true }
func (h fetchLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h fetchLog) WithGroup(string) slog.Handler            { return h }

func (h fetchLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "git fetch" && r.Message != "git fetch failed" {
		return nil
	}
	f := mirrorFetch{}
	if r.Message != "git fetch" {
		f.err = "(no error attribute)"
	}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "duration_ms":
			f.d = time.Duration(a.Value.Int64()) * time.Millisecond
		case "error":
			f.err = a.Value.String()
		}
		return true
	})
	select {
	case h.fetches <- f:
	default: // 64 fetches in one scenario: the check for extra fetches reports it
	}
	return nil
}

// openCheckoutCache opens an executor's checkout cache at root until b ends.
func openCheckoutCache(b *testing.B, root string) *checkout.Cache {
	b.Helper()
	c, err := checkout.New(checkout.Options{Root: root, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// gitClone runs git clone of src into dst, depth 1 unless full, with env
// added to benchGitEnv, and returns how long it took.
func gitClone(b *testing.B, src, dst string, full bool, env []string) time.Duration {
	b.Helper()
	args := []string{"clone", "--quiet"}
	if !full {
		args = append(args, "--depth=1")
	}
	t0 := time.Now()
	if _, err := benchGit("", env, append(args, "--", src, dst)...); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// checkWorkspace checks that the repository in dir has HEAD at tip and
// wantCommits commits behind it.
func checkWorkspace(b *testing.B, dir, tip string, wantCommits int) {
	b.Helper()
	head, err := benchGit(dir, nil, "rev-parse", "HEAD")
	if err != nil {
		b.Fatal(err)
	}
	if head != tip {
		b.Fatalf("%s: HEAD at %s, want %s", dir, head, tip)
	}
	out, err := benchGit(dir, nil, "rev-list", "--count", "HEAD")
	if err != nil {
		b.Fatal(err)
	}
	if got, _ := strconv.Atoi(out); got != wantCommits {
		b.Fatalf("%s: %s commits behind HEAD, want %d", dir, out, wantCommits)
	}
}

// cpuWithChildren is the CPU time (user and system) this process and its
// ended children (here the git processes: the mirror's, http-backend's,
// upload-pack's and the checkout's) have used so far.
func cpuWithChildren(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return cpuTime(b) + time.Duration(ru.Utime.Nano()+ru.Stime.Nano())
}

// loadAverage is the 1-, 5- and 15-minute load average, for the log.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

// TestGeneratedRepository checks the generator the checkout benchmark's
// figures rest on: the shape asked for, the same content for the same shape
// (the cache is keyed by shape alone), and a second call reusing the cached
// repository.
func TestGeneratedRepository(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "git", err)
	}
	shape := repoShape{Commits: 7, Files: 3, FileSize: 100}
	cache := t.TempDir()
	r := cachedRepo(t, cache, shape)
	if r.commits != shape.Commits {
		t.Errorf("commits = %d, want %d", r.commits, shape.Commits)
	}
	tree, err := benchGit(filepath.Join(cache, r.name), nil, "ls-tree", "-r", "--format=%(path) %(objectsize)", r.tip)
	if err != nil {
		t.Fatal(err)
	}
	want := "README 63\nd0/f0.bin 100\nd1/f1.bin 100\nd2/f2.bin 100"
	if tree != want {
		t.Errorf("tip tree:\n%s\nwant:\n%s", tree, want)
	}

	dir := filepath.Join(cache, r.name)
	before, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	again := cachedRepo(t, cache, shape)
	after, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.tip != r.tip || !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("a second call regenerated the repository (tip %s, was %s)", again.tip, r.tip)
	}
	if elsewhere := cachedRepo(t, t.TempDir(), shape); elsewhere.tip != r.tip {
		t.Errorf("the same shape generated tip %s, then %s: the cache key does not name the content", r.tip, elsewhere.tip)
	}
	if other := cachedRepo(t, cache, repoShape{Commits: 7, Files: 3, FileSize: 101}); other.tip == r.tip || other.name == r.name {
		t.Errorf("another shape got the same repository %s at %s", other.name, other.tip)
	}
}
