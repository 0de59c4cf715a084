package e2e

// The adversarial suite: real jobs that try to get out of their sandbox, run
// by a real executor on every isolating runtime, inside an enclosed test
// network (internal/netpolicy/nettest). Each job must be contained, end with
// the right outcome, and leave the executor healthy; nothing of any job may
// be left on the host afterwards, also after the executor is SIGKILLed
// mid-job and restarted.
//
// The executor runs inside the enclosure namespace, which plays the host:
// its only way out leads to test-made hosts (a public one at 198.51.100.10,
// a private one, 169.254.169.254, DNS servers). It reaches the coordinator,
// which runs on the real loopback, through a forwarder listening inside the
// enclosure — which doubles as "a service on the host's loopback" and, on
// the enclosure's uplink address, as "the coordinator" for the jobs to try.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
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
	"github.com/airlock-run/airlock/internal/netpolicy/nettest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// sandboxRuntimes are the isolating runtimes every adversarial job runs on,
// with the executor flags that select them.
var sandboxRuntimes = []struct {
	name string
	args []string
	need string // the binary it needs
}{
	{"gvisor", []string{"--runtime", "gvisor"}, "runsc"},
	{"oci-crun", []string{"--runtime", "oci", "--oci-runtime", "crun"}, "crun"},
	{"oci-runc", []string{"--runtime", "oci", "--oci-runtime", "runc"}, "runc"},
}

// advEnv is one runtime's enclosed executor and what the jobs probe.
type advEnv struct {
	t        *testing.T
	c        *cluster
	w        *nettest.World
	images   testImages
	workDir  string
	args     []string // the executor's arguments
	exec     *proc
	fwdPort  int    // the forwarder's port: the coordinator, from inside the enclosure
	secret   string // content of a host file outside every workspace
	secretAt string
	hostPID  int // a host process no job may see
}

func newAdvEnv(t *testing.T, runtimeArgs []string) *advEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root (sandboxes)", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
	e := &advEnv{t: t, c: newCluster(t, clusterOpts{heartbeat: 300 * time.Millisecond}), w: nettest.New(t), images: writeTestImages(t)}

	// The forwarder: inside the enclosure, on every address, to the
	// coordinator on the real loopback.
	l, err := e.w.Enclosure.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	e.fwdPort = l.Addr().(*net.TCPAddr).Port
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := net.Dial("tcp", e.c.addr)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			}()
		}
	}()

	// A secret on the host, and a host process, that no job may reach.
	var b [8]byte
	rand.Read(b[:])
	e.secret = "HOST-SECRET-" + hex.EncodeToString(b[:])
	e.secretAt = filepath.Join(t.TempDir(), "host-secret")
	if err := os.WriteFile(e.secretAt, []byte(e.secret), 0o644); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	e.hostPID = sleeper.Process.Pid

	// The executor's directories must be searchable by others: containers
	// reach their mounts from a user namespace.
	e.workDir, err = os.MkdirTemp("", "airlock-e2e-work-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(e.workDir, 0o755)
	t.Cleanup(func() {
		// The executors are SIGKILLed when the test ends, so the gvisor
		// runtime's pinned namespace for its gofers is still mounted.
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], e.workDir+"/") {
				syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
		os.RemoveAll(e.workDir)
	})
	e.args = append([]string{"executor", "--url", fmt.Sprintf("http://127.0.0.1:%d", e.fwdPort),
		"--work-dir", e.workDir, "--max-jobs", "3", "--kill-grace", "1s",
		"--local-images", e.images.root,
		"--dns-resolver", nettest.ResolverAddr.String(),
		"--default-image", e.images.Busybox,
		"--job-memory", "256MiB", "--job-pids", "256", "--job-disk", "256MiB"}, runtimeArgs...)
	e.startExecutor()
	return e
}

func (e *advEnv) startExecutor() {
	e.t.Helper()
	e.c.nexec++
	name := fmt.Sprintf("executor-%d", e.c.nexec)
	cmd := e.w.Enclosure.Command(context.Background(), airlockBin, append(e.args, "--name", name)...)
	e.exec = startCmd(e.t, name, cmd, []string{"AIRLOCK_EXECUTOR_TOKEN=" + executorToken})
	e.exec.waitOutput(regexp.MustCompile(`executor starting`), 60*time.Second)
}

// jobOutcome, as an advCase's state, accepts succeeded or failed: the job's
// own outcome, not the system's.
const jobOutcome job.State = "succeeded or failed"

// advCase is one job and what must come of it.
type advCase struct {
	name    string
	network job.Network
	res     job.Resources
	image   string // "" is the default (root) image
	user    string // the step's user, "" for the image's
	run     string
	state   job.State
	reason  job.Reason // "" accepts any
	want    []string   // in the log
	notWant []string   // not in the log
	denied  bool       // the egress policy must have counted denials
}

func (e *advEnv) cases() []advCase {
	pub := nettest.PublicAddr.String()
	priv := nettest.PrivateAddr.String()
	meta := nettest.MetadataAddr.String()
	coord := fmt.Sprintf("%s:%d", nettest.UplinkAddr, e.fwdPort)
	return []advCase{
		{name: "read a host file outside the workspace", state: job.StateSucceeded,
			run: fmt.Sprintf(`cat %[1]s || echo CONTAINED-read
cat /proc/1/root%[1]s 2>/dev/null || echo CONTAINED-proc1
find / -xdev -name host-secret 2>/dev/null | grep -q . && echo ESCAPED-find || echo CONTAINED-find`, e.secretAt),
			want: []string{"CONTAINED-read", "CONTAINED-proc1", "CONTAINED-find"}, notWant: []string{e.secret, "ESCAPED"}},
		{name: "write outside /work", state: job.StateSucceeded,
			run: `for f in /evil /etc/evil /bin/evil /usr/evil; do (echo x > $f) 2>/dev/null && echo ESCAPED-$f || echo CONTAINED-$f; done
echo ok > /tmp/scratch && echo WROTE-tmp
echo ok > /work/inside && echo WROTE-work`,
			want: []string{"CONTAINED-/evil", "CONTAINED-/etc/evil", "WROTE-tmp", "WROTE-work"}, notWant: []string{"ESCAPED"}},
		{name: "list and trace host processes", state: job.StateSucceeded,
			run: fmt.Sprintf(`n=$(ls /proc | grep -c '^[0-9]')
[ "$n" -lt 20 ] && echo CONTAINED-ps-$n || echo ESCAPED-ps-$n
[ -e /proc/%[1]d ] && echo ESCAPED-pid || echo CONTAINED-pid
/probe ptrace %[1]d`, e.hostPID),
			want: []string{"CONTAINED-ps", "CONTAINED-pid", "CONTAINED: ptrace"}, notWant: []string{"ESCAPED"}},
		{name: "reach a service on the host's loopback and the coordinator", state: job.StateSucceeded, denied: true,
			run: fmt.Sprintf(`/probe tcp 127.0.0.1:%[1]d
gw=$(ip route | awk '/default/ {print $3}')
echo gateway=$gw
/probe tcp $gw:%[1]d
/probe tcp %[2]s`, e.fwdPort, coord),
			want: []string{"UNREACHABLE: tcp 127.0.0.1", "UNREACHABLE: tcp " + coord}, notWant: []string{"REACHED"}},
		{name: "reach private and metadata hosts", state: job.StateSucceeded, denied: true,
			run: fmt.Sprintf(`/probe tcp %[1]s:7; /probe udp %[1]s:7; /probe tcp %[2]s:80; /probe udp %[2]s:7
/probe ping %[1]s; /probe ping %[2]s
nslookup public.airlock.test %[3]s >/dev/null 2>&1 && echo ESCAPED-dns-elsewhere || echo CONTAINED-dns-elsewhere`,
				priv, meta, nettest.OtherDNSAddr),
			want:    []string{"UNREACHABLE: tcp " + priv, "UNREACHABLE: udp " + priv, "UNREACHABLE: tcp " + meta, "UNREACHABLE: ping " + priv, "UNREACHABLE: ping " + meta, "CONTAINED-dns-elsewhere"},
			notWant: []string{"REACHED", "ESCAPED"}},
		{name: "reach a public host under internet", state: job.StateSucceeded,
			run: fmt.Sprintf(`/probe tcp %[1]s:7; /probe udp %[1]s:7
/probe ping %[1]s
nslookup public.airlock.test | grep -q %[1]s && echo DNS-OK || echo DNS-FAILED
wget -q -O - http://public.airlock.test/ || echo HTTP-FAILED`, pub),
			want: []string{"REACHED: tcp " + pub, "REACHED: udp " + pub, "REACHED: ping " + pub, "DNS-OK", "hello from " + pub}},
		{name: "reach nothing under none", network: job.NetworkNone, state: job.StateSucceeded,
			run:  fmt.Sprintf(`/probe tcp %[1]s:7; /probe udp %[1]s:7; /probe ping %[1]s`, pub),
			want: []string{"UNREACHABLE: tcp " + pub, "UNREACHABLE: udp " + pub, "UNREACHABLE: ping " + pub}, notWant: []string{"REACHED"}},
		// The bomb itself may end its step (a fork fails, or gVisor's host
		// backstop kills the sandbox): any job outcome but a system error.
		{name: "fork bomb", res: job.Resources{Pids: 64}, state: jobOutcome,
			run: `bomb() { bomb | bomb & }; (bomb) 2>/dev/null; sleep 3; echo BOMB-SURVIVED`},
		{name: "memory bomb", res: job.Resources{Memory: 64 << 20}, state: job.StateFailed, reason: job.ReasonOOM,
			run: `awk 'BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) s = s s }'`},
		{name: "fill the disk", res: job.Resources{Disk: 64 << 20}, state: job.StateSucceeded,
			run:  `dd if=/dev/zero of=/work/fill bs=1M count=200 2>&1 | tail -n 3; echo DD-DONE`,
			want: []string{"No space left on device", "DD-DONE"}},
		{name: "setuid escalation", image: e.images.User, state: job.StateSucceeded,
			run:  `/probe uid; /bin/suid-probe uid; /bin/suid-probe setuid`,
			want: []string{"uid=1000 euid=1000", "CONTAINED: setuid(0)"}, notWant: []string{"euid=0", "ESCAPED"}},
		{name: "a step's own user", user: "1000:1000", state: job.StateSucceeded,
			run:  `/probe uid; /bin/suid-probe uid; id -u > /work/owned-by-step && echo WROTE-work`,
			want: []string{"uid=1000 euid=1000", "WROTE-work"}, notWant: []string{"euid=0"}},
		{name: "a user the image lacks", user: "nosuchuser", state: job.StateFailed, reason: job.ReasonImage,
			run: `echo never-run`, notWant: []string{"never-run"}},
		{name: "mount, kernel modules and raw sockets", state: job.StateSucceeded,
			run:  `/probe mount; /probe module; /probe raw; /probe packet; mount -t proc proc /tmp 2>/dev/null && echo ESCAPED-mount-proc || echo CONTAINED-mount-proc`,
			want: []string{"CONTAINED: mount", "CONTAINED: init_module", "CONTAINED: raw socket", "CONTAINED: packet socket", "CONTAINED-mount-proc"}, notWant: []string{"ESCAPED"}},
	}
}

func (e *advEnv) submit(tc advCase) *api.Job {
	e.t.Helper()
	s := job.Spec{Version: 1, Network: tc.network, Resources: tc.res, Timeout: job.Duration(2 * time.Minute),
		Steps: []job.Step{{Name: "attack", Image: tc.image, User: tc.user, Run: tc.run}}}
	return e.c.submit(s)
}

func TestAdversarialJobsAreContained(t *testing.T) {
	for _, rt := range sandboxRuntimes {
		t.Run(rt.name, func(t *testing.T) {
			if _, err := exec.LookPath(rt.need); err != nil {
				testenv.Missing(t, rt.need, err)
			}
			e := newAdvEnv(t, rt.args)
			cases := e.cases()
			jobs := make([]*api.Job, len(cases))
			for i, tc := range cases {
				jobs[i] = e.submit(tc)
			}
			for i, tc := range cases {
				got := e.c.waitJob(jobs[i].ID, 3*time.Minute)
				log := e.c.logOf(got.ID)
				stateOK := got.State == tc.state || (tc.state == jobOutcome && (got.State == job.StateSucceeded || got.State == job.StateFailed))
				if !stateOK || (tc.reason != "" && got.Reason != tc.reason) {
					t.Errorf("%s: job ended %s/%s (%s), want %s/%s; log:\n%s", tc.name, got.State, got.Reason, got.Message, tc.state, tc.reason, log)
					continue
				}
				for _, w := range tc.want {
					if !strings.Contains(log, w) {
						t.Errorf("%s: log lacks %q; log:\n%s", tc.name, w, log)
					}
				}
				for _, w := range tc.notWant {
					if strings.Contains(log, w) {
						t.Errorf("%s: log has %q; log:\n%s", tc.name, w, log)
					}
				}
				if tc.denied {
					if a := got.Attempts[len(got.Attempts)-1]; a.EgressDenied == 0 {
						t.Errorf("%s: the attempt shows no denied connection attempts", tc.name)
					}
				}
			}
			for _, dst := range []netip.AddrPort{
				netip.AddrPortFrom(nettest.PrivateAddr, nettest.EchoPort),
				netip.AddrPortFrom(nettest.MetadataAddr, nettest.HTTPPort),
				netip.AddrPortFrom(nettest.MetadataAddr, nettest.EchoPort),
				netip.AddrPortFrom(nettest.OtherDNSAddr, nettest.DNSPort),
			} {
				if n := e.w.Hits(dst); n > 0 {
					t.Errorf("%v received %d connections or datagrams from sandboxes", dst, n)
				}
			}

			// Cancelling a step that ignores SIGTERM.
			j := e.submit(advCase{run: `trap '' TERM; echo READY; while :; do sleep 1; done`})
			e.waitLog(j.ID, "READY")
			if _, err := e.c.client.Cancel(context.Background(), j.ID); err != nil {
				t.Fatal(err)
			}
			if got := e.c.waitJob(j.ID, time.Minute); got.State != job.StateCanceled {
				t.Errorf("a step ignoring SIGTERM: job ended %s/%s, want canceled", got.State, got.Reason)
			}

			// The executor is healthy: a plain job still runs.
			e.healthy()
			e.assertNoLeftovers()

			// SIGKILL the executor mid-job; its successor's janitor removes
			// everything the job left.
			// (One attempt only: a retry would run it again on the new
			// executor, whose resources are then rightly in use.)
			j = e.c.submit(job.Spec{Version: 1, MaxAttempts: 1, Steps: []job.Step{{Name: "sleep", Run: "echo RUNNING; sleep 600"}}})
			e.waitLog(j.ID, "RUNNING")
			e.exec.kill()
			e.startExecutor()
			e.healthy()
			e.assertNoLeftovers()
			if got := e.c.waitJob(j.ID, time.Minute); got.State != job.StateErrored || got.Reason != job.ReasonLeaseExpired {
				t.Errorf("the job whose executor was killed ended %s/%s, want errored/lease_expired", got.State, got.Reason)
			}
		})
	}
}

// waitLog waits until job id's log contains s.
func (e *advEnv) waitLog(id int64, s string) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(e.c.logOf(id), s) {
		if time.Now().After(deadline) {
			e.t.Fatalf("job %d never printed %q; log:\n%s", id, s, e.c.logOf(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// healthy runs a trivial job to success.
func (e *advEnv) healthy() {
	e.t.Helper()
	j := e.submit(advCase{run: "echo HEALTHY"})
	got := e.c.waitJob(j.ID, 2*time.Minute)
	if got.State != job.StateSucceeded || !strings.Contains(e.c.logOf(j.ID), "HEALTHY") {
		e.t.Fatalf("the executor is not healthy: a trivial job ended %s/%s (%s)", got.State, got.Reason, got.Message)
	}
}

// assertNoLeftovers checks that no job left anything on the host: network
// namespaces, veths and firewall chains in the enclosure, cgroups, mounts
// under the work directory, processes of the runtimes, and that the work
// directory holds no attempt's directory.
func (e *advEnv) assertNoLeftovers() {
	e.t.Helper()
	// Whatever is still running belongs to the attempt that is running:
	// none is, once the healthy job has been reported. Give the executor
	// a moment to finish closing that job's sandbox.
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := e.leftovers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Errorf("left on the host after every job ended:\n  %s", strings.Join(left, "\n  "))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *advEnv) leftovers() []string {
	var left []string
	out, _ := e.w.Enclosure.Command(context.Background(), "ip", "-o", "link", "show").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "airlock") || strings.Contains(line, "al-") {
			left = append(left, "link: "+strings.TrimSpace(line))
		}
	}
	out, _ = e.w.Enclosure.Command(context.Background(), "nft", "list", "ruleset").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "chain") && strings.Contains(line, "airlock-") {
			left = append(left, "nft: "+strings.TrimSpace(line))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		// The gvisor runtime's own namespace for its gofers (one per
		// runtime root, not per attempt) stays.
		if strings.Contains(line, e.workDir) && !strings.Contains(line, "/.runsc/null-netns") {
			left = append(left, "mount: "+line)
		}
	}
	for _, dir := range []string{"/sys/fs/cgroup/memory/airlock", "/sys/fs/cgroup/pids/airlock", "/sys/fs/cgroup/unified/airlock", "/sys/fs/cgroup/airlock"} {
		entries, _ := os.ReadDir(dir)
		for _, en := range entries {
			if en.IsDir() && strings.HasPrefix(en.Name(), "airlock-") {
				left = append(left, "cgroup: "+filepath.Join(dir, en.Name()))
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), e.workDir) && !strings.Contains(string(cmdline), "executor\x00") {
			left = append(left, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return left
}
