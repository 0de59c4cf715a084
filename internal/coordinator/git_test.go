package coordinator

import (
	"bytes"
	"context"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/gitmirror"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/testenv"
)

// git runs git in dir, isolated from the machine's configuration.
func git(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0", "GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.com")
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), &gitErr{err: err, stderr: errb.String()}
	}
	return strings.TrimSpace(out.String()), nil
}

type gitErr struct {
	err    error
	stderr string
}

func (e *gitErr) Error() string { return e.err.Error() + ": " + e.stderr }

// upstreamRepo is a repository with two commits served over loopback HTTP
// by git http-backend; it returns the URL and the commits.
func upstreamRepo(t *testing.T) (url string, commits []string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "git", err)
	}
	execPath, err := git(t, t.TempDir(), nil, "--exec-path")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	work := filepath.Join(root, "work")
	os.Mkdir(work, 0o755)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "one"}} {
		if _, err := git(t, work, nil, args...); err != nil {
			t.Fatal(err)
		}
	}
	c1, _ := git(t, work, nil, "rev-parse", "HEAD")
	os.WriteFile(filepath.Join(work, "README"), []byte("hello\n"), 0o644)
	for _, args := range [][]string{{"add", "README"}, {"commit", "-q", "-m", "two"}, {"clone", "-q", "--bare", ".", filepath.Join(root, "upstream.git")}} {
		if _, err := git(t, work, nil, args...); err != nil {
			t.Fatal(err)
		}
	}
	c2, _ := git(t, work, nil, "rev-parse", "HEAD")
	srv := httptest.NewServer(&cgi.Handler{Path: filepath.Join(execPath, "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(srv.Close)
	return srv.URL + "/upstream.git", []string{c1, c2}
}

func TestExecutorsFetchTheirJobsRepositoryWithTheJobToken(t *testing.T) {
	t.Parallel()
	url, commits := upstreamRepo(t)
	mirrors, err := gitmirror.New(gitmirror.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, func(c *Config) { c.Mirrors = mirrors })
	ctx := context.Background()
	if _, err := e.client.PutRepository(ctx, job.Remote{Name: "acme/api", URL: url}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.PutRepository(ctx, job.Remote{Name: "acme/other", URL: url}); err != nil {
		t.Fatal(err)
	}
	spec := testSpec("default")
	spec.Repository = &job.Repository{Name: "acme/api", Commit: commits[0]}
	j := e.submit(spec)
	// The commit is prefetched at submit, before any executor asks.
	deadline := time.Now().Add(30 * time.Second)
	for {
		list, err := mirrors.List(ctx)
		if err == nil && len(list) == 1 && list[0].Name == "acme/api" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job's repository was not prefetched: %+v, %v", list, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := e.claim("exec-1", "default")
	base := e.ts.URL + api.Prefix + "/attempts/" + itoa(j.ID) + "/1/git/"
	auth := []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Bearer " + c.Token}

	// The job's repository, at the job's (older) commit, shallowly.
	dst := t.TempDir()
	if _, err := git(t, dst, auth, "init", "-q"); err != nil {
		t.Fatal(err)
	}
	if _, err := git(t, dst, auth, "fetch", "-q", "--depth", "1", base+"acme/api.git", commits[0]); err != nil {
		t.Fatalf("fetching the job's commit through the coordinator: %v", err)
	}
	if got, _ := git(t, dst, nil, "rev-parse", "FETCH_HEAD"); got != commits[0] {
		t.Errorf("fetched %s, want %s", got, commits[0])
	}
	// The token serves that repository only, and only reads.
	if _, err := git(t, dst, auth, "fetch", "-q", base+"acme/other.git", commits[0]); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("fetching another repository with the job's token: %v, want 403", err)
	}
	if _, err := git(t, dst, auth, "push", "-q", base+"acme/api.git", "FETCH_HEAD:refs/heads/x"); err == nil {
		t.Error("a push through the coordinator succeeded")
	}
	if _, err := git(t, dst, nil, "fetch", "-q", base+"acme/api.git", commits[0]); err == nil ||
		!strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "could not read Username") {
		t.Errorf("a fetch without the token: %v, want 401", err)
	}
	// Once the attempt ends, its token is dead.
	if _, err := e.exec.Finish(ctx, c.Token, queue.AttemptRef{JobID: j.ID, Attempt: 1}, api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
		t.Fatal(err)
	}
	// (A 401 makes git ask for a username, which it may not.)
	if _, err := git(t, dst, auth, "fetch", "-q", base+"acme/api.git", commits[0]); err == nil ||
		!strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "could not read Username") {
		t.Errorf("fetching after the attempt ended: %v, want 401", err)
	}

	// A commit the remote lacks: the fetch fails at once, as git reports a
	// missing object.
	missing := strings.Repeat("0", 39) + "1"
	spec.Repository.Commit = missing
	j2 := e.submit(spec)
	c2 := e.claim("exec-1", "default")
	auth2 := []string{"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Bearer " + c2.Token}
	_, err = git(t, dst, auth2, "fetch", "-q", "--depth", "1", e.ts.URL+api.Prefix+"/attempts/"+itoa(j2.ID)+"/1/git/acme/api.git", missing)
	if err == nil || !strings.Contains(err.Error(), "not our ref") {
		t.Errorf("fetching a commit the remote lacks: %v, want git's \"not our ref\"", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
