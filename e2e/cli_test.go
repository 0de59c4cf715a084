package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

func TestClientVerbsListShowLogRetryAndRefuse(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.startExecutor(2)

	out, stderr, code := c.cli("submit", "../examples/failing.yaml")
	if code != 0 || !strings.Contains(out, "queued") {
		t.Fatalf("submit: exit %d, %q %q", code, out, stderr)
	}
	id := strings.Fields(out)[1] // "job N queued on ..."
	n, _ := strconv.ParseInt(id, 10, 64)
	c.waitJob(n, 30*time.Second)

	out, _, code = c.cli("jobs", "--state", "failed")
	if code != 0 || !strings.Contains(out, "failed") || !strings.Contains(out, "exit_code") {
		t.Errorf("jobs --state failed: exit %d:\n%s", code, out)
	}
	out, _, code = c.cli("jobs", "--json")
	var list api.JobList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Jobs) != 1 {
		t.Errorf("jobs --json: exit %d, not one job in JSON:\n%s", code, out)
	}
	out, _, code = c.cli("show", id)
	if code != 0 || !strings.Contains(out, "broken") || !strings.Contains(out, "3") {
		t.Errorf("show: exit %d, does not list the failing step and its code:\n%s", code, out)
	}
	out, _, code = c.cli("logs", id)
	if code != 0 || !strings.Contains(out, "about to fail") {
		t.Errorf("logs: exit %d:\n%s", code, out)
	}
	out, _, code = c.cli("retry", id)
	if code != 0 || !strings.Contains(out, "queued") {
		t.Errorf("retry: exit %d:\n%s", code, out)
	}
	// Following the retried job streams its second attempt and mirrors its outcome.
	out, stderr, code = c.cli("logs", id, "-f")
	if code != 1 || !strings.Contains(out, "about to fail") {
		t.Errorf("logs -f of the retried job: exit %d, want 1:\n%s\n%s", code, out, stderr)
	}
	if j := c.waitJob(n, 30*time.Second); j.Attempt != 2 || j.State != job.StateFailed {
		t.Errorf("after retry: %s after %d attempts, want failed after 2", j.State, j.Attempt)
	}
	_, stderr, code = c.cli("cancel", id)
	if code != 2 || !strings.Contains(stderr, "job "+id) {
		t.Errorf("cancel of a finished job: exit %d, want 2: %s", code, stderr)
	}
	_, stderr, code = c.cli("show", "999999")
	if code != 2 || !strings.Contains(stderr, "not found") {
		t.Errorf("show of a missing job: exit %d, want 2: %s", code, stderr)
	}
	_, stderr, code = c.cli("show", "abc")
	if code != 2 || !strings.Contains(stderr, "not a job ID") {
		t.Errorf("show abc: exit %d, want 2: %s", code, stderr)
	}
	out, _, code = c.cli("executors")
	if code != 0 || !strings.Contains(out, "executor-1") || !strings.Contains(out, "shell") || !strings.Contains(out, "/2") {
		t.Errorf("executors: exit %d, does not show executor-1 with its runtime and capacity:\n%s", code, out)
	}
}

func TestClientWithoutATokenIsToldWhereToPutOne(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	cmd := []string{"jobs", "--url", c.url, "--token-file", "/nonexistent/token"}
	_, stderr, code := runCLIWithEnv(t, []string{"AIRLOCK_TOKEN="}, cmd...)
	if code != 2 || !strings.Contains(stderr, "AIRLOCK_TOKEN") {
		t.Errorf("exit %d, stderr %q; want 2 naming AIRLOCK_TOKEN", code, stderr)
	}
	_, stderr, code = runCLIWithEnv(t, []string{"AIRLOCK_TOKEN=alc_wrong-token-000000000000"}, cmd[:3]...)
	if code != 2 || !strings.Contains(stderr, "unauthorized") && !strings.Contains(stderr, "token") {
		t.Errorf("wrong token: exit %d, stderr %q; want 2 saying the token was refused", code, stderr)
	}
}

func TestExecutorValidateAndInstallReportEveryRuntime(t *testing.T) {
	t.Parallel()
	// validate of a runtime that cannot run exits 2 with what is missing.
	out, _, code := runCLIWithEnv(t, nil, "executor", "validate", "--runtime", "oci", "--work-dir", t.TempDir())
	if code != 2 || !strings.Contains(out, "NOT READY") || !strings.Contains(out, "MISSING") {
		t.Errorf("validate of oci under a mode-0700 work dir: exit %d, output:\n%s", code, out)
	}
	out, _, code = runCLIWithEnv(t, nil, "executor", "validate", "--json")
	if code != 0 {
		t.Fatalf("validate --json exited %d:\n%s", code, out)
	}
	for _, want := range []string{`"runtime": "gvisor"`, `"runtime": "oci"`, `"runtime": "shell"`, `"egress: nftables"`, `"overlayfs"`} {
		if !strings.Contains(out, want) {
			t.Errorf("validate --json lacks %s:\n%s", want, out)
		}
	}
	// install --dry-run changes nothing and says what it would do.
	out, errOut, code := runCLIWithEnv(t, nil, "executor", "install", "--dry-run")
	if code != 0 {
		t.Fatalf("install --dry-run exited %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(out, "packages: all installed") && !strings.Contains(out, "apt-get install") {
		t.Errorf("install --dry-run says nothing about packages:\n%s", out)
	}
	if !strings.Contains(out, "gvisor: runsc is installed and usable") && !strings.Contains(out, "gvisor.dev/gvisor/runsc@") {
		t.Errorf("install --dry-run says nothing about runsc:\n%s", out)
	}
}

func TestReposVerbsRegisterListShowAndRemove(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{extraEnv: []string{"AIRLOCK_SECRET_GIT_TOKEN=ghp_e2e-secret-token-value"}})
	out, errOut, code := c.cli("repos", "add", "acme/api", "https://git.example.com/acme/api.git", "--token-secret", "GIT_TOKEN")
	if code != 0 || !strings.Contains(out, "repository acme/api registered") {
		t.Fatalf("repos add: exit %d: %s%s", code, out, errOut)
	}
	if _, errOut, code := c.cli("repos", "add", "acme/bad", "https://git.example.com/x", "--token-secret", "NOT_CONFIGURED"); code != 2 ||
		!strings.Contains(errOut, "NOT_CONFIGURED") {
		t.Errorf("repos add with an unknown secret: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.cli("repos", "add", "acme/bad", "https://user:pw@git.example.com/x"); code != 2 || !strings.Contains(errOut, "url") {
		t.Errorf("repos add with credentials in the URL: exit %d: %s", code, errOut)
	}
	for _, args := range [][]string{{"repos", "list"}, {"repos", "show", "acme/api"}, {"repos", "list", "--json"}} {
		out, errOut, code := c.cli(args...)
		if code != 0 || !strings.Contains(out, "acme/api") || !strings.Contains(out, "GIT_TOKEN") || strings.Contains(out, "ghp_e2e-secret-token-value") {
			t.Errorf("%v: exit %d: %s%s", args, code, out, errOut)
		}
	}
	if out, errOut, code := c.cli("repos", "remove", "acme/api"); code != 0 || !strings.Contains(out, "removed") {
		t.Errorf("repos remove: exit %d: %s%s", code, out, errOut)
	}
	if _, _, code := c.cli("repos", "show", "acme/api"); code != 2 {
		t.Errorf("repos show after removal: exit %d, want 2", code)
	}
}
