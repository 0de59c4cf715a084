package gitmirror

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// served is a mirror of an upstream behind an HTTP server that routes
// /git/acme/api.git/... to ServeUploadPack, as the coordinator will after
// checking the job token, and records what it saw.
type served struct {
	up  *upstream
	m   *Mirrors
	url string // the clone URL

	mu        sync.Mutex
	protocols []string // Git-Protocol headers
	statuses  []int
}

func setupServed(t *testing.T) *served {
	t.Helper()
	up := newUpstream(t, upstreamOpts{})
	m, _ := setup(t)
	if err := m.Ensure(context.Background(), up.remote("acme/api"), up.rev("main")); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	s := &served{up: up, m: m}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/git/acme/api.git/")
		if !ok || rest == "" {
			http.NotFound(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		m.ServeUploadPack(rec, r, "acme/api")
		s.mu.Lock()
		s.protocols = append(s.protocols, r.Header.Get("Git-Protocol"))
		s.statuses = append(s.statuses, rec.status)
		s.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/git/acme/api.git"
	return s
}

func (s *served) seen() (protocols []string, statuses []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.protocols...), append([]int(nil), s.statuses...)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func TestServeShallowCloneAndFetchOfOneCommit(t *testing.T) {
	t.Parallel()
	s := setupServed(t)
	head, older := s.up.rev("main"), s.up.rev("main~2")
	for _, version := range []int{0, 1, 2} {
		t.Run("protocol v"+strconv.Itoa(version), func(t *testing.T) {
			t.Parallel()
			proto := "protocol.version=" + strconv.Itoa(version)
			dir := t.TempDir()

			runGit(t, dir, "-c", proto, "clone", "--quiet", "--depth", "1", s.url, "clone")
			clone := filepath.Join(dir, "clone")
			if got := runGit(t, clone, "rev-parse", "HEAD"); got != head {
				t.Errorf("cloned HEAD = %s, want %s", got, head)
			}
			if got := runGit(t, clone, "rev-list", "--count", "HEAD"); got != "1" {
				t.Errorf("shallow clone has %s commits, want 1", got)
			}
			if b, err := os.ReadFile(filepath.Join(clone, "file.txt")); err != nil || !strings.Contains(string(b), "main c") {
				t.Errorf("checked-out file.txt = %q, %v", b, err)
			}

			// Exactly one commit that no ref points at, as the executor will.
			runGit(t, dir, "init", "--quiet", "one")
			one := filepath.Join(dir, "one")
			runGit(t, one, "-c", proto, "fetch", "--quiet", "--depth", "1", s.url, older)
			if got := runGit(t, one, "rev-parse", "FETCH_HEAD"); got != older {
				t.Errorf("fetched %s, want %s", got, older)
			}
			if got := runGit(t, one, "rev-list", "--count", "FETCH_HEAD"); got != "1" {
				t.Errorf("shallow fetch has %s commits, want 1", got)
			}
		})
	}
	t.Run("v2 was spoken", func(t *testing.T) {
		// The parallel subtests above run after this one; it makes its own
		// exchange and watches the packets.
		dir := t.TempDir()
		var trace bytes.Buffer
		cmd := gitCommand(t, dir, "-c", "protocol.version=2", "ls-remote", s.url)
		cmd.Env = append(cmd.Env, "GIT_TRACE_PACKET=1")
		cmd.Stderr = &trace
		if err := cmd.Run(); err != nil {
			t.Fatalf("ls-remote: %v: %s", err, trace.String())
		}
		if !strings.Contains(trace.String(), "version 2") {
			t.Errorf("GIT_TRACE_PACKET shows no protocol v2 exchange:\n%s", trace.String())
		}
		protocols, _ := s.seen()
		if !containsString(protocols, "version=2") {
			t.Errorf("no request carried Git-Protocol: version=2; saw %q", protocols)
		}
	})
}

func TestServeRefusesPush(t *testing.T) {
	t.Parallel()
	s := setupServed(t)
	dir := t.TempDir()
	runGit(t, dir, "clone", "--quiet", s.url, "clone")
	clone := filepath.Join(dir, "clone")
	if err := os.WriteFile(filepath.Join(clone, "evil.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	runGit(t, clone, "add", "evil.txt")
	runGit(t, clone, "commit", "--quiet", "-m", "evil")
	_, err := tryGit(t, clone, nil, "push", "origin", "HEAD:refs/heads/evil")
	if err == nil {
		t.Fatal("push through ServeUploadPack succeeded")
	}
	if !strings.Contains(err.Error(), "403") {
		t.Errorf("push error %v does not show the 403", err)
	}
	if _, err := mirrorGit(t, s.m, "acme/api", "rev-parse", "--verify", "refs/heads/evil"); err == nil {
		t.Error("the push created refs/heads/evil in the mirror")
	}
}

func TestServeGzipRequestAndHiddenPins(t *testing.T) {
	t.Parallel()
	s := setupServed(t)
	req := pktLine("command=ls-refs\n") + "0001" + pktLine("symrefs\n") + "0000"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, req)
	zw.Close()

	r, err := http.NewRequest(http.MethodPost, s.url+"/git-upload-pack", &gz)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", requestType)
	r.Header.Set("Content-Encoding", "gzip")
	r.Header.Set("Git-Protocol", "version=2")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Content-Type"); got != resultType {
		t.Errorf("Content-Type = %q, want %q", got, resultType)
	}
	head := s.up.rev("main")
	if !strings.Contains(string(body), head+" refs/heads/main") {
		t.Errorf("ls-refs answer lacks refs/heads/main:\n%s", body)
	}
	if strings.Contains(string(body), "refs/airlock") {
		t.Errorf("ls-refs answer shows the hidden pins:\n%s", body)
	}

	// The v0 advertisement starts with the service line and hides pins too.
	resp2, err := http.Get(s.url + "/info/refs?service=git-upload-pack")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	adv, _ := io.ReadAll(resp2.Body)
	if want := "001e# service=git-upload-pack\n0000"; !strings.HasPrefix(string(adv), want) {
		t.Errorf("v0 advertisement starts %q, want %q", adv[:min(len(adv), 40)], want)
	}
	if got := resp2.Header.Get("Content-Type"); got != advertisementType {
		t.Errorf("Content-Type = %q, want %q", got, advertisementType)
	}
	if strings.Contains(string(adv), "refs/airlock") {
		t.Errorf("v0 advertisement shows the hidden pins:\n%s", adv)
	}
}

func TestServeRefusesEverythingElse(t *testing.T) {
	t.Parallel()
	s := setupServed(t)
	gzipBomb := func() io.Reader {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(bytes.Repeat([]byte("0"), 1<<20))
		zw.Close()
		return &b
	}
	s.m.opts.MaxRequestBody = 64 << 10
	for _, tc := range []struct {
		name, method, path string
		header             map[string]string
		body               func() io.Reader
		want               int
	}{
		{"receive-pack advertisement", "GET", "/info/refs?service=git-receive-pack", nil, nil, http.StatusForbidden},
		{"receive-pack", "POST", "/git-receive-pack", map[string]string{"Content-Type": "application/x-git-receive-pack-request"}, nil, http.StatusForbidden},
		{"dumb protocol refs", "GET", "/info/refs", nil, nil, http.StatusNotFound},
		{"dumb protocol HEAD", "GET", "/HEAD", nil, nil, http.StatusNotFound},
		{"dumb protocol packs", "GET", "/objects/info/packs", nil, nil, http.StatusNotFound},
		{"config", "GET", "/config", nil, nil, http.StatusNotFound},
		{"upload-pack by GET", "GET", "/git-upload-pack", nil, nil, http.StatusMethodNotAllowed},
		{"advertisement by POST", "POST", "/info/refs?service=git-upload-pack", nil, nil, http.StatusMethodNotAllowed},
		{"wrong content type", "POST", "/git-upload-pack", map[string]string{"Content-Type": "text/plain"}, nil, http.StatusUnsupportedMediaType},
		{"unknown encoding", "POST", "/git-upload-pack", map[string]string{"Content-Type": requestType, "Content-Encoding": "br"}, nil, http.StatusUnsupportedMediaType},
		{"bad gzip", "POST", "/git-upload-pack", map[string]string{"Content-Type": requestType, "Content-Encoding": "gzip"}, func() io.Reader { return strings.NewReader("not gzip") }, http.StatusBadRequest},
		{"gzip bomb", "POST", "/git-upload-pack", map[string]string{"Content-Type": requestType, "Content-Encoding": "gzip"}, gzipBomb, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = http.NoBody
			if tc.body != nil {
				body = tc.body()
			}
			r, err := http.NewRequest(tc.method, s.url+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
		})
	}
}

func TestNamesCannotEscapeRoot(t *testing.T) {
	t.Parallel()
	requireGit(t)
	parent := t.TempDir()
	root := filepath.Join(parent, "mirrors")
	m, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	// A bare repository beside Root, which no name may reach.
	runGit(t, parent, "init", "--quiet", "--bare", filepath.Join(parent, "secret.git"))

	bad := []string{
		"", ".", "..", "../secret", "../../etc/passwd", "acme/../../secret", "/etc", "/abs/path",
		"acme/", "/acme", "acme//api", "acme/..", "acme/./api", "a b", "a\\b", "a\x00b",
		"a%2Fb", "%2e%2e", "a:b", "-rf", "acme/-x", "../mirrors/x", "~root", "a\nb",
		strings.Repeat("a", maxNameLen+1),
	}
	for _, name := range bad {
		if err := ValidName(name); err == nil {
			t.Errorf("ValidName(%q) = nil, want an error", name)
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/x/info/refs?service=git-upload-pack", nil)
		m.ServeUploadPack(rec, req, name)
		if rec.Code != http.StatusNotFound {
			t.Errorf("ServeUploadPack(%q) = %d, want 404", name, rec.Code)
		}
		if _, err := m.Size(name); err == nil {
			t.Errorf("Size(%q) succeeded", name)
		}
		if err := m.Remove(context.Background(), name); err == nil {
			t.Errorf("Remove(%q) succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(parent, "secret.git", "HEAD")); err != nil {
		t.Errorf("the repository beside Root was touched: %v", err)
	}

	good := []string{"a", "acme/api", "Acme-1/api_v2.x", "a/b/c/d", "acme/.github", "_x/.git", "acme/api.git",
		"secret", "secret.git", ".tmp", "...", strings.Repeat("a", maxNameLen)}
	for _, name := range good {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", name, err)
			continue
		}
		dir, err := m.dir(name)
		if err != nil {
			t.Errorf("dir(%q): %v", name, err)
			continue
		}
		if filepath.Dir(dir) != m.opts.Root {
			t.Errorf("dir(%q) = %s, not directly under %s", name, dir, m.opts.Root)
		}
		if back, ok := nameFromDir(filepath.Base(dir)); !ok || back != name {
			t.Errorf("nameFromDir(dir(%q)) = %q, %v", name, back, ok)
		}
	}
	// A valid name without a mirror is 404 as well.
	rec := httptest.NewRecorder()
	m.ServeUploadPack(rec, httptest.NewRequest("GET", "/x/info/refs?service=git-upload-pack", nil), "acme/api")
	if rec.Code != http.StatusNotFound {
		t.Errorf("ServeUploadPack(not mirrored) = %d, want 404", rec.Code)
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
