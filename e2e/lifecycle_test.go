package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"github.com/airlock-run/airlock/internal/netpolicy/nettest"
	"github.com/airlock-run/airlock/internal/testenv"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
)

func TestSecretsReachTheStepButNeverTheLog(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t/value+with=specials&more"
	c := newCluster(t, clusterOpts{extraEnv: []string{"AIRLOCK_SECRET_API_KEY=" + secret}})
	c.startExecutor(1)

	spec := shellSpec(`
printf 'raw: %s\n' "$API_KEY"
printf 'b64: %s\n' "$(printf %s "$API_KEY" | base64 -w0)"
printf 'split: '; printf %s "$API_KEY" | head -c 7; sleep 0.4; printf %s "$API_KEY" | tail -c +8; echo
[ "$API_KEY" = '` + secret + `' ] && echo "the step saw the secret"`)
	spec.Secrets = []string{"API_KEY"}
	j := c.submit(spec)
	got := c.waitJob(j.ID, 30*time.Second)
	if got.State != job.StateSucceeded {
		t.Fatalf("job ended %s/%s: %s", got.State, got.Reason, got.Message)
	}
	log := c.logOf(j.ID)
	if !strings.Contains(log, "the step saw the secret") {
		t.Errorf("the secret was not injected:\n%s", log)
	}
	for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), url.QueryEscape(secret)} {
		if strings.Contains(log, form) {
			t.Errorf("log contains the secret in the form %q:\n%s", form, log)
		}
	}
	if n := strings.Count(log, "[REDACTED]"); n < 3 {
		t.Errorf("log has %d redactions, want at least 3:\n%s", n, log)
	}
}

func TestExecutorDrainsOnSIGTERM(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	exe := c.startExecutor(1, "--drain-timeout", "30s")
	started := filepath.Join(t.TempDir(), "started")

	running := c.submit(shellSpec(fmt.Sprintf(`echo x >> %s; sleep 1.5; echo finished`, started)))
	waitFile(t, started, 1, 30*time.Second)
	queued := c.submit(shellSpec(`echo "must not run on a draining executor"`))
	if err := exe.stop(30 * time.Second); err != nil {
		t.Fatalf("draining executor: %v\n%s", err, exe.out.String())
	}
	if got := c.waitJob(running.ID, 10*time.Second); got.State != job.StateSucceeded {
		t.Errorf("the running job ended %s/%s, want succeeded: a drain lets it finish", got.State, got.Reason)
	}
	if got, err := c.client.Get(context.Background(), queued.ID); err != nil || got.State != job.StateQueued {
		t.Errorf("the queued job is %v (%v), want still queued: a draining executor claims nothing", got.State, err)
	}
}

func TestSecondSignalCancelsRunningJobsAndTheyAreRetried(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	exe := c.startExecutor(1, "--drain-timeout", "5m")
	started := filepath.Join(t.TempDir(), "started")
	j := c.submit(shellSpec(fmt.Sprintf(`echo "$AIRLOCK_ATTEMPT" >> %s; [ "$AIRLOCK_ATTEMPT" -gt 1 ] || sleep 300`, started)))
	waitFile(t, started, 1, 30*time.Second)

	exe.cmd.Process.Signal(syscall.SIGTERM)
	exe.waitOutput(regexp.MustCompile(`draining`), 10*time.Second)
	exe.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exe.done:
	case <-time.After(30 * time.Second):
		t.Fatal("executor did not stop after a second signal")
	}
	// The drained attempt is a system outcome: the job goes back to the queue
	// and runs again on the next executor.
	c.startExecutor(1)
	got := c.waitJob(j.ID, 30*time.Second)
	if got.State != job.StateSucceeded || got.Attempt != 2 {
		t.Fatalf("job ended %s after %d attempts, want succeeded after 2", got.State, got.Attempt)
	}
	if r := got.Attempts[0].Reason; r != job.ReasonDrained {
		t.Errorf("first attempt ended %s, want drained", r)
	}
}

func TestUpRunsTheDemoJob(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, airlockBin, "up", "--runtime", "shell", "--addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--demo", "../examples/hello.yaml", "--exit-after-demo")
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("airlock up --demo: %v\n%s", err, out)
	}
	for _, want := range []string{"Airlock is up", "client token:", "hello from job 1", "tick 3", "job 1 succeeded"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if st, err := os.Stat(filepath.Join(dataDir, "client-token")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("client token file: %v, mode %v; want mode 0600", err, st.Mode().Perm())
	}
}

func TestUpRunsTheDemoInTheStrongestSandbox(t *testing.T) {
	if _, err := exec.LookPath("runsc"); err != nil {
		testenv.Missing(t, "runsc", err)
	}
	// The data directory must be reachable from the sandboxes' user
	// namespace (t.TempDir's parents are mode 0700).
	parent, err := os.MkdirTemp("", "airlock-e2e-up-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(parent, 0o755)
	defer os.RemoveAll(parent)
	// up creates the data directory itself, with the mode the sandboxes need.
	dataDir := filepath.Join(parent, "data")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// In an enclosed test network: the egress policy changes the network
	// namespace it runs in, which must not be this host's.
	w := nettest.New(t)
	cmd := w.Enclosure.Command(ctx, airlockBin, "up", "--addr", "127.0.0.1:0", "--data-dir", dataDir,
		"--demo", "../examples/hello.yaml", "--exit-after-demo", "--dns-resolver", nettest.ResolverAddr.String())
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("airlock up --demo: %v\n%s", err, out)
	}
	for _, want := range []string{"runtime:      gvisor (the strongest this host can run)",
		"==> image oci-layout:" + dataDir + "/images/busybox: sha256:", "hello from job 1", "tick 3", "job 1 succeeded"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestUpNeverFallsBackToTheShell(t *testing.T) {
	t.Parallel()
	// No isolating runtime can run: neither OCI runtime nor runsc exists.
	// (In an enclosed network all the same, in case one got that far.)
	w := nettest.New(t)
	cmd := w.Enclosure.Command(context.Background(), airlockBin, "up", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
		"--oci-runtime", "/nonexistent/crun", "--runsc", "/nonexistent/runsc")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("airlock up without a usable runtime started:\n%s", out)
	}
	for _, want := range []string{"no isolating sandbox runtime can run on this host", "gvisor:", "oci:", "--runtime shell"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the refusal lacks %q:\n%s", want, out)
		}
	}
}
