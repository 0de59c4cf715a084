package checkout

// Test fixtures: repositories generated with git fast-import, served over
// smart HTTP by git http-backend (through net/http/cgi) on a loopback
// listener that plays the coordinator's git endpoint, bearer token included.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/airlock-run/airlock/internal/testenv"
)

// requireGit ends the test when git or git http-backend is missing.
func requireGit(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		testenv.Missing(t, "git", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		testenv.Missing(t, "git http-backend", err)
	}
	return backend
}

// testGitEnv is the environment of the tests' own git commands: no host
// configuration, fixed identities.
func testGitEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=/nonexistent",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com",
		"LC_ALL=C",
	}
}

// gitOut runs git in dir and returns its trimmed output.
func gitOut(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := gitErr(dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func gitErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = testGitEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s in %s: %v: %s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// genOpts shape a generated repository.
type genOpts struct {
	Commits  int
	Files    int // files the commits rewrite in turn, spread over directories
	FileSize int // bytes of pseudo-random content per rewrite
	// TagEvery tags every n-th commit v<n> (annotated) and l<n>
	// (lightweight); zero means no tags.
	TagEvery int
	// Extra are files added by the first commit: path → content; a
	// content starting with "gitlink:" makes a submodule entry.
	Extra map[string]string
}

// genRepo creates a bare repository at dir with main holding opts.Commits
// commits, and returns the commits oldest first. The files are
// dir<i%4>/sub<i%2>/f<i>.bin plus top.txt.
func genRepo(t testing.TB, dir string, opts genOpts) []string {
	t.Helper()
	gitOut(t, "", "init", "--quiet", "--bare", dir)
	gitOut(t, dir, "config", "uploadpack.allowAnySHA1InWant", "true")
	gitOut(t, dir, "symbolic-ref", "HEAD", "refs/heads/main")
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = dir
	cmd.Env = testGitEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	content := make([]byte, opts.FileSize)
	data := func(b []byte) {
		fmt.Fprintf(w, "data %d\n", len(b))
		w.Write(b)
		w.WriteString("\n")
	}
	for i := range opts.Commits {
		fmt.Fprintf(w, "commit refs/heads/main\nmark :%d\ncommitter Test <test@example.com> %d +0000\n", i+1, 1700000000+i*60)
		data([]byte(fmt.Sprintf("commit %d\n", i)))
		if i > 0 {
			fmt.Fprintf(w, "from :%d\n", i)
		} else {
			fmt.Fprintf(w, "M 100644 inline top.txt\n")
			data([]byte("top\n"))
			for p, c := range opts.Extra {
				if sha, ok := strings.CutPrefix(c, "gitlink:"); ok {
					fmt.Fprintf(w, "M 160000 %s %s\n", sha, p)
					continue
				}
				fmt.Fprintf(w, "M 100644 inline %s\n", p)
				data([]byte(c))
			}
		}
		// The first commit creates every file; later ones rewrite one.
		first, last := i%opts.Files, i%opts.Files+1
		if i == 0 {
			first, last = 0, opts.Files
		}
		for f := first; f < last; f++ {
			for j := range content {
				content[j] = byte(rng.Uint32())
			}
			fmt.Fprintf(w, "M 100644 inline dir%d/sub%d/f%d.bin\n", f%4, f%2, f)
			data(content)
		}
		if opts.TagEvery > 0 && i%opts.TagEvery == 0 {
			fmt.Fprintf(w, "tag v%d\nfrom :%d\ntagger Test <test@example.com> %d +0000\n", i, i+1, 1700000000+i*60)
			data([]byte(fmt.Sprintf("v%d\n", i)))
			fmt.Fprintf(w, "reset refs/tags/l%d\nfrom :%d\n\n", i, i+1)
		}
	}
	w.WriteString("done\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("git fast-import: %v: %s", err, stderr.String())
	}
	return strings.Fields(gitOut(t, dir, "rev-list", "--reverse", "main"))
}

// server is a smart-HTTP git server for the repositories under root.
type server struct {
	*httptest.Server
	root  string
	token string // required as a bearer token when set

	mu       sync.Mutex
	sessions map[string]int // GET info/refs per repository
	headers  []http.Header
	hold     chan struct{} // when set, requests wait for it to close
}

func newServer(t testing.TB, token string) *server {
	t.Helper()
	backend := requireGit(t)
	s := &server{root: t.TempDir(), token: token, sessions: make(map[string]int)}
	cgiHandler := &cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + s.root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"HOME=/nonexistent",
		},
		Stderr: io.Discard,
	}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		if strings.HasSuffix(r.URL.Path, "/info/refs") {
			s.sessions[strings.TrimSuffix(r.URL.Path, "/info/refs")]++
		}
		hold := s.hold
		s.mu.Unlock()
		if hold != nil {
			<-hold
		}
		if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
			w.Header().Set("WWW-Authenticate", `Bearer realm="airlock"`)
			http.Error(w, "job token required", http.StatusUnauthorized)
			return
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// repo generates a repository called name on the server and returns its
// URL and commits.
func (s *server) repo(t testing.TB, name string, opts genOpts) (string, []string) {
	t.Helper()
	commits := genRepo(t, filepath.Join(s.root, name), opts)
	return s.URL + "/" + name, commits
}

// sessionCount returns how many fetches asked for repository name.
func (s *server) sessionCount(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions["/"+name]
}
