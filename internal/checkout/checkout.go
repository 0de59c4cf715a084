package checkout

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"golang.org/x/sync/semaphore"
)

// ErrCommitNotFound reports that the remote does not have the commit a
// checkout asked for.
var ErrCommitNotFound = errors.New("commit not found in repository")

// Options configure a Cache.
type Options struct {
	// Root is the cache directory; it is created (mode 0700) if missing.
	// One Cache at a time may use it. It must not be visible to sandboxes.
	Root string
	// MaxBytes bounds the disk space of cached repositories; zero means no
	// bound. When over, the least recently used repositories no checkout
	// is using are removed, but never the one just used, so a single
	// repository larger than MaxBytes stays cached until another is used.
	MaxBytes int64
	// Git is the git program; empty means "git" found in PATH.
	Git string
	// CAFile is a PEM file of the CA that signed the coordinator's
	// certificate, for a coordinator with a private CA; "" uses the
	// system's roots.
	CAFile string
	Logger *slog.Logger
	Now    func() time.Time
}

// Params describe one checkout.
type Params struct {
	// Dir is the workspace directory. It must exist and must not hold a
	// .git entry; other files in it are kept. A file at a path the commit
	// tracks makes the checkout fail, so write job files after Checkout
	// when they may replace repository files.
	Dir string
	// URL is the http(s) fetch URL: the coordinator's git endpoint for a
	// named repository, or a public repository. It must carry no
	// credentials; it becomes the workspace's origin as given.
	URL string
	// Token, if set, is sent as "Authorization: Bearer Token" to URL (and
	// only to URL: redirects are not followed).
	Token string
	// Commit is the full object name (40 or 64 hex digits) of the commit.
	Commit string
	// Full fetches the commit's whole history; the default is depth 1.
	Full bool
	// Tags adds the tags that point into the fetched history.
	Tags bool
	// Sparse, if not empty, checks out only these directories (cone mode)
	// and the files at the top level.
	Sparse []string
	// Proxy, if set, is the URL (credentials included) of the HTTP proxy
	// every fetch from URL goes through — the executor's egress proxy for
	// public repositories — and ProxySecret the part of it that error
	// messages must not show.
	Proxy, ProxySecret string
	// CacheKey names the repository in the cache; "" is the URL. The
	// coordinator's endpoint has a URL per attempt, so the executor keys
	// its repositories by coordinator and repository name instead.
	CacheKey string
}

// ParamsFor returns the Params of a job's repository, to be fetched from
// fetchURL (the coordinator's endpoint for repo.Name, or repo.URL) with token.
func ParamsFor(dir, fetchURL, token string, repo job.Repository) Params {
	return Params{
		Dir:    dir,
		URL:    fetchURL,
		Token:  token,
		Commit: repo.Commit,
		Full:   repo.Shallow != nil && !*repo.Shallow,
		Tags:   repo.FetchTags,
		Sparse: repo.Sparse,
	}
}

// Result tells how a checkout went.
type Result struct {
	// Fetched is whether the remote was asked for objects; false means
	// the cache answered alone.
	Fetched bool
	// FetchTime is the time spent fetching into the cache (including
	// waiting for another checkout of the same repository), and
	// CheckoutTime the time spent materialising the workspace.
	FetchTime    time.Duration
	CheckoutTime time.Duration
}

// Cache checks repositories out into workspaces through a cache of bare
// repositories, one per fetch URL. Its methods are safe for concurrent use.
type Cache struct {
	opts    Options
	gitPath string
	home    string
	log     *slog.Logger
	now     func() time.Time
	lock    *os.File

	mu    sync.Mutex
	repos map[string]*repo // by key
}

// repo is one cached bare repository.
type repo struct {
	key string
	dir string
	// sem orders access: a fetch into the repository (or its removal)
	// holds all of it, a checkout from it one unit.
	sem     *semaphore.Weighted
	users   int // checkouts holding or waiting for sem; never evicted while > 0
	size    int64
	lastUse time.Time
}

const semAll = 1 << 20

// New opens the cache at opts.Root.
func New(opts Options) (*Cache, error) {
	if opts.CAFile != "" {
		abs, err := filepath.Abs(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("checkout: CA file: %w", err)
		}
		opts.CAFile = abs
	}
	if opts.Root == "" {
		return nil, errors.New("checkout cache: no root directory")
	}
	c := &Cache{opts: opts, log: opts.Logger, now: opts.Now, repos: make(map[string]*repo)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.gitPath = opts.Git
	if c.gitPath == "" {
		c.gitPath = "git"
	}
	p, err := exec.LookPath(c.gitPath)
	if err != nil {
		return nil, fmt.Errorf("finding git: %w", err)
	}
	c.gitPath = p
	for _, d := range []string{opts.Root, c.path("repos"), c.path("tmp"), c.path("home")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating checkout cache: %w", err)
		}
	}
	c.home = c.path("home")
	f, err := os.OpenFile(c.path("lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening checkout cache lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking checkout cache %s (is another executor using it?): %w", opts.Root, err)
	}
	c.lock = f
	if err := c.load(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close releases the cache directory. Checkouts must have returned.
func (c *Cache) Close() error {
	if c.lock == nil {
		return nil
	}
	err := c.lock.Close()
	c.lock = nil
	return err
}

func (c *Cache) path(elem ...string) string {
	return filepath.Join(append([]string{c.opts.Root}, elem...)...)
}

// load reads the repositories already in the cache and clears leftovers.
func (c *Cache) load() error {
	tmp, err := os.ReadDir(c.path("tmp"))
	if err != nil {
		return fmt.Errorf("reading checkout cache: %w", err)
	}
	for _, e := range tmp {
		if err := os.RemoveAll(c.path("tmp", e.Name())); err != nil {
			return fmt.Errorf("clearing checkout cache: %w", err)
		}
	}
	entries, err := os.ReadDir(c.path("repos"))
	if err != nil {
		return fmt.Errorf("reading checkout cache: %w", err)
	}
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), ".git")
		if !ok || !e.IsDir() {
			continue
		}
		r := &repo{key: key, dir: c.path("repos", e.Name()), sem: semaphore.NewWeighted(semAll)}
		fi, err := os.Stat(filepath.Join(r.dir, "airlock-used"))
		if err != nil {
			// Never finished its first fetch.
			c.remove(r)
			continue
		}
		r.lastUse = fi.ModTime()
		if r.size, err = dirSize(r.dir); err != nil {
			return fmt.Errorf("sizing cached repository %s: %w", key, err)
		}
		c.repos[key] = r
	}
	return nil
}

// Checkout puts the repository p.URL names into p.Dir at p.Commit, fetching
// into the cache first what it lacks. Cancelling ctx stops the git
// processes and returns ctx's cause; p.Dir may then hold a partial checkout.
// A commit the remote lacks returns an error wrapping ErrCommitNotFound.
func (c *Cache) Checkout(ctx context.Context, p Params) (Result, error) {
	var res Result
	u, key, err := p.validate()
	if err != nil {
		return res, err
	}
	if _, err := os.Lstat(filepath.Join(p.Dir, ".git")); err == nil {
		return res, fmt.Errorf("checking out into %s: the workspace already holds .git", p.Dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("checking out into %s: %w", p.Dir, err)
	}
	if fi, err := os.Stat(p.Dir); err != nil {
		return res, fmt.Errorf("checking out into %s: %w", p.Dir, err)
	} else if !fi.IsDir() {
		return res, fmt.Errorf("checking out into %s: not a directory", p.Dir)
	}
	log := c.log.With("repository", u, "commit", p.Commit, "cache_key", key)

	r := c.acquire(key)
	defer c.release(r)

	start := c.now()
	if err := r.sem.Acquire(ctx, semAll); err != nil {
		return res, fmt.Errorf("waiting for repository cache: %w", context.Cause(ctx))
	}
	res.Fetched, err = c.update(ctx, r, u, p)
	res.FetchTime = c.now().Sub(start)
	if err != nil {
		if _, serr := os.Stat(filepath.Join(r.dir, "airlock-used")); serr != nil {
			// A first fetch that failed leaves nothing worth keeping.
			os.RemoveAll(r.dir)
		}
		r.sem.Release(semAll)
		return res, err
	}
	// Let other checkouts of this repository proceed while this one
	// copies from it; a fetch waits until they are done.
	r.sem.Release(semAll - 1)
	start = c.now()
	err = c.materialise(ctx, r, u, p)
	res.CheckoutTime = c.now().Sub(start)
	r.sem.Release(1)
	if err != nil {
		return res, err
	}
	log.Info("checked out repository", "fetched", res.Fetched,
		"fetch_ms", res.FetchTime.Milliseconds(), "checkout_ms", res.CheckoutTime.Milliseconds())
	c.evict(r)
	return res, nil
}

// validate checks p and returns the URL to use and the cache key.
func (p Params) validate() (string, string, error) {
	if !filepath.IsAbs(p.Dir) {
		return "", "", fmt.Errorf("workspace directory %q: not an absolute path", p.Dir)
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		return "", "", fmt.Errorf("repository URL: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", "", fmt.Errorf("repository URL %q: only http and https are allowed", u.Redacted())
	}
	if u.User != nil {
		return "", "", fmt.Errorf("repository URL %q: must not carry credentials (pass a token)", u.Redacted())
	}
	if u.Host == "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", fmt.Errorf("repository URL %q: not a repository URL", p.URL)
	}
	if strings.ContainsAny(p.Token, "\r\n\x00") {
		return "", "", errors.New("repository token: contains a control character")
	}
	if !job.ValidCommit(p.Commit) {
		return "", "", fmt.Errorf("commit %q: not a full lowercase hex object name", p.Commit)
	}
	for _, s := range p.Sparse {
		if s == "" || strings.HasPrefix(s, "/") || strings.ContainsAny(s, "\n\x00*?[\\") ||
			path.Clean(s) != strings.TrimSuffix(s, "/") || s == "." || s == ".." || strings.HasPrefix(s, "../") {
			return "", "", fmt.Errorf("sparse path %q: not a relative directory path", s)
		}
	}
	// The key ignores what does not change the repository served.
	norm := *u
	norm.Scheme = strings.ToLower(u.Scheme)
	norm.Host = strings.ToLower(u.Host)
	norm.Path = strings.TrimSuffix(u.Path, "/")
	norm.RawPath = ""
	key := norm.String()
	if p.CacheKey != "" {
		key = "key:" + p.CacheKey
	}
	sum := sha256.Sum256([]byte(key))
	return u.String(), hex.EncodeToString(sum[:16]), nil
}

func (c *Cache) acquire(key string) *repo {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.repos[key]
	if !ok {
		r = &repo{key: key, dir: c.path("repos", key+".git"), sem: semaphore.NewWeighted(semAll)}
		c.repos[key] = r
	}
	r.users++
	return r
}

func (c *Cache) release(r *repo) {
	c.mu.Lock()
	r.users--
	c.mu.Unlock()
}

// update fetches into r what p needs and the cache lacks. The caller holds
// all of r.sem.
func (c *Cache) update(ctx context.Context, r *repo, u string, p Params) (bool, error) {
	if _, err := os.Stat(filepath.Join(r.dir, "airlock-used")); err != nil {
		// New, or a first fetch that never finished: start afresh.
		if err := os.RemoveAll(r.dir); err != nil {
			return false, fmt.Errorf("clearing cached repository: %w", err)
		}
		if _, err := c.git(ctx, gitCmd{dir: c.path("repos"), args: []string{"init", "--quiet", "--bare", "--template=", r.dir}}); err != nil {
			return false, fmt.Errorf("creating cached repository: %w", err)
		}
		if err := os.WriteFile(filepath.Join(r.dir, "airlock-url"), []byte(u+"\n"), 0o600); err != nil {
			return false, fmt.Errorf("creating cached repository: %w", err)
		}
	}
	have, err := c.hasCommit(ctx, r.dir, p.Commit)
	if err != nil {
		return false, err
	}
	shallow, err := readShallow(r.dir)
	if err != nil {
		return false, err
	}
	complete := have
	if have && p.Full && len(shallow) > 0 {
		if complete, err = c.historyComplete(ctx, r.dir, p.Commit, shallow); err != nil {
			return false, err
		}
	}
	if complete && !p.Tags {
		return false, c.touch(r)
	}

	args := []string{"fetch", "--quiet", "--no-write-fetch-head", "--no-auto-gc", "--no-recurse-submodules"}
	switch {
	case !p.Tags:
		args = append(args, "--no-tags")
	}
	switch {
	case p.Full && len(shallow) > 0 && !complete:
		args = append(args, "--depth=2147483647") // deepen to the root
	case !p.Full && !have:
		args = append(args, "--depth=1")
	}
	// The commit is kept under a ref so that it survives any repack and
	// is a ref tip the workspace's fetch may ask for.
	args = append(args, "--", u, "+"+p.Commit+":refs/airlock/commits/"+p.Commit)
	cfg := [][2]string{{"protocol.https.allow", "always"}, {"protocol.http.allow", "always"}, {"http.followRedirects", "initial"}}
	if p.Token != "" {
		cfg = append(cfg,
			[2]string{"http.extraHeader", "Authorization: Bearer " + p.Token},
			[2]string{"http.followRedirects", "false"})
	}
	if _, err := c.git(ctx, gitCmd{dir: r.dir, args: args, config: cfg, secrets: []string{p.Token, p.ProxySecret}, proxy: p.Proxy}); err != nil {
		if notFound(stderrOf(err)) {
			return true, fmt.Errorf("fetching %s from %s: %w", p.Commit, u, ErrCommitNotFound)
		}
		return true, fmt.Errorf("fetching %s from %s: %w", p.Commit, u, err)
	}
	typ, err := c.git(ctx, gitCmd{dir: r.dir, args: []string{"cat-file", "-t", p.Commit}})
	if err != nil {
		return true, fmt.Errorf("reading fetched commit: %w", err)
	}
	if t := strings.TrimSpace(string(typ)); t != "commit" {
		return true, fmt.Errorf("fetching %s from %s: the object is a %s, not a commit", p.Commit, u, t)
	}
	if p.Full {
		shallow, err := readShallow(r.dir)
		if err != nil {
			return true, err
		}
		if ok, err := c.historyComplete(ctx, r.dir, p.Commit, shallow); err != nil {
			return true, err
		} else if !ok {
			return true, fmt.Errorf("fetching %s from %s: the remote sent an incomplete history", p.Commit, u)
		}
	}
	// Packs accumulate, one per fetch; consolidate them when git thinks
	// it worthwhile (in the foreground, without the token).
	if _, err := c.git(ctx, gitCmd{dir: r.dir, args: []string{"gc", "--auto", "--quiet"},
		config: [][2]string{{"gc.auto", "6700"}}}); err != nil {
		c.log.Warn("compacting cached repository", "cache_key", r.key, "error", err)
	}
	if err := c.touch(r); err != nil {
		return true, err
	}
	size, err := dirSize(r.dir)
	if err != nil {
		return true, fmt.Errorf("sizing cached repository: %w", err)
	}
	c.mu.Lock()
	r.size = size
	c.mu.Unlock()
	return true, nil
}

// notFound reports whether git's message says the remote lacks the object.
func notFound(stderr string) bool {
	for _, s := range []string{"not our ref", "couldn't find remote ref", "no such remote ref", "unadvertised object"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

func (c *Cache) hasCommit(ctx context.Context, dir, commit string) (bool, error) {
	out, err := c.git(ctx, gitCmd{dir: dir, args: []string{"cat-file", "--batch-check=%(objecttype)"},
		stdin: strings.NewReader(commit + "\n")})
	if err != nil {
		return false, fmt.Errorf("reading cached repository: %w", err)
	}
	return strings.TrimSpace(string(out)) == "commit", nil
}

// readShallow returns the shallow boundary commits of a repository.
func readShallow(dir string) (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "shallow"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading cached repository: %w", err)
	}
	m := make(map[string]bool)
	for _, l := range strings.Fields(string(b)) {
		m[l] = true
	}
	return m, nil
}

// historyComplete reports whether no shallow boundary is reachable from
// commit, so that its whole history is in the repository.
func (c *Cache) historyComplete(ctx context.Context, dir, commit string, shallow map[string]bool) (bool, error) {
	if len(shallow) == 0 {
		return true, nil
	}
	out, err := c.git(ctx, gitCmd{dir: dir, args: []string{"rev-list", commit, "--"}})
	if err != nil {
		return false, fmt.Errorf("reading cached repository: %w", err)
	}
	for _, l := range strings.Fields(string(out)) {
		if shallow[l] {
			return false, nil
		}
	}
	return true, nil
}

func (c *Cache) touch(r *repo) error {
	now := c.now()
	f := filepath.Join(r.dir, "airlock-used")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		return fmt.Errorf("marking cached repository used: %w", err)
	}
	if err := os.Chtimes(f, now, now); err != nil {
		return fmt.Errorf("marking cached repository used: %w", err)
	}
	c.mu.Lock()
	r.lastUse = now
	c.mu.Unlock()
	return nil
}

// materialise makes p.Dir a repository of its own holding p.Commit from
// the cache: the objects are copied by a fetch over git's file transport
// (no alternates, no hard links), so the workspace shares nothing with the
// cache (a full checkout copies the cache's object files instead; see
// materialiseFull). The caller holds one unit of r.sem.
func (c *Cache) materialise(ctx context.Context, r *repo, u string, p Params) error {
	wrap := func(err error) error { return fmt.Errorf("checking out %s into %s: %w", p.Commit, p.Dir, err) }
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"init", "--quiet", "--template="}}); err != nil {
		return wrap(err)
	}
	if len(p.Sparse) > 0 {
		if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"sparse-checkout", "set", "--cone", "--stdin"},
			stdin: strings.NewReader(strings.Join(p.Sparse, "\n") + "\n")}); err != nil {
			return wrap(err)
		}
	}
	if p.Full {
		return c.materialiseFull(ctx, r, u, p)
	}
	args := []string{"fetch", "--quiet", "--no-write-fetch-head", "--no-auto-gc", "--no-recurse-submodules", "--depth=1"}
	if !p.Tags {
		args = append(args, "--no-tags")
	}
	// Tags are followed only by a fetch that stores a ref; the ref goes
	// once HEAD holds the commit.
	const tmpRef = "refs/airlock/checkout"
	args = append(args, "--", r.dir, "+"+p.Commit+":"+tmpRef)
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: args, config: [][2]string{{"protocol.file.allow", "always"}}}); err != nil {
		return wrap(err)
	}
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"checkout", "--quiet", "--detach", p.Commit, "--"}}); err != nil {
		return wrap(err)
	}
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"update-ref", "-d", tmpRef}}); err != nil {
		return wrap(err)
	}
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"remote", "add", "origin", u}}); err != nil {
		return wrap(err)
	}
	return nil
}

// materialiseFull gives the workspace of a full checkout a copy of the
// cache's object files. A fetch would copy the same history, but through
// pack-objects and index-pack, which for a large history cost many times
// more than copying files. The workspace thereby also holds the objects the
// cache keeps for other commits of the same repository; commits cut off by
// a shallow fetch are among them, unreachable from anything in the
// workspace (update made HEAD's history complete).
func (c *Cache) materialiseFull(ctx context.Context, r *repo, u string, p Params) error {
	wrap := func(err error) error { return fmt.Errorf("checking out %s into %s: %w", p.Commit, p.Dir, err) }
	if err := copyObjects(filepath.Join(r.dir, "objects"), filepath.Join(p.Dir, ".git", "objects")); err != nil {
		return wrap(err)
	}
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"checkout", "--quiet", "--detach", p.Commit, "--"}}); err != nil {
		return wrap(err)
	}
	if p.Tags {
		tags, err := c.git(ctx, gitCmd{dir: r.dir, args: []string{"for-each-ref", "--merged=" + p.Commit,
			"--format=create %(refname) %(objectname)", "refs/tags/"}})
		if err != nil {
			return wrap(err)
		}
		if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"update-ref", "--stdin"}, stdin: bytes.NewReader(tags)}); err != nil {
			return wrap(err)
		}
	}
	if _, err := c.git(ctx, gitCmd{dir: p.Dir, args: []string{"remote", "add", "origin", u}}); err != nil {
		return wrap(err)
	}
	return nil
}

// copyObjects copies the packs and loose objects of one object directory
// into another: new files, not links, so that nothing is shared.
func copyObjects(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		top, _, _ := strings.Cut(rel, string(filepath.Separator))
		if d.IsDir() {
			if top == "info" || strings.HasPrefix(d.Name(), "tmp") {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), "tmp_") || strings.HasSuffix(d.Name(), ".keep") {
			return nil
		}
		return copyFile(p, filepath.Join(dst, rel))
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// evict removes the least recently used repositories, other than just and
// those in use, while the cache is over its bound.
func (c *Cache) evict(just *repo) {
	if c.opts.MaxBytes <= 0 {
		return
	}
	c.mu.Lock()
	var total int64
	var idle []*repo
	for _, r := range c.repos {
		total += r.size
		if r != just && r.users == 0 {
			idle = append(idle, r)
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].lastUse.Before(idle[j].lastUse) })
	var gone []*repo
	for _, r := range idle {
		if total <= c.opts.MaxBytes {
			break
		}
		// No one holds or waits for r, and no one can start to without
		// c.mu, so it can go.
		delete(c.repos, r.key)
		total -= r.size
		gone = append(gone, r)
	}
	c.mu.Unlock()
	for _, r := range gone {
		c.log.Info("evicting cached repository", "cache_key", r.key, "bytes", r.size)
		c.remove(r)
	}
}

// remove deletes a repository's directory, first moving it out of the way
// so that a new repository of the same key can start at once.
func (c *Cache) remove(r *repo) {
	dst := c.path("tmp", r.key+"-"+rand.Text())
	if err := os.Rename(r.dir, dst); err != nil {
		c.log.Warn("removing cached repository", "cache_key", r.key, "error", err)
		return
	}
	if err := os.RemoveAll(dst); err != nil {
		c.log.Warn("removing cached repository", "cache_key", r.key, "error", err)
	}
}

// Size returns the bytes the cached repositories take on disk, as last
// measured.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, r := range c.repos {
		n += r.size
	}
	return n
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// RemoteRefused reports whether err is a fetch that the remote answered and
// refused — no such repository, authentication required, not found — or
// whose host does not resolve: the job's repository is wrong, and trying
// again will not help.
func RemoteRefused(err error) bool {
	msg := stderrOf(err)
	for _, s := range []string{"not found", "Authentication failed", "could not read Username",
		"Could not resolve host", "The requested URL returned error: 4", "not valid: is this a git repository"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
