package gitmirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors returned by Mirrors. They are wrapped with context; test with
// errors.Is.
var (
	// ErrCommitNotFound means the remote does not have the commit (or does
	// not let us fetch it).
	ErrCommitNotFound = errors.New("commit not found in remote repository")
	// ErrInvalidName means a repository name is not acceptable (see
	// ValidName); nothing touched the file system.
	ErrInvalidName = errors.New("invalid repository name")
	// ErrInvalidRemote means a remote URL, commit id or credentials are not
	// acceptable.
	ErrInvalidRemote = errors.New("invalid remote")
	// ErrNotMirrored means there is no mirror for the name.
	ErrNotMirrored = errors.New("repository not mirrored")
	// ErrAuthentication means the remote refused the credentials, or wanted
	// some and none were given.
	ErrAuthentication = errors.New("remote authentication failed")
)

// Remote is a repository as registered on the coordinator.
type Remote struct {
	// Name is the repository's name on the coordinator, e.g. "acme/api".
	Name string
	// URL is the real remote: https://, http://, ssh://, git:// or the
	// scp-like user@host:path. It must not carry a password.
	URL string
	// Credentials for the remote; the zero value means none.
	Credentials Credentials
	// KnownHosts holds known_hosts lines for an SSH remote. Empty means
	// trust on first use, pinned per mirror (see the package comment).
	KnownHosts string
}

// Credentials authenticate to a remote. At most one kind is set.
type Credentials struct {
	// Username for HTTPS; defaults to "x-access-token" when Password is set,
	// which GitHub, GitLab and Gitea accept with a token as password.
	Username string
	// Password is an HTTPS password or access token.
	Password string
	// SSHKey is an OpenSSH or PEM private key (unencrypted) for SSH remotes.
	SSHKey string
}

func (c Credentials) secrets() []string {
	var s []string
	for _, v := range []string{c.Password, c.SSHKey} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// Options configure Mirrors. Root is required; the rest have defaults.
type Options struct {
	// Root is the directory holding the mirrors. Created (0700) if missing.
	Root string
	// Git is the git binary; default "git" from PATH.
	Git string
	// Logger; default discards.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// FetchTimeout bounds one fetch from a remote; default 10 minutes.
	FetchTimeout time.Duration
	// LocalTimeout bounds local git commands (init, config, cat-file);
	// default 1 minute.
	LocalTimeout time.Duration
	// ServeTimeout bounds one upload-pack request; default 30 minutes.
	ServeTimeout time.Duration
	// MaxRequestBody caps an upload-pack request body after
	// decompression; default 64 MiB.
	MaxRequestBody int64
}

// Mirrors keeps one bare mirror per repository name under Root. It is safe
// for concurrent use; several Mirrors must not share a Root.
type Mirrors struct {
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]chan struct{} // per repository name; never removed
}

// Mirror describes one mirror, as List returns it.
type Mirror struct {
	Name string
	URL  string
	// FetchedAt is the time of the last successful fetch; zero if never.
	FetchedAt time.Time
}

// New returns Mirrors over opts.Root, creating it if needed.
func New(opts Options) (*Mirrors, error) {
	if opts.Root == "" {
		return nil, errors.New("gitmirror: Root is required")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("resolving mirror root: %w", err)
	}
	opts.Root = root
	if opts.Git == "" {
		opts.Git = "git"
	}
	git, err := exec.LookPath(opts.Git)
	if err != nil {
		return nil, fmt.Errorf("finding git: %w", err)
	}
	opts.Git = git
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 10 * time.Minute
	}
	if opts.LocalTimeout <= 0 {
		opts.LocalTimeout = time.Minute
	}
	if opts.ServeTimeout <= 0 {
		opts.ServeTimeout = 30 * time.Minute
	}
	if opts.MaxRequestBody <= 0 {
		opts.MaxRequestBody = 64 << 20
	}
	for _, d := range []string{root, filepath.Join(root, ".tmp"), filepath.Join(root, ".home")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("creating mirror root: %w", err)
		}
	}
	return &Mirrors{opts: opts, log: opts.Logger, locks: map[string]chan struct{}{}}, nil
}

var segmentRE = regexp.MustCompile(`^[A-Za-z0-9._][A-Za-z0-9._-]*$`)

// maxNameLen keeps "<encoded name>.git" well inside one path component.
const maxNameLen = 180

// ValidName reports whether name is acceptable as a repository name: the
// rule of job.Remote (segments of letters, digits, '.', '_' and '-'
// separated by "/", none "." or "..", none starting with '-'), and at most
// 180 bytes so that it fits in one file name.
func ValidName(name string) error {
	if name == "" || len(name) > maxNameLen {
		return fmt.Errorf("%w %q: must be 1 to %d bytes", ErrInvalidName, name, maxNameLen)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "." || seg == ".." || !segmentRE.MatchString(seg) {
			return fmt.Errorf("%w %q: segments are letters, digits, '.', '_' and '-', not \".\" or \"..\", not starting with '-'", ErrInvalidName, name)
		}
	}
	return nil
}

// dir maps a valid name to its mirror directory, always one component below
// Root.
func (m *Mirrors) dir(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	base := strings.ReplaceAll(name, "/", "%2F") + ".git"
	if !filepath.IsLocal(base) || strings.ContainsRune(base, filepath.Separator) {
		return "", fmt.Errorf("%w %q", ErrInvalidName, name) // unreachable with ValidName; defence in depth
	}
	return filepath.Join(m.opts.Root, base), nil
}

func nameFromDir(base string) (string, bool) {
	enc, ok := strings.CutSuffix(base, ".git")
	if !ok {
		return "", false
	}
	name := strings.ReplaceAll(enc, "%2F", "/")
	return name, ValidName(name) == nil
}

var commitRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

func validRemote(r Remote, commit string) error {
	if !commitRE.MatchString(commit) {
		return fmt.Errorf("%w: commit %q is not a full lowercase hexadecimal object id", ErrInvalidRemote, commit)
	}
	if _, err := remoteHost(r.URL); err != nil {
		return err
	}
	c := r.Credentials
	if c.SSHKey != "" && (c.Password != "" || c.Username != "") {
		return fmt.Errorf("%w: give either an SSH key or a username and password, not both", ErrInvalidRemote)
	}
	if c.Username != "" && c.Password == "" {
		return fmt.Errorf("%w: a username needs a password or token", ErrInvalidRemote)
	}
	if isSSH(r.URL) && c.Password != "" {
		return fmt.Errorf("%w: a password is for HTTPS remotes; give an SSH key", ErrInvalidRemote)
	}
	if !isSSH(r.URL) && c.SSHKey != "" {
		return fmt.Errorf("%w: an SSH key is for SSH remotes; give a password or token", ErrInvalidRemote)
	}
	if strings.ContainsAny(c.Username+c.Password, "\x00\r\n") {
		return fmt.Errorf("%w: username and password must not contain NUL or line breaks", ErrInvalidRemote)
	}
	if strings.ContainsAny(r.KnownHosts, "\x00") {
		return fmt.Errorf("%w: known hosts must not contain NUL", ErrInvalidRemote)
	}
	return nil
}

var scpLikeRE = regexp.MustCompile(`^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:[^/]?`)

// remoteHost validates a remote URL and returns its host (with port), which
// the credential helper compares with the host git asks about.
func remoteHost(raw string) (string, error) {
	if raw == "" || strings.HasPrefix(raw, "-") || strings.ContainsAny(raw, "\x00\r\n\t ") {
		return "", fmt.Errorf("%w: remote URL %q is empty or has forbidden characters", ErrInvalidRemote, raw)
	}
	if !strings.Contains(raw, "://") {
		// scp-like: [user@]host:path
		if !scpLikeRE.MatchString(raw) {
			return "", fmt.Errorf("%w: remote URL %q is neither a URL nor user@host:path", ErrInvalidRemote, raw)
		}
		host, _, _ := strings.Cut(raw, ":")
		if _, h, ok := strings.Cut(host, "@"); ok {
			host = h
		}
		return host, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: remote URL: %v", ErrInvalidRemote, err)
	}
	switch u.Scheme {
	case "https", "http", "ssh", "git":
	default:
		return "", fmt.Errorf("%w: remote URL scheme %q: want https, http, ssh or git", ErrInvalidRemote, u.Scheme)
	}
	if u.Host == "" || strings.HasPrefix(u.Host, "-") {
		return "", fmt.Errorf("%w: remote URL has no host", ErrInvalidRemote)
	}
	if _, has := u.User.Password(); has {
		return "", fmt.Errorf("%w: remote URL must not carry a password; use Credentials", ErrInvalidRemote)
	}
	if u.User != nil && (u.Scheme == "https" || u.Scheme == "http") {
		return "", fmt.Errorf("%w: HTTP remote URL must not carry a user name; use Credentials", ErrInvalidRemote)
	}
	return u.Host, nil
}

func isSSH(rawURL string) bool {
	return strings.HasPrefix(rawURL, "ssh://") || !strings.Contains(rawURL, "://")
}

// lock takes the repository's lock, or gives up when ctx ends.
func (m *Mirrors) lock(ctx context.Context, name string) (unlock func(), err error) {
	m.mu.Lock()
	ch, ok := m.locks[name]
	if !ok {
		ch = make(chan struct{}, 1)
		m.locks[name] = ch
	}
	m.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for repository %s: %w", name, context.Cause(ctx))
	}
}

// Ensure makes sure commit (a full object id) is in the mirror of r.Name,
// creating the mirror and fetching from r.URL as needed. A commit the remote
// does not have is ErrCommitNotFound; rejected or missing credentials are
// ErrAuthentication. Concurrent calls for one repository share the lock, so
// a burst for one commit causes one fetch. Cancelling ctx kills the fetch.
func (m *Mirrors) Ensure(ctx context.Context, r Remote, commit string) error {
	dir, err := m.dir(r.Name)
	if err != nil {
		return err
	}
	if err := validRemote(r, commit); err != nil {
		return fmt.Errorf("repository %s: %w", r.Name, err)
	}
	if m.hasCommit(ctx, dir, commit) {
		return nil
	}
	unlock, err := m.lock(ctx, r.Name)
	if err != nil {
		return err
	}
	defer unlock()

	created := false
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := m.create(ctx, dir, r); err != nil {
			return fmt.Errorf("creating mirror of %s: %w", r.Name, err)
		}
		created = true
	} else if err != nil {
		return fmt.Errorf("mirror of %s: %w", r.Name, err)
	} else if m.hasCommit(ctx, dir, commit) {
		return nil // fetched by the call we waited for
	} else if err := m.setURL(ctx, dir, r.URL); err != nil {
		return fmt.Errorf("mirror of %s: %w", r.Name, err)
	}
	start := m.opts.Now()
	if err := m.fetch(ctx, dir, r, commit); err != nil {
		m.log.Warn("git fetch failed", "repository", r.Name, "commit", commit,
			"duration_ms", m.opts.Now().Sub(start).Milliseconds(), "error", err.Error())
		return fmt.Errorf("fetching %s of %s: %w", commit, r.Name, err)
	}
	if err := m.git(ctx, dir, m.opts.LocalTimeout, "config", "airlock.fetchedat", strconv.FormatInt(m.opts.Now().Unix(), 10)); err != nil {
		m.log.Warn("recording fetch time", "repository", r.Name, "error", err.Error())
	}
	if created || !m.hasHead(ctx, dir) {
		m.setHead(ctx, dir, r)
	}
	m.log.Info("git fetch", "repository", r.Name, "commit", commit,
		"duration_ms", m.opts.Now().Sub(start).Milliseconds())
	return nil
}

// mirrorConfig is written into every new mirror.
var mirrorConfig = [][2]string{
	{"uploadpack.allowAnySHA1InWant", "true"},
	{"uploadpack.allowReachableSHA1InWant", "true"},
	{"uploadpack.allowTipSHA1InWant", "true"},
	{"uploadpack.allowFilter", "true"},
	{"uploadpack.hideRefs", "refs/airlock"},
	{"http.receivepack", "false"},
	{"core.logAllRefUpdates", "false"},
	{"gc.autoDetach", "false"},
	{"fetch.prune", "false"},
}

// create initialises a mirror in Root/.tmp and renames it into place, so a
// crash never leaves half a mirror under a name.
func (m *Mirrors) create(ctx context.Context, dir string, r Remote) error {
	tmp, err := os.MkdirTemp(filepath.Join(m.opts.Root, ".tmp"), "init-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	repo := filepath.Join(tmp, "repo.git")
	if err := m.git(ctx, "", m.opts.LocalTimeout, "init", "--quiet", "--bare", repo); err != nil {
		return err
	}
	for _, kv := range mirrorConfig {
		if err := m.git(ctx, repo, m.opts.LocalTimeout, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	if err := m.git(ctx, repo, m.opts.LocalTimeout, "config", "airlock.name", r.Name); err != nil {
		return err
	}
	// The remote's fetch refspecs are the mirror's own, so git's
	// opportunistic remote-tracking updates write nowhere else.
	if err := m.git(ctx, repo, m.opts.LocalTimeout, "config", "remote.origin.url", r.URL); err != nil {
		return err
	}
	for _, spec := range mirrorRefspecs {
		if err := m.git(ctx, repo, m.opts.LocalTimeout, "config", "--add", "remote.origin.fetch", spec); err != nil {
			return err
		}
	}
	if err := os.Rename(repo, dir); err != nil {
		return err
	}
	m.log.Info("created git mirror", "repository", r.Name)
	return nil
}

func (m *Mirrors) setURL(ctx context.Context, dir, rawURL string) error {
	out, err := m.gitOutput(ctx, dir, "config", "--get", "remote.origin.url")
	if err == nil && strings.TrimSpace(out) == rawURL {
		return nil
	}
	return m.git(ctx, dir, m.opts.LocalTimeout, "config", "remote.origin.url", rawURL)
}

func (m *Mirrors) hasCommit(ctx context.Context, dir, commit string) bool {
	if _, err := os.Stat(dir); err != nil {
		return false
	}
	return m.git(ctx, dir, m.opts.LocalTimeout, "cat-file", "-e", commit+"^{commit}") == nil
}

func (m *Mirrors) hasHead(ctx context.Context, dir string) bool {
	return m.git(ctx, dir, m.opts.LocalTimeout, "rev-parse", "--verify", "--quiet", "HEAD") == nil
}

// setHead points the mirror's HEAD at the remote's default branch, so a
// plain clone through ServeUploadPack checks it out. Best effort.
func (m *Mirrors) setHead(ctx context.Context, dir string, r Remote) {
	c, cleanup, err := m.remoteCmd(dir, m.opts.FetchTimeout, r)
	if err != nil {
		m.log.Warn("reading remote HEAD", "repository", r.Name, "error", err.Error())
		return
	}
	defer cleanup()
	var out bytes.Buffer
	c.stdout = &out
	if err := m.run(ctx, c, "ls-remote", "--symref", "origin", "HEAD"); err != nil {
		m.log.Warn("reading remote HEAD", "repository", r.Name, "error", err.Error())
		return
	}
	for _, line := range strings.Split(out.String(), "\n") {
		ref, ok := strings.CutPrefix(line, "ref: ")
		if !ok {
			continue
		}
		target, _, _ := strings.Cut(ref, "\t")
		if !strings.HasPrefix(target, "refs/heads/") {
			return
		}
		if err := m.git(ctx, dir, m.opts.LocalTimeout, "symbolic-ref", "HEAD", target); err != nil {
			m.log.Warn("setting mirror HEAD", "repository", r.Name, "error", err.Error())
		}
		return
	}
}

// Remove deletes the mirror of name. Removing a name that has no mirror is
// not an error. It waits for a fetch of that repository in progress.
func (m *Mirrors) Remove(ctx context.Context, name string) error {
	dir, err := m.dir(name)
	if err != nil {
		return err
	}
	unlock, err := m.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	trash, err := os.MkdirTemp(filepath.Join(m.opts.Root, ".tmp"), "remove-")
	if err != nil {
		return fmt.Errorf("removing mirror of %s: %w", name, err)
	}
	defer os.RemoveAll(trash)
	if err := os.Rename(dir, filepath.Join(trash, "repo.git")); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("removing mirror of %s: %w", name, err)
	}
	m.log.Info("removed git mirror", "repository", name)
	return nil
}

// Size returns the bytes the mirror of name takes on disk (the sum of its
// files' sizes), or ErrNotMirrored.
func (m *Mirrors) Size(name string) (int64, error) {
	dir, err := m.dir(name)
	if err != nil {
		return 0, err
	}
	var total int64
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("%w: %s", ErrNotMirrored, name)
	}
	if err != nil {
		return 0, fmt.Errorf("measuring mirror of %s: %w", name, err)
	}
	return total, nil
}

// List returns the mirrors, sorted by name.
func (m *Mirrors) List(ctx context.Context) ([]Mirror, error) {
	entries, err := os.ReadDir(m.opts.Root)
	if err != nil {
		return nil, fmt.Errorf("listing mirrors: %w", err)
	}
	var list []Mirror
	for _, e := range entries {
		name, ok := nameFromDir(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		mi := Mirror{Name: name}
		out, err := m.gitOutput(ctx, filepath.Join(m.opts.Root, e.Name()), "config", "--get-regexp", `^(remote\.origin\.url|airlock\.fetchedat)$`)
		if err != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("listing mirrors: %w", context.Cause(ctx))
		}
		for _, line := range strings.Split(out, "\n") {
			k, v, _ := strings.Cut(line, " ")
			switch k {
			case "remote.origin.url":
				mi.URL = v
			case "airlock.fetchedat":
				if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
					mi.FetchedAt = time.Unix(sec, 0)
				}
			}
		}
		list = append(list, mi)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, nil
}
