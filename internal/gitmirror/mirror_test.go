package gitmirror

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEnsureFetchesAndIsIdempotent(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, upstreamOpts{})
	m, _ := setup(t)
	ctx := context.Background()
	head := up.rev("main")

	if err := m.Ensure(ctx, up.remote("acme/api"), head); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if _, err := mirrorGit(t, m, "acme/api", "cat-file", "-e", head+"^{commit}"); err != nil {
		t.Errorf("commit %s not in the mirror: %v", head, err)
	}
	refs, _ := mirrorGit(t, m, "acme/api", "for-each-ref", "--format=%(refname)")
	want := "refs/airlock/commits/" + head + "\nrefs/heads/feature\nrefs/heads/main\nrefs/tags/light\nrefs/tags/v1"
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Errorf("mirror refs (-want +got):\n%s", diff)
	}
	if got, _ := mirrorGit(t, m, "acme/api", "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Errorf("mirror HEAD = %q, want refs/heads/main (the remote's)", got)
	}

	before := up.fetches.Load()
	for range 3 {
		if err := m.Ensure(ctx, up.remote("acme/api"), head); err != nil {
			t.Fatalf("Ensure again: %v", err)
		}
	}
	// An older commit reachable from what was fetched needs no fetch either.
	if err := m.Ensure(ctx, up.remote("acme/api"), up.rev("main~2")); err != nil {
		t.Fatalf("Ensure older commit: %v", err)
	}
	if got := up.fetches.Load() - before; got != 0 {
		t.Errorf("repeated Ensure made %d requests to the remote, want 0", got)
	}

	// A new commit upstream is fetched on demand.
	next := up.commit("later")
	up.push()
	if err := m.Ensure(ctx, up.remote("acme/api"), next); err != nil {
		t.Fatalf("Ensure new commit: %v", err)
	}
	if got, _ := mirrorGit(t, m, "acme/api", "rev-parse", "refs/heads/main"); got != next {
		t.Errorf("mirror main = %s, want %s", got, next)
	}
	// Pins of earlier commits survive later fetches (--prune leaves them).
	if _, err := mirrorGit(t, m, "acme/api", "rev-parse", "--verify", "refs/airlock/commits/"+head); err != nil {
		t.Errorf("pin of %s gone after a later fetch: %v", head, err)
	}
}

func TestConcurrentEnsureCausesOneFetch(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, upstreamOpts{})
	m, _ := setup(t)
	ctx := context.Background()
	if err := m.Ensure(ctx, up.remote("acme/api"), up.rev("main")); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	next := up.commit("new work")
	up.push()
	before := up.fetches.Load()

	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = m.Ensure(ctx, up.remote("acme/api"), next)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Ensure %d: %v", i, err)
		}
	}
	if got := up.fetches.Load() - before; got != 1 {
		t.Errorf("%d concurrent Ensure calls made %d fetches, want 1", n, got)
	}
}

func TestEnsureMissingCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts upstreamOpts
	}{
		{"protocol v2", upstreamOpts{}},
		{"protocol v0", upstreamOpts{noV2: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, tc.opts)
			m, _ := setup(t)
			missing := strings.Repeat("ab", 20)
			start := time.Now()
			err := m.Ensure(context.Background(), up.remote("acme/api"), missing)
			if !errors.Is(err, ErrCommitNotFound) {
				t.Fatalf("Ensure(missing commit) = %v, want ErrCommitNotFound", err)
			}
			if !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "acme/api") {
				t.Errorf("error %q does not name the commit and the repository", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Ensure(missing commit) took %s", d)
			}
			// The mirror is usable afterwards: an existing commit still works.
			if err := m.Ensure(context.Background(), up.remote("acme/api"), up.rev("main")); err != nil {
				t.Errorf("Ensure after a missing commit: %v", err)
			}
		})
	}
}

func TestEnsureFallsBackWhenTheServerRefusesIDs(t *testing.T) {
	t.Parallel()
	// Some servers serve only what they advertise; an older commit then
	// comes with the branches.
	up := newUpstream(t, upstreamOpts{})
	old := up.rev("main~2") // no branch or tag points at it
	up.setRefuse(old)
	m, logs := setup(t)
	if err := m.Ensure(context.Background(), up.remote("acme/api"), old); err != nil {
		t.Fatalf("Ensure(older commit, server refusing it by id): %v\nlogs:\n%s", err, logs)
	}
	if got, err := mirrorGit(t, m, "acme/api", "rev-parse", "refs/airlock/commits/"+old); err != nil || got != old {
		t.Errorf("pin = %q, %v; want %s", got, err, old)
	}
	if !strings.Contains(logs.String(), "does not serve commit by id") {
		t.Errorf("the fallback path was not taken; logs:\n%s", logs)
	}

	// A commit in no branch or tag, refused by id, is not found.
	dangling := up.commit("never pushed to a branch")
	runGit(t, up.work, "push", "--quiet", "origin", "HEAD:refs/heads/tmp")
	runGit(t, up.work, "push", "--quiet", "origin", ":refs/heads/tmp")
	up.setRefuse(dangling)
	err := m.Ensure(context.Background(), up.remote("acme/api"), dangling)
	if !errors.Is(err, ErrCommitNotFound) || !strings.Contains(err.Error(), "no branch or tag contains it") {
		t.Errorf("Ensure(dangling commit) = %v, want ErrCommitNotFound saying no branch or tag contains it", err)
	}
}

func TestEnsureWithCredentials(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-Token-9f8e7d6c5b4a"
	for _, tc := range []struct {
		name     string
		user     string // the server's
		creds    Credentials
		wantErr  error
		wantText string
	}{
		{"user and password", "alice", Credentials{Username: "alice", Password: secret}, nil, ""},
		{"token with default user", "x-access-token", Credentials{Password: secret}, nil, ""},
		{"no credentials", "alice", Credentials{}, ErrAuthentication, "could not read Username"},
		{"wrong password", "alice", Credentials{Username: "alice", Password: secret + "-wrong"}, ErrAuthentication, "Authentication failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newUpstream(t, upstreamOpts{user: tc.user, pass: secret})
			m, logs := setup(t)
			// While git talks to the server, no process may carry the secret
			// in its argv.
			var argvLeaks sync.Map
			up.setHook(func(*http.Request) {
				for _, leak := range procCmdlinesContaining(t, secret) {
					argvLeaks.Store(leak, true)
				}
			})
			r := Remote{Name: "acme/api", URL: up.url, Credentials: tc.creds}
			err := m.Ensure(context.Background(), r, up.rev("main"))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Ensure = %v, want %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not say %q", err, tc.wantText)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("error echoes the secret: %v", err)
			}
			argvLeaks.Range(func(k, _ any) bool {
				t.Errorf("secret in a process's argv: %s", k)
				return true
			})
			if strings.Contains(logs.String(), secret) {
				t.Errorf("logs contain the secret:\n%s", logs)
			}
			for _, f := range filesContaining(t, m.opts.Root, secret) {
				t.Errorf("%s contains the secret", f)
			}
		})
	}
}

func TestCredentialsDoNotFollowARedirectToAnotherHost(t *testing.T) {
	t.Parallel()
	const secret = "redirect-Secret-1234567890"
	// The other host: "localhost" is not "127.0.0.1", so git asks the
	// helper for it, and the helper has nothing for it.
	var sawAuth sync.Map
	var otherHits atomic.Int64
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		if _, p, ok := r.BasicAuth(); ok {
			sawAuth.Store(p, true)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="other"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	other.Listener = l
	other.Start()
	t.Cleanup(other.Close)
	otherURL := "http://localhost:" + strings.TrimPrefix(other.Listener.Addr().String(), "127.0.0.1:")

	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, otherURL+r.URL.RequestURI(), http.StatusFound)
	}))
	t.Cleanup(redirector.Close)

	m, _ := setup(t)
	r := Remote{Name: "acme/api", URL: redirector.URL + "/repo.git", Credentials: Credentials{Username: "alice", Password: secret}}
	err = m.Ensure(context.Background(), r, strings.Repeat("1", 40))
	if err == nil {
		t.Fatal("Ensure through a redirect to another host succeeded")
	}
	if otherHits.Load() == 0 {
		t.Fatalf("git did not follow the redirect (%v); the test tests nothing", err)
	}
	sawAuth.Range(func(k, _ any) bool {
		t.Errorf("the other host received a password: %v", k)
		return true
	})
}

func TestEnsureSSHKeyIsATemporaryPrivateFile(t *testing.T) {
	t.Parallel()
	const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"
	m, logs := setup(t)
	// A "server" that accepts the connection and, while ssh waits for its
	// banner, lets the test look at the key file; then hangs up.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	type seen struct {
		keyMode, dirMode os.FileMode
		argvLeaks        []string
		err              error
	}
	seenc := make(chan seen, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			seenc <- seen{err: err}
			return
		}
		defer conn.Close()
		var s seen
		keys, _ := filepath.Glob(filepath.Join(m.opts.Root, ".tmp", "ssh-*", "key"))
		if len(keys) != 1 {
			s.err = errors.New("no key file under .tmp while ssh runs")
		} else {
			fi, err1 := os.Stat(keys[0])
			di, err2 := os.Stat(filepath.Dir(keys[0]))
			if err := errors.Join(err1, err2); err != nil {
				s.err = err
			} else {
				s.keyMode, s.dirMode = fi.Mode().Perm(), di.Mode().Perm()
			}
		}
		s.argvLeaks = procCmdlinesContaining(t, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ")
		seenc <- s
	}()

	r := Remote{Name: "acme/api", URL: "ssh://git@" + l.Addr().String() + "/repo.git", Credentials: Credentials{SSHKey: key}}
	err = m.Ensure(context.Background(), r, strings.Repeat("2", 40))
	if err == nil {
		t.Fatal("Ensure against a server that hangs up succeeded")
	}
	l.Close() // unblocks Accept if ssh never connected
	s := <-seenc
	if s.err != nil {
		t.Fatal(s.err)
	}
	if s.keyMode != 0o600 || s.dirMode != 0o700 {
		t.Errorf("key file mode %v in directory mode %v, want 0600 in 0700", s.keyMode, s.dirMode)
	}
	for _, leak := range s.argvLeaks {
		t.Errorf("key in a process's argv: %s", leak)
	}
	if left, _ := filepath.Glob(filepath.Join(m.opts.Root, ".tmp", "*")); len(left) != 0 {
		t.Errorf("left behind in .tmp: %v", left)
	}
	for _, line := range strings.Split(strings.TrimSpace(key), "\n") {
		if strings.Contains(err.Error(), line) || strings.Contains(logs.String(), line) {
			t.Errorf("error or logs contain the key line %q: %v", line, err)
		}
	}
	for _, f := range filesContaining(t, m.opts.Root, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ") {
		t.Errorf("%s contains the key", f)
	}
}

func TestEnsureNeverHangs(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hung := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	r := Remote{Name: "acme/api", URL: srv.URL + "/repo.git"}
	commit := strings.Repeat("3", 40)

	t.Run("timeout", func(t *testing.T) {
		m, _ := setup(t)
		m.opts.FetchTimeout = 500 * time.Millisecond
		start := time.Now()
		err := m.Ensure(context.Background(), r, commit)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out after 500ms") {
			t.Errorf("Ensure against a hanging server = %v, want a timeout", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Ensure took %s with a 500ms fetch timeout", d)
		}
		for len(hung) > 0 {
			<-hung
		}
	})
	t.Run("cancel", func(t *testing.T) {
		m, _ := setup(t)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- m.Ensure(ctx, r, commit) }()
		<-hung // git is waiting on the server
		cancel()
		select {
		case err := <-errc:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Ensure after cancel = %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Ensure did not return within 10s of its context being cancelled")
		}
	})
}

func TestEnsureRejectsBadInput(t *testing.T) {
	t.Parallel()
	m, _ := setup(t)
	good := strings.Repeat("a", 40)
	for _, tc := range []struct {
		name   string
		r      Remote
		commit string
		want   error
	}{
		{"short commit", Remote{Name: "a", URL: "https://example.com/a.git"}, "abc123", ErrInvalidRemote},
		{"ref instead of commit", Remote{Name: "a", URL: "https://example.com/a.git"}, "main", ErrInvalidRemote},
		{"option as commit", Remote{Name: "a", URL: "https://example.com/a.git"}, "--upload-pack=x", ErrInvalidRemote},
		{"password in URL", Remote{Name: "a", URL: "https://bob:pw@example.com/a.git"}, good, ErrInvalidRemote},
		{"user in HTTPS URL", Remote{Name: "a", URL: "https://bob@example.com/a.git"}, good, ErrInvalidRemote},
		{"file URL", Remote{Name: "a", URL: "file:///etc"}, good, ErrInvalidRemote},
		{"ext transport", Remote{Name: "a", URL: "ext::sh -c touch% /tmp/pwned"}, good, ErrInvalidRemote},
		{"option as URL", Remote{Name: "a", URL: "--upload-pack=touch /tmp/pwned"}, good, ErrInvalidRemote},
		{"local path", Remote{Name: "a", URL: "/srv/git/a.git"}, good, ErrInvalidRemote},
		{"ssh option host", Remote{Name: "a", URL: "ssh://-oProxyCommand=x/a.git"}, good, ErrInvalidRemote},
		{"ssh key for HTTPS", Remote{Name: "a", URL: "https://example.com/a.git", Credentials: Credentials{SSHKey: "k"}}, good, ErrInvalidRemote},
		{"password for SSH", Remote{Name: "a", URL: "git@example.com:a.git", Credentials: Credentials{Password: "p"}}, good, ErrInvalidRemote},
		{"username alone", Remote{Name: "a", URL: "https://example.com/a.git", Credentials: Credentials{Username: "bob"}}, good, ErrInvalidRemote},
		{"newline in password", Remote{Name: "a", URL: "https://example.com/a.git", Credentials: Credentials{Password: "p\nhost=x"}}, good, ErrInvalidRemote},
		{"traversal name", Remote{Name: "../a", URL: "https://example.com/a.git"}, good, ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := m.Ensure(context.Background(), tc.r, tc.commit)
			if !errors.Is(err, tc.want) {
				t.Errorf("Ensure = %v, want %v", err, tc.want)
			}
		})
	}
	if list, err := m.List(context.Background()); err != nil || len(list) != 0 {
		t.Errorf("List after refused input = %v, %v; want no mirrors", list, err)
	}
}

func TestListSizeRemove(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, upstreamOpts{})
	m, _ := setup(t)
	ctx := context.Background()
	for _, name := range []string{"zeta", "acme/api"} {
		if err := m.Ensure(ctx, up.remote(name), up.rev("main")); err != nil {
			t.Fatalf("Ensure %s: %v", name, err)
		}
	}
	got, err := m.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mirror{
		{Name: "acme/api", URL: up.url, FetchedAt: fixedNow},
		{Name: "zeta", URL: up.url, FetchedAt: fixedNow},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	size, err := m.Size("acme/api")
	if err != nil || size <= 0 {
		t.Errorf("Size = %d, %v; want > 0", size, err)
	}

	// A changed URL is taken on the next fetch.
	next := up.commit("after move")
	up.push()
	if err := m.Ensure(ctx, Remote{Name: "zeta", URL: strings.Replace(up.url, "127.0.0.1", "localhost", 1)}, next); err != nil {
		t.Fatalf("Ensure with a new URL: %v", err)
	}
	if got, _ := mirrorGit(t, m, "zeta", "config", "remote.origin.url"); !strings.Contains(got, "localhost") {
		t.Errorf("remote.origin.url = %q after the URL changed", got)
	}

	if err := m.Remove(ctx, "acme/api"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := m.Remove(ctx, "acme/api"); err != nil {
		t.Errorf("Remove of a removed mirror = %v, want nil", err)
	}
	if _, err := m.Size("acme/api"); !errors.Is(err, ErrNotMirrored) {
		t.Errorf("Size after Remove = %v, want ErrNotMirrored", err)
	}
	got, _ = m.List(ctx)
	if len(got) != 1 || got[0].Name != "zeta" {
		t.Errorf("List after Remove = %+v, want only zeta", got)
	}
	if left, _ := filepath.Glob(filepath.Join(m.opts.Root, ".tmp", "*")); len(left) != 0 {
		t.Errorf("left behind in .tmp: %v", left)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	key := "-----BEGIN KEY-----\nAAAABBBBCCCCDDDDEEEE\nFFFFGGGGHHHHIIII\n-----END KEY-----"
	for _, tc := range []struct {
		in      string
		secrets []string
		want    string
	}{
		{"fatal: bad token tok-123", []string{"tok-123"}, "fatal: bad token [REDACTED]"},
		{"nothing here", []string{"tok-123", ""}, "nothing here"},
		{"line: FFFFGGGGHHHHIIII", []string{key}, "line: [REDACTED]"},
		{"whole " + key, []string{key}, "whole [REDACTED]"},
	} {
		if got := redact(tc.in, tc.secrets); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// procCmdlinesContaining returns the command lines of processes whose
// argv contains s.
func procCmdlinesContaining(t *testing.T, s string) []string {
	t.Helper()
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var found []string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the process ended
		}
		if strings.Contains(string(b), s) {
			found = append(found, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}

// filesContaining returns the files under root whose content contains s.
func filesContaining(t *testing.T, root, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if strings.Contains(string(b), s) {
				found = append(found, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
