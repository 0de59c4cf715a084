package checkout

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// syncBuffer collects log output from concurrent checkouts.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// setup opens a cache in a temporary directory; its logs go to the buffer.
func setup(t testing.TB, opts Options) (*Cache, *syncBuffer) {
	t.Helper()
	requireGit(t)
	logs := &syncBuffer{}
	if opts.Root == "" {
		opts.Root = t.TempDir()
	}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, logs
}

func checkout(t testing.TB, c *Cache, p Params) Result {
	t.Helper()
	if p.Dir == "" {
		p.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := c.Checkout(ctx, p)
	if err != nil {
		t.Fatalf("Checkout(%s): %v", p.Commit, err)
	}
	return res
}

var small = genOpts{Commits: 12, Files: 8, FileSize: 512, TagEvery: 4}

// smallRepo is a served repository of small: commits 0, 4, 8 are tagged.
func smallRepo(t *testing.T, token string) (*server, string, []string) {
	s := newServer(t, token)
	u, commits := s.repo(t, "acme/api.git", small)
	return s, u, commits
}

func TestCheckoutShapes(t *testing.T) {
	t.Parallel()
	_, u, commits := smallRepo(t, "")
	c, _ := setup(t, Options{})
	for _, tc := range []struct {
		name     string
		commit   int
		full     bool
		tags     bool
		sparse   []string
		count    int      // commits reachable from HEAD
		tagNames []string // tags in the workspace
		files    []string // tracked files checked out, sorted
	}{
		{name: "shallow", commit: 5, count: 1, files: allFiles(8)},
		{name: "full", commit: 5, full: true, count: 6, files: allFiles(8)},
		{name: "shallow tags", commit: 8, tags: true, count: 1, tagNames: []string{"l8", "v8"}, files: allFiles(8)},
		{name: "full tags", commit: 5, full: true, tags: true, count: 6, tagNames: []string{"l0", "l4", "v0", "v4"}, files: allFiles(8)},
		{name: "full sparse", commit: 3, full: true, sparse: []string{"dir1/sub1", "dir2"}, count: 4,
			files: []string{"dir1/sub1/f1.bin", "dir1/sub1/f5.bin", "dir2/sub0/f2.bin", "dir2/sub0/f6.bin", "top.txt"}},
		{name: "sparse", commit: 3, sparse: []string{"dir1/sub1", "dir2"}, count: 1,
			files: []string{"dir1/sub1/f1.bin", "dir1/sub1/f5.bin", "dir2/sub0/f2.bin", "dir2/sub0/f6.bin", "top.txt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "job.json"), []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
			want := commits[tc.commit]
			checkout(t, c, Params{Dir: dir, URL: u, Commit: want, Full: tc.full, Tags: tc.tags, Sparse: tc.sparse})

			if got := gitOut(t, dir, "rev-parse", "HEAD"); got != want {
				t.Errorf("HEAD = %s, want %s", got, want)
			}
			if _, err := gitErr(dir, "symbolic-ref", "-q", "HEAD"); err == nil {
				t.Errorf("HEAD is a branch, want detached")
			}
			if got := gitOut(t, dir, "rev-list", "--count", "HEAD"); got != strconv.Itoa(tc.count) {
				t.Errorf("commits in history = %s, want %d", got, tc.count)
			}
			wantShallow := strconv.FormatBool(!tc.full)
			if got := gitOut(t, dir, "rev-parse", "--is-shallow-repository"); got != wantShallow {
				t.Errorf("is shallow = %s, want %s", got, wantShallow)
			}
			gotTags := strings.Fields(gitOut(t, dir, "tag", "--list"))
			if diff := cmp.Diff(tc.tagNames, gotTags, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.files, filesIn(t, dir)); diff != "" {
				t.Errorf("files in the workspace (-want +got):\n%s", diff)
			}
			if got := gitOut(t, dir, "status", "--porcelain"); got != "?? job.json" {
				t.Errorf("git status = %q, want only the job file untracked", got)
			}
			if got := gitOut(t, dir, "remote", "get-url", "origin"); got != u {
				t.Errorf("origin = %q, want %q", got, u)
			}
			// The content is the commit's.
			for _, f := range tc.files {
				got, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if want := gitOut(t, dir, "cat-file", "blob", want+":"+f); strings.TrimSpace(string(got)) != want {
					t.Errorf("%s differs from the commit's", f)
				}
			}
		})
	}
}

// allFiles lists the files of a generated repository with n files.
func allFiles(n int) []string {
	files := []string{"top.txt"}
	for f := range n {
		files = append(files, filepath.Join("dir"+strconv.Itoa(f%4), "sub"+strconv.Itoa(f%2), "f"+strconv.Itoa(f)+".bin"))
	}
	sort.Strings(files)
	return files
}

// filesIn lists the regular files under dir outside .git, but not job.json.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			return filepath.SkipDir
		}
		if rel, _ := filepath.Rel(dir, p); !d.IsDir() && rel != "job.json" {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

func TestCacheHitFetchesNothingAndSharesNothing(t *testing.T) {
	t.Parallel()
	s, u, commits := smallRepo(t, "")
	c, _ := setup(t, Options{})

	first := checkout(t, c, Params{URL: u, Commit: commits[7]})
	if !first.Fetched {
		t.Errorf("first checkout: Fetched = false, want true")
	}
	sessions := s.sessionCount("acme/api.git")
	dir := t.TempDir()
	repeat := checkout(t, c, Params{Dir: dir, URL: u, Commit: commits[7]})
	if repeat.Fetched {
		t.Errorf("repeat checkout: Fetched = true, want false")
	}
	if got := s.sessionCount("acme/api.git"); got != sessions {
		t.Errorf("the repeat checkout asked the server %d times, want 0", got-sessions)
	}
	if got, want := repeat.FetchTime+repeat.CheckoutTime, first.FetchTime+first.CheckoutTime; got >= want {
		t.Errorf("repeat checkout took %v, first %v: want the repeat faster", got, want)
	}
	t.Logf("first %v+%v, repeat %v+%v", first.FetchTime, first.CheckoutTime, repeat.FetchTime, repeat.CheckoutTime)
	if got := gitOut(t, dir, "rev-parse", "HEAD"); got != commits[7] {
		t.Errorf("HEAD = %s, want %s", got, commits[7])
	}
	if out := gitOut(t, dir, "fsck", "--no-dangling"); out != "" {
		t.Errorf("git fsck in the workspace: %s", out)
	}

	// The workspace has no way into the cache: no alternates, no file
	// shared with it, no mention of its path.
	if _, err := os.Stat(filepath.Join(dir, ".git/objects/info/alternates")); err == nil {
		t.Errorf("the workspace has alternates")
	}
	cacheFiles := map[uint64]string{}
	walkFiles(t, c.opts.Root, func(p string, st *syscall.Stat_t, _ []byte) { cacheFiles[st.Ino] = p })
	walkFiles(t, dir, func(p string, st *syscall.Stat_t, b []byte) {
		if q, ok := cacheFiles[st.Ino]; ok {
			t.Errorf("%s is the cache's %s (hard link)", p, q)
		}
		if bytes.Contains(b, []byte(c.opts.Root)) {
			t.Errorf("%s names the cache directory", p)
		}
	})
}

// walkFiles calls fn for every regular file under root with its content.
func walkFiles(t *testing.T, root string, fn func(path string, st *syscall.Stat_t, content []byte)) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fn(p, fi.Sys().(*syscall.Stat_t), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFullAfterShallowDeepensTheCache(t *testing.T) {
	t.Parallel()
	_, u, commits := smallRepo(t, "")
	c, _ := setup(t, Options{})
	checkout(t, c, Params{URL: u, Commit: commits[9]})
	checkout(t, c, Params{URL: u, Commit: commits[11]}) // a descendant, shallow too

	for _, i := range []int{11, 9} {
		dir := t.TempDir()
		res := checkout(t, c, Params{Dir: dir, URL: u, Commit: commits[i], Full: true})
		if i == 11 && !res.Fetched {
			t.Errorf("full checkout over a shallow cache: Fetched = false, want true")
		}
		if i == 9 && res.Fetched {
			t.Errorf("full checkout of an ancestor of a complete history: Fetched = true, want false")
		}
		if got := gitOut(t, dir, "rev-list", "--count", "HEAD"); got != strconv.Itoa(i+1) {
			t.Errorf("commit %d: history has %s commits, want %d", i, got, i+1)
		}
		if got := gitOut(t, dir, "rev-parse", "--is-shallow-repository"); got != "false" {
			t.Errorf("commit %d: shallow = %s, want false", i, got)
		}
		if out := gitOut(t, dir, "fsck", "--no-dangling", "--no-progress"); out != "" {
			t.Errorf("commit %d: git fsck in the workspace: %s", i, out)
		}
	}
	// And shallow again from the now complete cache.
	dir := t.TempDir()
	checkout(t, c, Params{Dir: dir, URL: u, Commit: commits[10]})
	if got := gitOut(t, dir, "rev-list", "--count", "HEAD"); got != "1" {
		t.Errorf("shallow after full: history has %s commits, want 1", got)
	}
}

// TestHostileConfigurationIsIgnored gives the executor's user a git
// configuration that would smudge LFS files, recurse into submodules and run
// a hook, and checks that none of it happens.
func TestHostileConfigurationIsIgnored(t *testing.T) {
	s := newServer(t, "")
	subURL, subCommits := s.repo(t, "sub.git", genOpts{Commits: 1, Files: 1, FileSize: 10})
	pointer := "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
	u, commits := s.repo(t, "main.git", genOpts{Commits: 1, Files: 1, FileSize: 10, Extra: map[string]string{
		".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n",
		"model.bin":      pointer,
		".gitmodules":    "[submodule \"sub\"]\n\tpath = sub\n\turl = " + subURL + "\n",
		"sub":            "gitlink:" + subCommits[0],
	}})

	hooks := t.TempDir()
	marker := filepath.Join(t.TempDir(), "hook-ran")
	if err := os.WriteFile(filepath.Join(hooks, "post-checkout"), []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	global := filepath.Join(t.TempDir(), "gitconfig")
	hostile := "[filter \"lfs\"]\n\tsmudge = sh -c 'cat >/dev/null; echo SMUDGED'\n\tprocess = false\n\trequired = true\n" +
		"[submodule]\n\trecurse = true\n[fetch]\n\trecurseSubmodules = true\n[core]\n\thooksPath = " + hooks + "\n"
	if err := os.WriteFile(global, []byte(hostile), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", global)
	t.Setenv("HOME", filepath.Dir(global))
	subSessions := s.sessionCount("sub.git")

	c, _ := setup(t, Options{})
	dir := t.TempDir()
	checkout(t, c, Params{Dir: dir, URL: u, Commit: commits[0]})

	if got, err := os.ReadFile(filepath.Join(dir, "model.bin")); err != nil || string(got) != pointer {
		t.Errorf("model.bin = %q, %v; want the LFS pointer left as is", got, err)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "sub")); err != nil || len(entries) != 0 {
		t.Errorf("submodule directory holds %d entries (%v), want an empty directory", len(entries), err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".git/modules")); err == nil {
		t.Errorf(".git/modules exists: a submodule was cloned")
	}
	if got := s.sessionCount("sub.git"); got != subSessions {
		t.Errorf("the submodule's repository was fetched %d times, want 0", got-subSessions)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a hook ran")
	}
}

func TestTokenAppearsNowhere(t *testing.T) {
	const token = "airlock-job-token-7f3c9e1d5b"
	s, u, commits := smallRepo(t, token)

	// A git that records its arguments, as the process list would show them.
	argvLog := filepath.Join(t.TempDir(), "argv")
	wrapper := filepath.Join(t.TempDir(), "git")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >>" + argvLog + "\nexec git \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c, logs := setup(t, Options{Git: wrapper})
	dir := t.TempDir()
	checkout(t, c, Params{Dir: dir, URL: u, Token: token, Commit: commits[4], Tags: true, Full: true})
	checkout(t, c, Params{URL: u, Token: token, Commit: commits[11], Tags: true}) // fetches again

	// A wrong token fails, and the error does not repeat it.
	_, err := c.Checkout(t.Context(), Params{Dir: t.TempDir(), URL: u, Token: token + "-wrong", Commit: commits[10]})
	if err == nil {
		t.Fatalf("Checkout with a wrong token succeeded")
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("the error names the token: %v", err)
	}

	if got := gitOut(t, dir, "config", "--list", "--show-origin"); strings.Contains(got, token) || strings.Contains(got, "extraheader") {
		t.Errorf("the workspace's configuration carries the token:\n%s", got)
	}
	for _, root := range []string{dir, c.opts.Root} {
		walkFiles(t, root, func(p string, _ *syscall.Stat_t, b []byte) {
			if bytes.Contains(b, []byte(token)) {
				t.Errorf("%s holds the token", p)
			}
		})
	}
	argv, err := os.ReadFile(argvLog)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(argv, []byte("fetch")) {
		t.Fatalf("the argv log saw no fetch:\n%s", argv)
	}
	if bytes.Contains(argv, []byte(token)) {
		t.Errorf("a git command line holds the token:\n%s", argv)
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the logs hold the token:\n%s", logs)
	}
	// Nothing left running carries it.
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(token)) {
			cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
			t.Errorf("process %s (%q) has the token in its environment", filepath.Dir(p), cmdline)
		}
	}
	// The server did get it: the test would prove nothing otherwise.
	s.mu.Lock()
	defer s.mu.Unlock()
	var sent bool
	for _, h := range s.headers {
		sent = sent || h.Get("Authorization") == "Bearer "+token
	}
	if !sent {
		t.Errorf("the server never saw the token")
	}
}

func TestMissingCommitFailsQuickly(t *testing.T) {
	t.Parallel()
	_, u, commits := smallRepo(t, "tok")
	c, _ := setup(t, Options{})
	checkout(t, c, Params{URL: u, Token: "tok", Commit: commits[2]})
	for _, full := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		start := time.Now()
		_, err := c.Checkout(ctx, Params{Dir: t.TempDir(), URL: u, Token: "tok", Commit: strings.Repeat("ab", 20), Full: full})
		cancel()
		if !errors.Is(err, ErrCommitNotFound) {
			t.Errorf("full=%v: Checkout of a missing commit: %v, want ErrCommitNotFound", full, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("full=%v: Checkout of a missing commit took %v", full, d)
		}
	}
	// The cache still serves what it had.
	if res := checkout(t, c, Params{URL: u, Token: "tok", Commit: commits[2]}); res.Fetched {
		t.Errorf("after a missing commit, the cache lost what it had")
	}
}

func TestEvictionOverMaxBytes(t *testing.T) {
	t.Parallel()
	s := newServer(t, "")
	opts := genOpts{Commits: 3, Files: 4, FileSize: 64 << 10}
	var urls, heads []string
	for _, name := range []string{"a.git", "b.git", "c.git"} {
		u, commits := s.repo(t, name, opts)
		urls, heads = append(urls, u), append(heads, commits[2])
	}
	now := time.Unix(1700000000, 0)
	var nowMu sync.Mutex
	c, _ := setup(t, Options{MaxBytes: 700 << 10, Now: func() time.Time {
		nowMu.Lock()
		defer nowMu.Unlock()
		now = now.Add(time.Second)
		return now
	}})
	// Each repository's history is about 4×64 KiB + 2×64 KiB = 384 KiB:
	// one fits, two do not.
	checkout(t, c, Params{URL: urls[0], Commit: heads[0], Full: true})
	checkout(t, c, Params{URL: urls[1], Commit: heads[1], Full: true})
	if got := cachedURLs(t, c); !cmp.Equal(got, urls[1:2]) {
		t.Errorf("after two checkouts the cache holds %v, want %v", got, urls[1:2])
	}
	if got := c.Size(); got > 700<<10 {
		t.Errorf("cache size %d, want at most %d", got, 700<<10)
	}
	if res := checkout(t, c, Params{URL: urls[1], Commit: heads[1], Full: true}); res.Fetched {
		t.Errorf("the repository kept was fetched again")
	}
	if res := checkout(t, c, Params{URL: urls[0], Commit: heads[0], Full: true}); !res.Fetched {
		t.Errorf("the evicted repository was not fetched again")
	}

	// A reopened cache knows what it holds.
	c.Close()
	c2, _ := setup(t, Options{Root: c.opts.Root})
	if got := c2.Size(); got == 0 {
		t.Errorf("reopened cache: Size() = 0")
	}
	if res := checkout(t, c2, Params{URL: urls[0], Commit: heads[0], Full: true}); res.Fetched {
		t.Errorf("reopened cache fetched a repository it holds")
	}
}

// cachedURLs lists the URLs of the repositories in the cache directory.
func cachedURLs(t *testing.T, c *Cache) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(c.opts.Root, "repos", "*.git", "airlock-url"))
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		urls = append(urls, strings.TrimSpace(string(b)))
	}
	sort.Strings(urls)
	return urls
}

func TestConcurrentCheckoutsOfOneRepository(t *testing.T) {
	t.Parallel()
	s, u, commits := smallRepo(t, "")
	c, _ := setup(t, Options{})
	const n = 6
	dirs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		dirs[i] = t.TempDir()
		wg.Go(func() {
			// Half ask for one commit, half for others.
			commit := commits[11]
			if i%2 == 1 {
				commit = commits[i]
			}
			_, errs[i] = c.Checkout(t.Context(), Params{Dir: dirs[i], URL: u, Commit: commit})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("checkout %d: %v", i, err)
			continue
		}
		want := commits[11]
		if i%2 == 1 {
			want = commits[i]
		}
		if got := gitOut(t, dirs[i], "rev-parse", "HEAD"); got != want {
			t.Errorf("checkout %d: HEAD = %s, want %s", i, got, want)
		}
	}
	// One fetch for the shared commit, one for each other.
	if got, want := s.sessionCount("acme/api.git"), 1+n/2; got != want {
		t.Errorf("server sessions = %d, want %d", got, want)
	}
	cache := filepath.Join(c.opts.Root, "repos")
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Fatalf("cache holds %d repositories, want 1", len(entries))
	}
	if out := gitOut(t, filepath.Join(cache, entries[0].Name()), "fsck", "--no-dangling"); out != "" {
		t.Errorf("git fsck in the cache: %s", out)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, Options{})
	const commit = "0123456789abcdef0123456789abcdef01234567"
	withGit := t.TempDir()
	if err := os.Mkdir(filepath.Join(withGit, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		p    Params
		want string
	}{
		{"ssh URL", Params{URL: "ssh://git@example.com/r.git", Commit: commit}, "only http and https"},
		{"ext transport", Params{URL: "ext::sh -c touch% /tmp/pwned", Commit: commit}, "repository URL"},
		{"file URL", Params{URL: "file:///etc", Commit: commit}, "only http and https"},
		{"credentials in URL", Params{URL: "https://user:secret@example.com/r.git", Commit: commit}, "must not carry credentials"},
		{"token with newline", Params{URL: "https://example.com/r.git", Token: "a\nX-Evil: 1", Commit: commit}, "control character"},
		{"short commit", Params{URL: "https://example.com/r.git", Commit: "0123456"}, "not a full"},
		{"ref as commit", Params{URL: "https://example.com/r.git", Commit: "refs/heads/main"}, "not a full"},
		{"upper-case commit", Params{URL: "https://example.com/r.git", Commit: strings.ToUpper(commit)}, "not a full"},
		{"sparse escaping", Params{URL: "https://example.com/r.git", Commit: commit, Sparse: []string{"../x"}}, "sparse path"},
		{"sparse absolute", Params{URL: "https://example.com/r.git", Commit: commit, Sparse: []string{"/etc"}}, "sparse path"},
		{"sparse pattern", Params{URL: "https://example.com/r.git", Commit: commit, Sparse: []string{"src/*"}}, "sparse path"},
		{"workspace with .git", Params{Dir: withGit, URL: "https://example.com/r.git", Commit: commit}, "already holds .git"},
		{"relative workspace", Params{Dir: "ws", URL: "https://example.com/r.git", Commit: commit}, "not an absolute path"},
		{"no workspace", Params{Dir: "/nonexistent/ws", URL: "https://example.com/r.git", Commit: commit}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.p.Dir == "" {
				tc.p.Dir = t.TempDir()
			}
			_, err := c.Checkout(t.Context(), tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Checkout: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(filepath.Join(c.opts.Root, "repos")); len(entries) != 0 {
		t.Errorf("refused checkouts created %d cache entries", len(entries))
	}
}

func TestOneCachePerRoot(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, Options{})
	if c2, err := New(Options{Root: c.opts.Root}); err == nil {
		c2.Close()
		t.Errorf("a second Cache opened the same root")
	}
}

func TestCancelStopsGit(t *testing.T) {
	t.Parallel()
	s := newServer(t, "")
	// A server that never answers the fetch.
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	s.mu.Lock()
	s.hold = block
	s.mu.Unlock()
	u, commits := s.repo(t, "slow.git", small)
	c, _ := setup(t, Options{})
	ctx, cancel := context.WithCancelCause(t.Context())
	errCanceled := errors.New("job canceled")
	done := make(chan error, 1)
	go func() {
		_, err := c.Checkout(ctx, Params{Dir: t.TempDir(), URL: u, Commit: commits[1]})
		done <- err
	}()
	// Wait for git to reach the server.
	deadline := time.Now().Add(20 * time.Second)
	for s.sessionCount("slow.git") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel(errCanceled)
	select {
	case err := <-done:
		if !errors.Is(err, errCanceled) {
			t.Errorf("Checkout after cancel: %v, want the cause", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Checkout did not return after cancel")
	}
}
