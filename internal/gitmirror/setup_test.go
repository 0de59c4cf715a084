package gitmirror

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/testenv"
)

// requireGit skips (or fails in CI) without git and git-http-backend, and
// returns git's exec path.
func requireGit(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "git", err)
	}
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		testenv.Missing(t, "git --exec-path", err)
	}
	execPath := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(execPath, "git-http-backend")); err != nil {
		testenv.Missing(t, "git-http-backend", err)
	}
	return execPath
}

// gitEnv isolates the tests' own git commands from the machine's config.
func gitEnv(home string) []string {
	return append(os.Environ(),
		"HOME="+home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"LC_ALL=C",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
	)
}

// runGit runs git in dir and returns its trimmed standard output.
func runGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := tryGit(t, dir, nil, args...)
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// tryGit runs git in dir with extra environment; the error carries stderr.
func tryGit(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := gitCommand(t, dir, args...)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// gitCommand returns git in dir with the tests' isolated environment.
func gitCommand(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(dir)
	return cmd
}

// upstream is a remote repository served by git http-backend over
// loopback HTTP, optionally behind basic auth, counting its requests.
type upstream struct {
	t       *testing.T
	work    string // a working clone that commits and pushes
	bare    string // the served repository
	srv     *httptest.Server
	url     string
	user    string
	pass    string
	noV2    bool // strip Git-Protocol: the server speaks protocol v0 only
	fetches atomic.Int64

	mu        sync.Mutex
	onRequest func(*http.Request) // called for every request, before auth
	refuse    string              // a commit id the server refuses to serve by id, like some hosted servers
}

type upstreamOpts struct {
	user, pass string
	noV2       bool
}

// refusesWant reports whether the upload-pack request in r asks for id,
// leaving r's body readable again.
func refusesWant(t *testing.T, r *http.Request, id string) bool {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Errorf("reading request: %v", err)
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	plain := body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Errorf("reading gzip request: %v", err)
			return false
		}
		if plain, err = io.ReadAll(zr); err != nil {
			t.Errorf("reading gzip request: %v", err)
			return false
		}
	}
	return bytes.Contains(plain, []byte("want "+id))
}

// newUpstream creates a repository with history on main, a branch
// "feature", an annotated tag v1 and a lightweight tag light, and serves it.
func newUpstream(t *testing.T, o upstreamOpts) *upstream {
	t.Helper()
	execPath := requireGit(t)
	root := t.TempDir()
	u := &upstream{t: t, work: filepath.Join(root, "work"), bare: filepath.Join(root, "srv", "repo.git"),
		user: o.user, pass: o.pass, noV2: o.noV2}
	runGit(t, root, "init", "--quiet", "--initial-branch=main", u.work)
	for i := range 3 {
		u.commit("main " + string(rune('a'+i)))
	}
	runGit(t, u.work, "tag", "-a", "-m", "release one", "v1")
	runGit(t, u.work, "checkout", "--quiet", "-b", "feature")
	u.commit("feature work")
	runGit(t, u.work, "checkout", "--quiet", "main")
	runGit(t, u.work, "tag", "light", "HEAD~1")
	runGit(t, root, "clone", "--quiet", "--bare", u.work, u.bare)
	runGit(t, u.bare, "config", "http.receivepack", "false")
	runGit(t, u.work, "remote", "add", "origin", u.bare)

	backend := &cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + filepath.Dir(u.bare),
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"HOME=" + root,
		},
		Stderr: io.Discard, // "not our ref" and the like, expected by some tests
	}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		hook, refuse := u.onRequest, u.refuse
		u.mu.Unlock()
		if hook != nil {
			hook(r)
		}
		if u.user != "" {
			user, pass, ok := r.BasicAuth()
			if !ok || user != u.user || pass != u.pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if strings.HasSuffix(r.URL.Path, "/info/refs") {
			u.fetches.Add(1)
		}
		if u.noV2 {
			r.Header.Del("Git-Protocol")
		}
		if refuse != "" && strings.HasSuffix(r.URL.Path, "/git-upload-pack") && refusesWant(t, r, refuse) {
			// What a server that serves advertised tips only answers.
			w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
			io.WriteString(w, pktLine("ERR upload-pack: not our ref "+refuse+"\n"))
			return
		}
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	u.url = u.srv.URL + "/repo.git"
	return u
}

// commit makes a commit on the work tree's current branch and returns its id.
func (u *upstream) commit(msg string) string {
	u.t.Helper()
	f := filepath.Join(u.work, "file.txt")
	old, _ := os.ReadFile(f)
	if err := os.WriteFile(f, append(old, msg+"\n"...), 0o644); err != nil {
		u.t.Fatal(err)
	}
	runGit(u.t, u.work, "add", "file.txt")
	runGit(u.t, u.work, "commit", "--quiet", "-m", msg)
	return runGit(u.t, u.work, "rev-parse", "HEAD")
}

// push publishes the work tree's branches and tags.
func (u *upstream) push() {
	u.t.Helper()
	runGit(u.t, u.work, "push", "--quiet", "--all", "origin")
	runGit(u.t, u.work, "push", "--quiet", "--tags", "origin")
}

func (u *upstream) rev(rev string) string {
	u.t.Helper()
	return runGit(u.t, u.work, "rev-parse", rev+"^{commit}")
}

func (u *upstream) remote(name string) Remote {
	return Remote{Name: name, URL: u.url, Credentials: Credentials{Username: u.user, Password: u.pass}}
}

func (u *upstream) setHook(f func(*http.Request)) {
	u.mu.Lock()
	u.onRequest = f
	u.mu.Unlock()
}

func (u *upstream) setRefuse(id string) {
	u.mu.Lock()
	u.refuse = id
	u.mu.Unlock()
}

// fixedNow is the injected clock of the tests.
var fixedNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// setup returns Mirrors over a fresh root, logging into the returned buffer.
func setup(t *testing.T) (*Mirrors, *syncBuffer) {
	t.Helper()
	requireGit(t)
	logs := &syncBuffer{}
	m, err := New(Options{
		Root:         t.TempDir(),
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:          func() time.Time { return fixedNow },
		FetchTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, logs
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
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

// mirrorGit runs git against the mirror of name.
func mirrorGit(t *testing.T, m *Mirrors, name string, args ...string) (string, error) {
	t.Helper()
	dir, err := m.dir(name)
	if err != nil {
		t.Fatal(err)
	}
	return tryGit(t, dir, nil, args...)
}
