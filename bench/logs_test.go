package bench

// Log throughput: one step prints -log.bytes (1 GB) of text lines through a
// real executor process (shell runtime) into a real coordinator process, over
// loopback, into SQLite.
//
// The rate is the log's size over the time between the job going running
// (its StartedAt, stamped by the coordinator at claim) and succeeded (its
// FinishedAt): it covers the step itself, the executor's redaction and
// chunking, every append request, the store's writes, the final flush and the
// report. While the job runs, /proc/PID/status of both processes is read
// every 50 ms for VmRSS; VmHWM (the kernel's own peak) is read at the end.
// The step's processes (sh, yes, head) are the executor's children and are
// not counted in its memory.
//
// Afterwards the whole stored log is read back through the API and checked
// byte by byte: the executor's header lines, exactly -log.bytes of the step's
// output in order, and its footer lines, so nothing was lost, duplicated or
// capped.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

// logLine is the line the step repeats; the last one is cut wherever
// -log.bytes ends.
const logLine = "airlock log throughput line of text 0123456789\n"

// rssInterval is how often the processes' resident memory is sampled.
const rssInterval = 50 * time.Millisecond

// BenchmarkLogThroughput1GB builds the airlock binary, starts a coordinator
// and an executor as processes and runs one job per iteration whose step
// prints -log.bytes bytes. It reports MB/s (10^6 bytes), the executor's and
// the coordinator's peak resident memory in MB, and the CPU each used.
//
//	go test -run '^$' -bench LogThroughput1GB -benchtime 1x -timeout 30m ./bench/
func BenchmarkLogThroughput1GB(b *testing.B) {
	bin := buildAirlock(b)
	dir := b.TempDir()
	n := *logBytes
	limit := max(int64(2<<30), 2*n) // keep the whole log: nothing may be capped

	coord := startProcess(b, "coordinator", bin,
		[]string{"AIRLOCK_CLIENT_TOKENS=" + clientToken, "AIRLOCK_EXECUTOR_TOKENS=" + executorToken},
		"coordinator", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data"),
		"--log-limit", strconv.FormatInt(limit, 10))
	url := coord.await(b, regexp.MustCompile(`coordinator serving"? url=(\S+)`), 30*time.Second)
	execp := startProcess(b, "executor", bin,
		[]string{"AIRLOCK_EXECUTOR_TOKEN=" + executorToken},
		"executor", "--url", url, "--runtime", "shell", "--work-dir", filepath.Join(dir, "work"), "--max-jobs", "1")
	client := api.NewClient(url, clientToken)
	ctx := context.Background()

	spec := job.Spec{Steps: []job.Step{{
		Name: "print",
		Run:  fmt.Sprintf("yes '%s' | head -c %d", strings.TrimSuffix(logLine, "\n"), n),
	}}}

	var (
		running         time.Duration // job running → succeeded, summed
		stepTime        time.Duration // the step alone, summed
		readTime        time.Duration // reading the log back, summed
		execRSS, coRSS  int64         // peak VmRSS seen, bytes
		execCPU, coCPU  time.Duration
		printed, stored int64
		appends         requestStats // log appends, as the coordinator timed them
	)
	for b.Loop() {
		execCPU0, coCPU0 := execp.cpu(b), coord.cpu(b)
		appends0 := routeStats(ctx, b, url, appendRoute)
		stop := sampleRSS(b, execp.pid(), coord.pid())
		j, err := client.Submit(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		j = awaitTerminal(ctx, b, client, j.ID, 30*time.Minute)
		peaks := stop()
		execRSS, coRSS = max(execRSS, peaks[0]), max(coRSS, peaks[1])
		execCPU += execp.cpu(b) - execCPU0
		coCPU += coord.cpu(b) - coCPU0
		appends1 := routeStats(ctx, b, url, appendRoute)
		appends.count += appends1.count - appends0.count
		appends.seconds += appends1.seconds - appends0.seconds
		if j.State != job.StateSucceeded {
			b.Fatalf("job %d ended %s (%s): %s", j.ID, j.State, j.Reason, j.Message)
		}
		if j.StartedAt == nil || j.FinishedAt == nil || len(j.Attempts) != 1 || len(j.Attempts[0].Steps) != 1 {
			b.Fatalf("job %d: want start and finish times and one attempt of one step, got %+v", j.ID, j)
		}
		running += j.FinishedAt.Sub(*j.StartedAt)
		stepTime += j.Attempts[0].Steps[0].Duration
		printed += n

		b.StopTimer()
		start := time.Now()
		v := &logVerifier{want: n}
		size, err := client.Logs(ctx, j.ID, api.LogOptions{Attempt: 1}, v)
		if err != nil {
			b.Fatal(err)
		}
		readTime += time.Since(start)
		if err := v.check(); err != nil {
			b.Fatalf("log of job %d: %v", j.ID, err)
		}
		if got := j.Attempts[0].LogSize; got != size || got != v.header+n+v.footer {
			b.Fatalf("log of job %d: stored size %d, read %d, want %d header + %d output + %d footer bytes",
				j.ID, got, size, v.header, n, v.footer)
		}
		stored += size
		b.StartTimer()
	}
	mb := func(bytes int64) float64 { return float64(bytes) / 1e6 }
	b.ReportMetric(mb(printed)/running.Seconds(), "MB/s")
	b.ReportMetric(mb(printed)/stepTime.Seconds(), "step-MB/s")
	b.ReportMetric(mb(stored)/readTime.Seconds(), "read-MB/s")
	b.ReportMetric(running.Seconds()/float64(b.N), "run-s")
	b.ReportMetric(mb(execRSS), "exec-peak-rss-MB")
	b.ReportMetric(mb(execp.hwm(b)), "exec-hwm-MB")
	b.ReportMetric(mb(coRSS), "coord-peak-rss-MB")
	b.ReportMetric(mb(coord.hwm(b)), "coord-hwm-MB")
	b.ReportMetric(execCPU.Seconds()/float64(b.N), "exec-cpu-s")
	b.ReportMetric(coCPU.Seconds()/float64(b.N), "coord-cpu-s")
	if appends.count > 0 {
		b.ReportMetric(appends.count/float64(b.N), "appends")
		b.ReportMetric(1000*appends.seconds/appends.count, "append-ms")
		b.ReportMetric(appends.seconds/running.Seconds(), "append-busy")
	}
}

// appendRoute is the coordinator's route label of log appends.
const appendRoute = "POST /api/v1/attempts/{jobID}/{attempt}/logs"

// requestStats are the count and total duration of one route's requests.
type requestStats struct {
	count, seconds float64
}

// routeStats reads the coordinator's request-duration histogram for route
// (all status codes) from its /metrics.
func routeStats(ctx context.Context, b *testing.B, url, route string) requestStats {
	b.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+clientToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET /metrics: %s", resp.Status)
	}
	const name = "airlock_http_request_duration_seconds"
	label := fmt.Sprintf("route=%q", route)
	var st requestStats
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"_") || !strings.Contains(line, label) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			b.Fatalf("GET /metrics: %q: %v", line, err)
		}
		switch {
		case strings.HasPrefix(line, name+"_sum{"):
			st.seconds += v
		case strings.HasPrefix(line, name+"_count{"):
			st.count += v
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("GET /metrics: %v", err)
	}
	return st
}

// buildAirlock builds the airlock command into a temporary directory.
func buildAirlock(b *testing.B) string {
	b.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Skipf("building the airlock binary needs the go command: %v", err)
	}
	bin := filepath.Join(b.TempDir(), "airlock")
	cmd := exec.Command(goBin, "build", "-o", bin, "github.com/airlock-run/airlock/cmd/airlock")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building airlock: %v\n%s", err, out)
	}
	return bin
}

// process is an airlock process the benchmark started. Its output is kept
// and shown if the benchmark fails.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once it exited and its output is read

	mu    sync.Mutex
	out   bytes.Buffer
	lines chan string // every output line, until await is done with it
}

// startProcess starts bin with args. Its environment is this process's minus
// every AIRLOCK_* variable (each would set a flag), plus env. It is killed
// by PID when b ends.
func startProcess(b *testing.B, name, bin string, env []string, args ...string) *process {
	b.Helper()
	p := &process{name: name, done: make(chan struct{}), lines: make(chan string, 64)}
	p.cmd = exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AIRLOCK_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	// The process dies with the benchmark even if the benchmark is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("starting %s: %v", name, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			lines := p.lines
			p.mu.Unlock()
			if lines != nil {
				select {
				case lines <- sc.Text():
				default: // nobody is waiting for this line
				}
			}
		}
		io.Copy(io.Discard, r)
	}()
	go func() {
		p.cmd.Wait()
		w.Close()
		<-read
		close(p.done)
	}()
	b.Cleanup(func() {
		p.stop()
		if b.Failed() {
			p.mu.Lock()
			b.Logf("--- output of %s ---\n%s", name, p.out.String())
			p.mu.Unlock()
		}
	})
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// await returns the first submatch of the first output line re matches,
// waiting up to d.
func (p *process) await(b *testing.B, re *regexp.Regexp, d time.Duration) string {
	b.Helper()
	defer func() {
		p.mu.Lock()
		p.lines = nil
		p.mu.Unlock()
	}()
	timeout := time.After(d)
	for {
		select {
		case line := <-p.lines:
			if m := re.FindStringSubmatch(line); m != nil {
				return m[1]
			}
		case <-p.done:
			b.Fatalf("%s exited (%v) before printing a line matching %s", p.name, p.cmd.ProcessState, re)
		case <-timeout:
			b.Fatalf("%s printed no line matching %s within %s", p.name, re, d)
		}
	}
}

// stop asks the process to shut down (SIGTERM), kills it (SIGKILL) if it has
// not exited within 15s, and waits for it.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// cpu returns the CPU time (user and system) the process has used.
func (p *process) cpu(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid()))
	if err != nil {
		b.Fatalf("reading CPU time of %s: %v", p.name, err)
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		b.Fatalf("reading CPU time of %s: short /proc stat line %q", p.name, s)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatalf("reading CPU time of %s: %v", p.name, err)
	}
	const ticks = 100 // USER_HZ, 100 on every Linux architecture Go supports
	return time.Duration(utime+stime) * time.Second / ticks
}

// hwm returns the process's peak resident memory (VmHWM) in bytes.
func (p *process) hwm(b *testing.B) int64 {
	b.Helper()
	v, err := procStatus(p.pid(), "VmHWM")
	if err != nil {
		b.Fatalf("reading VmHWM of %s: %v", p.name, err)
	}
	return v
}

// procStatus returns a "kB" field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s %q: %w", field, rest, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// sampleRSS reads the VmRSS of each pid every rssInterval until the returned
// function is called; that returns the peak of each, in bytes.
func sampleRSS(b *testing.B, pids ...int) (stop func() []int64) {
	b.Helper()
	peaks := make([]int64, len(pids))
	done := make(chan struct{})
	finished := make(chan error, 1)
	go func() {
		t := time.NewTicker(rssInterval)
		defer t.Stop()
		for {
			for i, pid := range pids {
				v, err := procStatus(pid, "VmRSS")
				if err != nil {
					finished <- err
					return
				}
				peaks[i] = max(peaks[i], v)
			}
			select {
			case <-done:
				finished <- nil
				return
			case <-t.C:
			}
		}
	}()
	return func() []int64 {
		close(done)
		if err := <-finished; err != nil {
			b.Fatalf("sampling memory: %v", err)
		}
		return peaks
	}
}

// awaitTerminal polls job id until it is terminal, for at most d. Polling is
// what a client without a log follow would do; a Get every 100 ms costs the
// coordinator nothing worth measuring.
func awaitTerminal(ctx context.Context, b *testing.B, c *api.Client, id int64, d time.Duration) *api.Job {
	b.Helper()
	deadline := time.Now().Add(d)
	for {
		j, err := c.Get(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if j.State.Terminal() {
			return j
		}
		if time.Now().After(deadline) {
			b.Fatalf("job %d still %s after %s", id, j.State, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logVerifier checks a job log as it is written to it: header lines from the
// executor (each starting "==> ", the last one the step's "==> step" line),
// then exactly want bytes of logLine repeated, then the executor's footer
// ("==> step … exited with code 0 …" and "==> job succeeded …").
type logVerifier struct {
	want int64

	header, footer int64 // bytes of each, once seen
	got            int64 // output bytes seen
	inHeader       bool
	started        bool
	line           []byte // the header line being read
	foot           []byte // the footer (kept: it is a few lines)
	err            error
}

// maxHeader bounds the header lines, so a log without the step line fails
// quickly instead of being buffered whole.
const maxHeader = 64 << 10

func (v *logVerifier) Write(p []byte) (int, error) {
	n := len(p)
	if v.err != nil {
		return 0, v.err
	}
	if !v.started {
		v.started, v.inHeader = true, true
	}
	for len(p) > 0 && v.inHeader {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			v.line = append(v.line, p...)
			v.header += int64(len(p))
			p = nil
			break
		}
		v.line = append(v.line, p[:i+1]...)
		v.header += int64(i + 1)
		p = p[i+1:]
		if !bytes.HasPrefix(v.line, []byte("==> ")) {
			v.err = fmt.Errorf("header line %q does not start with \"==> \"", v.line)
			return 0, v.err
		}
		if bytes.HasPrefix(v.line, []byte("==> step ")) {
			v.inHeader = false
		}
		v.line = v.line[:0]
	}
	if v.header > maxHeader {
		v.err = fmt.Errorf("no \"==> step\" line in the first %d bytes", maxHeader)
		return 0, v.err
	}
	if len(p) > 0 && v.got < v.want {
		k := min(int64(len(p)), v.want-v.got)
		for i, c := range p[:k] {
			if c != logLine[(v.got+int64(i))%int64(len(logLine))] {
				v.err = fmt.Errorf("output byte %d is %q, want %q", v.got+int64(i), c, logLine[(v.got+int64(i))%int64(len(logLine))])
				return 0, v.err
			}
		}
		v.got += k
		p = p[k:]
	}
	if len(p) > 0 {
		v.foot = append(v.foot, p...)
		v.footer += int64(len(p))
		if v.footer > maxHeader {
			v.err = fmt.Errorf("more than %d bytes after the step's output: %.200q…", maxHeader, v.foot)
			return 0, v.err
		}
	}
	return n, nil
}

// check reports what is wrong with the log once it was read whole.
func (v *logVerifier) check() error {
	switch {
	case v.err != nil:
		return v.err
	case v.inHeader || !v.started:
		return errors.New("the log ends before the step's \"==> step\" line")
	case v.got != v.want:
		return fmt.Errorf("%d bytes of the step's output, want %d", v.got, v.want)
	case !bytes.HasPrefix(v.foot, []byte("==> step print exited with code 0")):
		return fmt.Errorf("footer %q does not start with the step's exit line", v.foot)
	case !bytes.Contains(v.foot, []byte("\n==> job succeeded")):
		return fmt.Errorf("footer %q has no \"==> job succeeded\" line", v.foot)
	}
	return nil
}
