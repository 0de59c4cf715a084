package e2e

// The harness builds bin/airlock once, then starts coordinators and executors
// as real processes with their own data directories, and tears every process
// it started down by PID.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

var airlockBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "airlock-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	airlockBin = filepath.Join(dir, "airlock")
	build := exec.Command("go", "build", "-o", airlockBin, "github.com/airlock-run/airlock/cmd/airlock")
	// Static, as shipped: the container runtimes run it as PID 1 in images.
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building airlock:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	clientToken   = "alc_e2e-client-token-0123456789abcdef"
	executorToken = "ale_e2e-executor-token-0123456789abcdef"
)

// proc is a started airlock process whose output is captured.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

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

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, name, exec.Command(airlockBin, args...), env)
}

// startCmd starts cmd, which runs airlock (directly, or through a wrapper
// that execs it, such as nsenter).
func startCmd(t *testing.T, name string, cmd *exec.Cmd, env []string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = cmd
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.out.String())
		}
	})
	return p
}

// kill stops the process with SIGKILL and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to d for a clean exit.
func (p *proc) stop(d time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.cmd.ProcessState.ExitCode() != 0 {
			return fmt.Errorf("%s exited with %d", p.name, p.cmd.ProcessState.ExitCode())
		}
		return nil
	case <-time.After(d):
		return fmt.Errorf("%s did not stop within %v", p.name, d)
	}
}

// waitOutput waits until the process output matches re, and returns the first submatch.
func (p *proc) waitOutput(re *regexp.Regexp, d time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited before printing %v:\n%s", p.name, re, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.t.Fatalf("%s did not print %v within %v:\n%s", p.name, re, d, p.out.String())
	return ""
}

// cluster is one coordinator and the executors attached to it.
type cluster struct {
	t       *testing.T
	dataDir string
	addr    string // host:port, fixed after the first start so restarts keep it
	url     string
	coord   *proc
	client  *api.Client
	opts    clusterOpts
	nexec   int
}

type clusterOpts struct {
	lease     time.Duration
	heartbeat time.Duration
	extraEnv  []string
}

func newCluster(t *testing.T, opts clusterOpts) *cluster {
	t.Helper()
	if opts.lease == 0 {
		opts.lease = 10 * time.Second
	}
	if opts.heartbeat == 0 {
		opts.heartbeat = 500 * time.Millisecond
	}
	c := &cluster{t: t, dataDir: t.TempDir(), addr: "127.0.0.1:0", opts: opts}
	c.startCoordinator()
	return c
}

var servingRE = regexp.MustCompile(`"coordinator serving" url=(https?://[0-9.:]+)`)

func (c *cluster) startCoordinator() {
	c.t.Helper()
	env := append([]string{
		"AIRLOCK_CLIENT_TOKENS=" + clientToken,
		"AIRLOCK_EXECUTOR_TOKENS=" + executorToken,
	}, c.opts.extraEnv...)
	c.coord = start(c.t, "coordinator", env, "coordinator",
		"--addr", c.addr, "--data-dir", c.dataDir,
		"--lease", c.opts.lease.String(), "--heartbeat-interval", c.opts.heartbeat.String(),
		"--claim-wait", "5s")
	c.url = c.coord.waitOutput(servingRE, 20*time.Second)
	c.addr = strings.TrimPrefix(c.url, "http://")
	c.client = api.NewClient(c.url, clientToken)
}

// startExecutor starts an executor process with the shell runtime.
func (c *cluster) startExecutor(maxJobs int, extra ...string) *proc {
	c.t.Helper()
	c.nexec++
	name := fmt.Sprintf("executor-%d", c.nexec)
	args := append([]string{"executor", "--url", c.url, "--runtime", "shell", "--name", name,
		"--work-dir", filepath.Join(c.dataDir, name), "--max-jobs", fmt.Sprint(maxJobs)}, extra...)
	return start(c.t, name, []string{"AIRLOCK_EXECUTOR_TOKEN=" + executorToken}, args...)
}

// cli runs a client verb against the cluster and returns its output and exit status.
func (c *cluster) cli(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, airlockBin, args...)
	cmd.Env = append(os.Environ(), "AIRLOCK_URL="+c.url, "AIRLOCK_TOKEN="+clientToken)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			c.t.Fatalf("running airlock %v: %v", args, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func (c *cluster) submit(spec job.Spec) *api.Job {
	c.t.Helper()
	j, err := c.client.Submit(context.Background(), spec)
	if err != nil {
		c.t.Fatalf("submitting: %v", err)
	}
	return j
}

// waitJob waits until job id is terminal and returns it.
func (c *cluster) waitJob(id int64, d time.Duration) *api.Job {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		j, err := c.client.Get(context.Background(), id)
		if err == nil && j.State.Terminal() {
			return j
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %d not finished within %v (last: %+v, err %v)", id, d, j, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *cluster) logOf(id int64) string {
	c.t.Helper()
	var b bytes.Buffer
	if _, err := c.client.Logs(context.Background(), id, api.LogOptions{}, &b); err != nil {
		c.t.Fatalf("reading log of job %d: %v", id, err)
	}
	return b.String()
}

// rawRequest sends an HTTP request with an optional bearer token and returns status and body.
func (c *cluster) rawRequest(method, path, token string, body io.Reader) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func shellSpec(steps ...string) job.Spec {
	s := job.Spec{Version: 1}
	for i, run := range steps {
		s.Steps = append(s.Steps, job.Step{Name: fmt.Sprintf("s%d", i+1), Run: run})
	}
	return s
}

// lines returns the non-empty lines of a file (empty if it does not exist).
func lines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// waitFile waits until path exists and holds at least n lines.
func waitFile(t *testing.T, path string, n int, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if l := lines(t, path); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d lines, want %d, after %v", path, len(lines(t, path)), n, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidAlive reports whether pid is a live (non-zombie) process.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndex(s, ")"); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// runCLIWithEnv runs the CLI with extra environment (later entries win).
func runCLIWithEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(airlockBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("running airlock %v: %v", args, err)
		}
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}
