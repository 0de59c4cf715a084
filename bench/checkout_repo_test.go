package bench

// The repository BenchmarkCheckoutThroughCoordinator checks out: generated
// with git fast-import from a deterministic stream, kept between runs in a
// cache directory under a name that spells its shape, and served as the
// coordinator's upstream by git http-backend on a loopback listener.
//
// Every file version is pseudo-random bytes, so nothing deltifies or
// compresses: the packed history is about Commits × FileSize bytes, and
// what a clone moves is what the repository holds.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/testenv"
)

// repoShape is what a generated repository holds.
type repoShape struct {
	Commits  int // on main, each after the first rewriting one file
	Files    int // at the tip, created by the first commit
	FileSize int // bytes of every file version
}

// name is the repository's directory name in the cache; a change to the
// generator that changes its output must change the "v1".
func (s repoShape) name() string {
	return fmt.Sprintf("checkout-v1-c%d-f%d-s%d.git", s.Commits, s.Files, s.FileSize)
}

func (s repoShape) validate() error {
	if s.Commits < 1 || s.Files < 1 || s.FileSize < 0 {
		return fmt.Errorf("repository shape %+v: want at least one commit and one file", s)
	}
	return nil
}

// genRepo is a generated bare repository.
type genRepo struct {
	root    string // the directory holding it, served as GIT_PROJECT_ROOT
	name    string // its directory name under root
	tip     string // main's commit
	commits int    // commits reachable from the tip
	bytes   int64  // its size on disk
}

// cachedRepo returns the repository of shape s in cacheDir, generating it
// there first unless an earlier run did. With cacheDir "" or not writable it
// generates into a temporary directory removed when tb ends.
func cachedRepo(tb testing.TB, cacheDir string, s repoShape) genRepo {
	tb.Helper()
	if err := s.validate(); err != nil {
		tb.Fatal(err)
	}
	if cacheDir != "" {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			tb.Logf("repository cache %s unusable, generating into a temporary directory: %v", cacheDir, err)
			cacheDir = ""
		}
	}
	if cacheDir == "" {
		cacheDir = tb.TempDir()
	}
	r := genRepo{root: cacheDir, name: s.name()}
	dir := filepath.Join(cacheDir, r.name)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		// Generate beside it and rename into place: a repository under its
		// final name is always complete, and two runs racing both finish.
		tmp, err := os.MkdirTemp(cacheDir, ".gen-")
		if err != nil {
			tb.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		if err := generateRepo(filepath.Join(tmp, "repo.git"), s); err != nil {
			tb.Fatal(err)
		}
		if err := os.Rename(filepath.Join(tmp, "repo.git"), dir); err != nil {
			if _, serr := os.Stat(dir); serr != nil {
				tb.Fatal(err)
			}
		}
	} else if err != nil {
		tb.Fatal(err)
	}
	var err error
	if r.tip, err = benchGit(dir, nil, "rev-parse", "--verify", "refs/heads/main^{commit}"); err != nil {
		tb.Fatal(err)
	}
	count, err := benchGit(dir, nil, "rev-list", "--count", "refs/heads/main")
	if err != nil {
		tb.Fatal(err)
	}
	if r.commits, err = strconv.Atoi(count); err != nil {
		tb.Fatalf("counting commits: %v", err)
	}
	if r.commits != s.Commits {
		tb.Fatalf("%s holds %d commits, want %d: remove it to regenerate", dir, r.commits, s.Commits)
	}
	if r.bytes, err = treeSize(dir); err != nil {
		tb.Fatal(err)
	}
	return r
}

// generateRepo creates a bare repository at dir holding s on main. Commit
// i > 0 rewrites file i mod Files; the first creates them all. The files
// are d<f%8>/f<f>.bin, so the tip tree has directories too.
func generateRepo(dir string, s repoShape) error {
	if _, err := benchGit("", nil, "init", "--quiet", "--bare", dir); err != nil {
		return err
	}
	for _, kv := range [][]string{
		{"symbolic-ref", "HEAD", "refs/heads/main"},
		// As a hosting service would: the mirror may fetch a commit by id.
		{"config", "uploadpack.allowAnySHA1InWant", "true"},
	} {
		if _, err := benchGit(dir, nil, kv...); err != nil {
			return err
		}
	}
	cmd := exec.Command("git", "fast-import", "--quiet", "--done")
	cmd.Dir = dir
	cmd.Env = benchGitEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting git fast-import: %w", err)
	}
	werr := writeStream(in, s)
	in.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git fast-import: %v: %s", err, stderr.String())
	}
	if werr != nil {
		return fmt.Errorf("writing to git fast-import: %w", werr)
	}
	return nil
}

// writeStream writes the fast-import stream of s to w.
func writeStream(w io.Writer, s repoShape) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	rng := rand.NewChaCha8([32]byte{'a', 'i', 'r', 'l', 'o', 'c', 'k'})
	content := make([]byte, s.FileSize)
	data := func(b []byte) {
		fmt.Fprintf(bw, "data %d\n", len(b))
		bw.Write(b)
		bw.WriteByte('\n')
	}
	for i := range s.Commits {
		fmt.Fprintf(bw, "commit refs/heads/main\nmark :%d\ncommitter Bench <bench@example.com> %d +0000\n", i+1, 1700000000+i*60)
		data(fmt.Appendf(nil, "commit %d\n", i))
		first, last := i%s.Files, i%s.Files+1
		if i == 0 {
			first, last = 0, s.Files
			fmt.Fprintf(bw, "M 100644 inline README\n")
			data([]byte("a generated repository for BenchmarkCheckoutThroughCoordinator\n"))
		} else {
			fmt.Fprintf(bw, "from :%d\n", i)
		}
		for f := first; f < last; f++ {
			rng.Read(content)
			fmt.Fprintf(bw, "M 100644 inline d%d/f%d.bin\n", f%8, f)
			data(content)
		}
	}
	bw.WriteString("done\n")
	return bw.Flush()
}

// serveRepos serves the bare repositories under root read-only over git's
// smart HTTP protocol (git http-backend) on a loopback listener, and returns
// its URL.
func serveRepos(tb testing.TB, root string) string {
	tb.Helper()
	execPath, err := benchGit("", nil, "--exec-path")
	if err != nil {
		tb.Fatal(err)
	}
	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		testenv.Missing(tb, "git http-backend", err)
	}
	srv := httptest.NewServer(&cgi.Handler{
		Path: backend,
		Env: []string{
			"GIT_PROJECT_ROOT=" + root,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
			"GIT_CONFIG_GLOBAL=/dev/null",
			"HOME=/nonexistent",
		},
		Stderr: io.Discard,
	})
	tb.Cleanup(srv.Close)
	return srv.URL
}

// benchGitEnv is the environment of the benchmark's own git commands: no
// host configuration, no prompts, fixed identities.
func benchGitEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=/nonexistent",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=Bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=Bench", "GIT_COMMITTER_EMAIL=bench@example.com",
		"LC_ALL=C",
	}
}

// benchGit runs git in dir (the current directory if "") with benchGitEnv
// plus env, and returns its trimmed output.
func benchGit(dir string, env []string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(benchGitEnv(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// treeSize is the total size of the regular files under dir.
func treeSize(dir string) (int64, error) {
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
