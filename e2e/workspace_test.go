package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/testenv"
)

// gitUpstream is a repository with two commits served over loopback HTTP by
// git http-backend, standing in for a real remote; it returns its URL and
// commits.
func gitUpstream(t *testing.T) (url string, commits []string) {
	t.Helper()
	h, commits := gitBackend(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/upstream.git", commits
}

// gitBackend is a repository, upstream.git, and a git http-backend handler
// serving it (and any other repository beside it). Its commits: one (README
// "first version", src/, docs/; annotated tag v1), two (README "second
// version"; tag v2), both on main, and three (FEATURE) only on branch
// feature.
func gitBackend(t *testing.T) (http.Handler, []string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "git", err)
	}
	root := t.TempDir()
	work := filepath.Join(root, "work")
	os.Mkdir(work, 0o755)
	run := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "HOME="+root, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=T", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=T", "GIT_COMMITTER_EMAIL=t@example.com")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	run("init", "-q", "-b", "main")
	for name, content := range map[string]string{"README": "first version\n", "src/main.go": "package main\n", "docs/guide.md": "# Guide\n"} {
		os.MkdirAll(filepath.Dir(filepath.Join(work, name)), 0o755)
		os.WriteFile(filepath.Join(work, name), []byte(content), 0o644)
	}
	run("add", ".")
	run("commit", "-q", "-m", "one")
	c1 := run("rev-parse", "HEAD")
	run("tag", "-a", "-m", "release one", "v1")
	os.WriteFile(filepath.Join(work, "README"), []byte("second version\n"), 0o644)
	run("commit", "-q", "-am", "two")
	c2 := run("rev-parse", "HEAD")
	run("tag", "v2")
	// A commit only on a branch.
	run("checkout", "-q", "-b", "feature")
	os.WriteFile(filepath.Join(work, "FEATURE"), []byte("feature work\n"), 0o644)
	run("add", "FEATURE")
	run("commit", "-q", "-m", "three")
	c3 := run("rev-parse", "HEAD")
	run("clone", "-q", "--bare", "--no-local", ".", filepath.Join(root, "upstream.git"))
	run("--git-dir", filepath.Join(root, "upstream.git"), "fetch", "-q", ".", "+refs/heads/*:refs/heads/*")
	execPath := run("--exec-path")
	return &cgi.Handler{Path: filepath.Join(execPath, "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}, []string{c1, c2, c3}
}

func TestAJobStartsWithItsRepositoryAtItsCommit(t *testing.T) {
	t.Parallel()
	url, commits := gitUpstream(t)
	c := newCluster(t, clusterOpts{})
	c.startExecutor(2)
	if out, errOut, code := c.cli("repos", "add", "acme/api", url); code != 0 {
		t.Fatalf("repos add: %d %s%s", code, out, errOut)
	}

	// The older commit, so that a checkout of the branch tip would show.
	spec := shellSpec(`git log -1 --format=commit=%H; cat README; echo "--- .git/config"; cat .git/config; echo "--- env"; env`)
	spec.Repository = &job.Repository{Name: "acme/api", Commit: commits[0]}
	j := c.submit(spec)
	got := c.waitJob(j.ID, time.Minute)
	log := c.logOf(j.ID)
	if got.State != job.StateSucceeded {
		t.Fatalf("job ended %s/%s (%s):\n%s", got.State, got.Reason, got.Message, log)
	}
	for _, want := range []string{"commit=" + commits[0], "first version", "==> checked out acme/api at " + commits[0]} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// The attempt's job token is nowhere the step could read it.
	for _, leak := range []string{"alj_", "Bearer", "extraHeader"} {
		if strings.Contains(log, leak) {
			t.Errorf("the step could read %q:\n%s", leak, log)
		}
	}

	// A commit the remote lacks fails the job, once, saying so.
	spec.Repository.Commit = strings.Repeat("0", 39) + "1"
	j = c.submit(spec)
	got = c.waitJob(j.ID, time.Minute)
	if got.State != job.StateFailed || got.Reason != job.ReasonCheckout || !strings.Contains(got.Message, "has no commit "+spec.Repository.Commit) {
		t.Errorf("a missing commit: job ended %s/%s (%s), want failed/checkout", got.State, got.Reason, got.Message)
	}
}

func TestArtifactsComeBackWithTheirModes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(1)
	spec := shellSpec(`mkdir -p out/sub logs; echo report > out/report.txt; printf '#!/bin/sh\necho hi\n' > out/sub/run.sh
chmod 755 out/sub/run.sh; echo noise > logs/debug.log; ln -s /etc/passwd out/escape`)
	spec.Artifacts = []string{"out/**", "missing/*.txt"}
	j := c.submit(spec)
	got := c.waitJob(j.ID, time.Minute)
	log := c.logOf(j.ID)
	if got.State != job.StateSucceeded {
		t.Fatalf("job ended %s/%s (%s):\n%s", got.State, got.Reason, got.Message, log)
	}
	for _, want := range []string{`artifacts: "missing/*.txt" matched nothing`, "skipped out/escape", "uploaded 2 artifact files"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	out, errOut, code := c.cli("artifacts", fmt.Sprint(j.ID))
	if code != 0 || !strings.Contains(out, "ATTEMPT") || !strings.Contains(out, "\n1 ") {
		t.Fatalf("artifacts list: exit %d: %s%s", code, out, errOut)
	}
	dir := t.TempDir()
	if out, errOut, code := c.cli("artifacts", fmt.Sprint(j.ID), "--extract", dir); code != 0 || !strings.Contains(out, "extracted 2 files") {
		t.Fatalf("artifacts --extract: exit %d: %s%s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out/report.txt")); err != nil || string(b) != "report\n" {
		t.Errorf("out/report.txt: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "out/sub/run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("out/sub/run.sh: %v, %v; want mode 0755", fi, err)
	}
	for _, absent := range []string{"logs/debug.log", "out/escape"} {
		if _, err := os.Lstat(filepath.Join(dir, absent)); !os.IsNotExist(err) {
			t.Errorf("%s was collected (%v)", absent, err)
		}
	}
	if _, _, code := c.cli("artifacts", fmt.Sprint(j.ID), "--attempt", "7", "-o", filepath.Join(dir, "x.tgz")); code != 2 {
		t.Errorf("artifacts of an attempt without any: exit %d, want 2", code)
	}
}

func TestUploadedJobFilesArriveWithTheirModesAndTimes(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(1)
	dir := t.TempDir()
	mtime := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tool := write("tool.sh", "#!/bin/sh\necho tool ran\n", 0o750)
	write("data/a.txt", "alpha\n", 0o640)
	write("data/deep/b.txt", "beta\n", 0o604)
	specPath := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(specPath, []byte(`steps:
  - run: |
      ./bin/tool; cat input/a.txt input/deep/b.txt
      stat -c '%n %a %Y' bin/tool input/a.txt input/deep/b.txt
`), 0o644); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := c.cli("submit", specPath, "--file", tool+":bin/tool", "--file", filepath.Join(dir, "data")+":input", "-f")
	if code != 0 {
		t.Fatalf("submit --file: exit %d:\n%s%s", code, out, errOut)
	}
	if n := strings.Count(errOut, "uploaded "); n != 3 {
		t.Errorf("first submit uploaded %d files, want 3:\n%s", n, errOut)
	}
	want := fmt.Sprintf("tool ran\nalpha\nbeta\nbin/tool 750 %[1]d\ninput/a.txt 640 %[1]d\ninput/deep/b.txt 604 %[1]d\n", mtime.Unix())
	if !strings.Contains(out, want) {
		t.Errorf("job output lacks %q:\n%s", want, out)
	}

	// The same files again: nothing is sent twice.
	out, errOut, code = c.cli("submit", specPath, "--file", tool+":bin/tool", "--file", filepath.Join(dir, "data")+":input", "-f")
	if code != 0 || strings.Contains(errOut, "uploaded ") || !strings.Contains(out, want) {
		t.Errorf("second submit: exit %d, want 0, no upload and the same output:\n%s%s", code, out, errOut)
	}

	// A spec naming a file nobody uploaded is refused at submit, by field.
	missing := "sha256:" + strings.Repeat("0", 64)
	spec := shellSpec("true")
	spec.Files = map[string]job.File{"x": {Blob: missing}}
	_, err := c.client.Submit(context.Background(), spec)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != 422 || se.Err.Field != "files.x.blob" || !strings.Contains(se.Err.Message, "has not been uploaded") {
		t.Errorf("submitting a spec naming a missing upload: %v, want 422 on files.x.blob", err)
	}
	// A path escaping the workspace is refused before anything is sent.
	if _, errOut, code := c.cli("submit", specPath, "--file", tool+":../outside"); code != 2 || !strings.Contains(errOut, "escapes") {
		t.Errorf("--file to ../outside: exit %d, want 2 naming the escape:\n%s", code, errOut)
	}
}

func TestArtifactsAfterAFailureWhenTheSpecAsks(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(2)
	ctx := context.Background()
	submit := func(when job.ArtifactsWhen, timeout time.Duration, run string) *api.Job {
		spec := shellSpec(run)
		spec.Artifacts = []string{"out/*"}
		spec.ArtifactsWhen = when
		spec.Timeout = job.Duration(timeout)
		return c.submit(spec)
	}
	exits := submit(job.ArtifactsOnFailure, 0, "mkdir out; echo crash dump > out/core.txt; exit 3")
	timesOut := submit(job.ArtifactsAlways, 2*time.Second, "mkdir out; echo partial > out/partial.txt; sleep 60")
	byDefault := submit("", 0, "mkdir out; echo kept? > out/x.txt; exit 1")
	onlyOnFailure := submit(job.ArtifactsOnFailure, 0, "mkdir out; echo fine > out/x.txt")

	for _, tc := range []struct {
		j          *api.Job
		state      job.State
		reason     job.Reason
		artifacts  bool
		logPattern string
	}{
		{exits, job.StateFailed, job.ReasonExitCode, true, "collecting artifacts after the failure (artifactsWhen: failure)"},
		{timesOut, job.StateFailed, job.ReasonJobTimeout, true, "uploaded 1 artifact files"},
		{byDefault, job.StateFailed, job.ReasonExitCode, false, ""},
		{onlyOnFailure, job.StateSucceeded, job.ReasonSuccess, false, ""},
	} {
		got := c.waitJob(tc.j.ID, time.Minute)
		log := c.logOf(tc.j.ID)
		if got.State != tc.state || got.Reason != tc.reason {
			t.Errorf("job %d ended %s/%s, want %s/%s:\n%s", tc.j.ID, got.State, got.Reason, tc.state, tc.reason, log)
		}
		list, err := c.client.Artifacts(ctx, tc.j.ID)
		if err != nil {
			t.Fatal(err)
		}
		if has := len(list.Artifacts) > 0; has != tc.artifacts {
			t.Errorf("job %d: artifacts kept = %v, want %v:\n%s", tc.j.ID, has, tc.artifacts, log)
		}
		if tc.logPattern != "" && !strings.Contains(log, tc.logPattern) {
			t.Errorf("job %d log lacks %q:\n%s", tc.j.ID, tc.logPattern, log)
		}
	}
	dir := t.TempDir()
	if out, errOut, code := c.cli("artifacts", fmt.Sprint(exits.ID), "--extract", dir); code != 0 {
		t.Fatalf("artifacts --extract: exit %d: %s%s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out/core.txt")); err != nil || string(b) != "crash dump\n" {
		t.Errorf("out/core.txt of the failed job: %q, %v", b, err)
	}
}

func TestEveryCheckoutOptionThroughTheCoordinator(t *testing.T) {
	t.Parallel()
	url, commits := gitUpstream(t)
	c := newCluster(t, clusterOpts{})
	c.startExecutor(3)
	if out, errOut, code := c.cli("repos", "add", "acme/api", url); code != 0 {
		t.Fatalf("repos add: %d %s%s", code, out, errOut)
	}
	show := `echo "commits=$(git rev-list --count HEAD)"; echo "tags=$(git tag | tr '\n' ' ')"; echo "files=$(ls | tr '\n' ' ')"; ` +
		`echo "head=$(git rev-parse HEAD)"; echo "remote=$(git config remote.origin.url)"`
	no := false
	cases := []struct {
		name string
		repo job.Repository
		want []string
	}{
		{"shallow by default", job.Repository{Commit: commits[1]},
			[]string{"commits=1\n", "tags=\n", "files=README docs src \n", "head=" + commits[1]}},
		{"full history", job.Repository{Commit: commits[1], Shallow: &no},
			[]string{"commits=2\n", "tags=\n"}},
		{"with tags", job.Repository{Commit: commits[1], Shallow: &no, FetchTags: true},
			[]string{"commits=2\n", "tags=v1 v2 \n"}},
		{"sparse", job.Repository{Commit: commits[1], Sparse: []string{"src"}},
			[]string{"files=README src \n"}},
		{"a commit only on a branch", job.Repository{Commit: commits[2]},
			[]string{"files=FEATURE README docs src \n", "head=" + commits[2]}},
	}
	jobs := make([]*api.Job, len(cases))
	for i, tc := range cases {
		spec := shellSpec(show)
		tc.repo.Name = "acme/api"
		spec.Repository = &tc.repo
		jobs[i] = c.submit(spec)
	}
	for i, tc := range cases {
		got := c.waitJob(jobs[i].ID, time.Minute)
		log := c.logOf(got.ID)
		if got.State != job.StateSucceeded {
			t.Errorf("%s: job ended %s/%s (%s):\n%s", tc.name, got.State, got.Reason, got.Message, log)
			continue
		}
		for _, w := range append(tc.want, "remote="+c.url+"/api/v1/attempts/") {
			if !strings.Contains(log, w) {
				t.Errorf("%s: log lacks %q:\n%s", tc.name, w, log)
			}
		}
	}
}
