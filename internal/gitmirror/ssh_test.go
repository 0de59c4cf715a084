// Fetching over SSH from a real OpenSSH server. Each test runs its own
// /usr/sbin/sshd as a child on a loopback port, with its own host key and
// authorized_keys, and serves repositories as root by absolute path. Every
// accepted session first runs a small wrapper (the authorized_keys command)
// that connects back to the test and waits for it, so the test can look at
// the machine (/proc, the key file) while git's ssh client is connected.

package gitmirror

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/testenv"
)

const sshdPath = "/usr/sbin/sshd"

// requireSSHD skips (or fails in CI) unless this test can run sshd: the
// binary, ssh and ssh-keygen, and root (sshd's privilege separation and
// logging in as root both need it).
func requireSSHD(t *testing.T) {
	t.Helper()
	requireGit(t)
	if _, err := os.Stat(sshdPath); err != nil {
		testenv.Missing(t, "sshd", err)
	}
	for _, bin := range []string{"ssh", "ssh-keygen", "bash"} {
		if _, err := exec.LookPath(bin); err != nil {
			testenv.Missing(t, "sshd", err)
		}
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, "sshd", fmt.Errorf("running sshd needs root, running as uid %d", os.Geteuid()))
	}
	// The privilege separation directory, which the system's service would
	// create; sshd refuses to start without it.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		testenv.Missing(t, "sshd", err)
	}
}

// sshKeygen makes an unencrypted key pair of type kind (ed25519, ecdsa) at
// path and returns the private key and the public key ("ssh-ed25519
// AAAA…", no comment).
func sshKeygen(t *testing.T, kind, path string) (private, public string) {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	priv, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return string(priv), strings.TrimSpace(string(pub))
}

// keyMaterial returns the lines of a private key that identify it: the
// base64 body without its first line, which is the same for every ed25519
// key.
func keyMaterial(key string) []string {
	var lines []string
	for i, l := range strings.Split(strings.TrimSpace(key), "\n") {
		if i > 1 && !strings.HasPrefix(l, "-----") {
			lines = append(lines, l)
		}
	}
	return lines
}

// sshServer is a running sshd, a child of the test.
type sshServer struct {
	t         *testing.T
	dir       string
	port      int
	clientKey string // the private key authorized_keys accepts
	logs      syncBuffer

	mu        sync.Mutex
	hostPub   string // public host key of the running server
	pid       int
	exited    chan struct{}
	onSession func() // called while a client is connected; nil for none
	sessions  int
}

// startSSHD starts sshd on a free loopback port with a new host key and an
// authorized_keys holding a new client key.
func startSSHD(t *testing.T) *sshServer {
	t.Helper()
	requireSSHD(t)
	s := &sshServer{t: t, dir: t.TempDir()}
	var clientPub string
	s.clientKey, clientPub = sshKeygen(t, "ed25519", filepath.Join(s.dir, "client"))

	observer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { observer.Close() })
	go s.observe(observer)
	wrapper := filepath.Join(s.dir, "session.sh")
	script := fmt.Sprintf("#!/bin/bash\n"+
		"# Wait while the test looks at the machine, then serve git.\n"+
		"if { exec 3<>/dev/tcp/127.0.0.1/%d; } 2>/dev/null; then read -r -t 20 _ <&3; exec 3<&-; fi\n"+
		"exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n", observer.Addr().(*net.TCPAddr).Port)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	auth := fmt.Sprintf("restrict,command=\"/bin/bash %s\" %s", wrapper, clientPub)
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), []byte(auth+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(s.stop)
	hostKey := s.newHostKey("ed25519")
	// The port is free when we pick it but another process may take it
	// before sshd binds it; then try another.
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		err := s.start(hostKey)
		if err == nil {
			break
		}
		if attempt == 2 || !strings.Contains(s.logs.String(), "Address already in use") {
			t.Fatalf("starting sshd: %v", err)
		}
	}
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newHostKey generates a host key of type kind in the server's directory
// and returns its path.
func (s *sshServer) newHostKey(kind string) string {
	s.t.Helper()
	f, err := os.CreateTemp(s.dir, "host-")
	if err != nil {
		s.t.Fatal(err)
	}
	f.Close()
	os.Remove(f.Name())
	sshKeygen(s.t, kind, f.Name())
	return f.Name()
}

// start runs sshd with hostKey on s.port and returns once it listens.
func (s *sshServer) start(hostKey string) error {
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		return err
	}
	cfg := filepath.Join(s.dir, "sshd_config")
	conf := strings.Join([]string{
		fmt.Sprintf("ListenAddress 127.0.0.1:%d", s.port),
		"HostKey " + hostKey,
		"AuthorizedKeysFile " + filepath.Join(s.dir, "authorized_keys"),
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"StrictModes no",
		"UsePAM no",
		"UseDNS no",
		"PrintMotd no",
		"AcceptEnv GIT_PROTOCOL", // protocol v2, as hosted servers speak it
		"PidFile " + filepath.Join(s.dir, "sshd.pid"),
		"LogLevel VERBOSE",
		"LoginGraceTime 20",
	}, "\n") + "\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}

	// sshd logs to stderr (-e); "Server listening on" is the signal that it
	// accepts connections. Connection processes keep the pipe open, so the
	// reader ends when the last of them does, not with the listener.
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfg)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("running sshd: %w", err)
	}
	w.Close()
	ready := make(chan struct{})
	go func() {
		defer r.Close()
		sc := bufio.NewScanner(r)
		signalled := false
		for sc.Scan() {
			s.logs.Write([]byte(sc.Text() + "\n"))
			if !signalled && strings.Contains(sc.Text(), "Server listening on") {
				close(ready)
				signalled = true
			}
		}
	}()
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.pid, s.exited, s.hostPub = cmd.Process.Pid, exited, strings.Join(strings.Fields(string(pub))[:2], " ")
	s.mu.Unlock()

	select {
	case <-ready:
	case <-exited:
		return fmt.Errorf("sshd exited before listening; its log:\n%s", s.logs.String())
	case <-time.After(10 * time.Second):
		s.stop()
		return fmt.Errorf("sshd not listening after 10s; its log:\n%s", s.logs.String())
	}
	c, err := net.DialTimeout("tcp", s.addr(), 5*time.Second)
	if err != nil {
		return fmt.Errorf("sshd says it listens, but: %w", err)
	}
	c.Close()
	return nil
}

// stop ends sshd (the listener; sessions in progress end with their
// clients) and waits for it.
func (s *sshServer) stop() {
	s.mu.Lock()
	pid, exited := s.pid, s.exited
	s.pid = 0
	s.mu.Unlock()
	if pid == 0 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		<-exited
	}
}

// restart replaces sshd by one with a new host key of type kind on the
// same port.
func (s *sshServer) restart(kind string) {
	s.t.Helper()
	hostKey := s.newHostKey(kind)
	s.stop()
	if err := s.start(hostKey); err != nil {
		s.t.Fatalf("restarting sshd: %v", err)
	}
}

// observe answers the session wrapper: it runs onSession while the client
// is connected, then lets the session go on.
func (s *sshServer) observe(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		f := s.onSession
		s.sessions++
		s.mu.Unlock()
		if f != nil {
			f()
		}
		c.Write([]byte("go\n"))
		c.Close()
	}
}

func (s *sshServer) setOnSession(f func()) {
	s.mu.Lock()
	s.onSession = f
	s.mu.Unlock()
}

func (s *sshServer) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

func (s *sshServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// url is the ssh:// URL of the repository at the absolute path repo.
func (s *sshServer) url(repo string) string { return "ssh://root@" + s.addr() + repo }

// knownHosts is the known_hosts line of the running server.
func (s *sshServer) knownHosts() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("[127.0.0.1]:%d %s", s.port, s.hostPub)
}

func (s *sshServer) hostKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostPub
}

// checkNoKeyLeft fails if any line of key is in err, the logs or a file
// under the mirror root, or if anything is left in Root/.tmp.
func checkNoKeyLeft(t *testing.T, m *Mirrors, logs *syncBuffer, err error, key string) {
	t.Helper()
	for _, line := range keyMaterial(key) {
		if err != nil && strings.Contains(err.Error(), line) {
			t.Errorf("error contains key material %q: %v", line, err)
		}
		if strings.Contains(logs.String(), line) {
			t.Errorf("logs contain key material %q", line)
		}
		for _, f := range filesContaining(t, m.opts.Root, line) {
			t.Errorf("%s contains key material %q", f, line)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(m.opts.Root, ".tmp", "*")); len(left) != 0 {
		t.Errorf("left behind in .tmp: %v", left)
	}
}

func TestEnsureOverSSHWithKnownHosts(t *testing.T) {
	t.Parallel()
	srv := startSSHD(t)
	up := newUpstream(t, upstreamOpts{})
	m, logs := setup(t)
	material := keyMaterial(srv.clientKey)

	// While ssh is connected: the key is in exactly one private file under
	// .tmp, the ssh command line names that file, and no command line
	// carries the key itself.
	type session struct {
		keyFiles    []string
		keyMode     os.FileMode
		keyContent  string
		pathInArgv  bool
		argvLeaks   []string
		inspectErrs []error
	}
	var mu sync.Mutex
	var sessions []session
	srv.setOnSession(func() {
		var s session
		s.keyFiles, _ = filepath.Glob(filepath.Join(m.opts.Root, ".tmp", "ssh-*", "key"))
		if len(s.keyFiles) == 1 {
			fi, err := os.Stat(s.keyFiles[0])
			s.inspectErrs = append(s.inspectErrs, err)
			if err == nil {
				s.keyMode = fi.Mode().Perm()
			}
			b, err := os.ReadFile(s.keyFiles[0])
			s.inspectErrs = append(s.inspectErrs, err)
			s.keyContent = string(b)
			s.pathInArgv = len(procCmdlinesContaining(t, s.keyFiles[0])) > 0
		}
		for _, line := range material {
			s.argvLeaks = append(s.argvLeaks, procCmdlinesContaining(t, line)...)
		}
		mu.Lock()
		sessions = append(sessions, s)
		mu.Unlock()
	})

	r := Remote{Name: "acme/api", URL: srv.url(up.bare), Credentials: Credentials{SSHKey: srv.clientKey}, KnownHosts: srv.knownHosts()}
	head := up.rev("main")
	if err := m.Ensure(context.Background(), r, head); err != nil {
		t.Fatalf("Ensure over ssh: %v\nsshd log:\n%s", err, srv.logs.String())
	}
	srv.setOnSession(nil)
	if _, err := mirrorGit(t, m, "acme/api", "cat-file", "-e", head+"^{commit}"); err != nil {
		t.Errorf("commit %s not in the mirror: %v", head, err)
	}
	if got, _ := mirrorGit(t, m, "acme/api", "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Errorf("mirror HEAD = %q, want refs/heads/main (read with ls-remote over ssh)", got)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(sessions) == 0 {
		t.Fatal("no ssh session reached the server's wrapper; the key checks checked nothing")
	}
	for i, s := range sessions {
		if err := errors.Join(s.inspectErrs...); err != nil {
			t.Errorf("session %d: inspecting the key file: %v", i, err)
		}
		if len(s.keyFiles) != 1 {
			t.Errorf("session %d: key files under .tmp while ssh is connected: %v, want exactly one", i, s.keyFiles)
			continue
		}
		if s.keyMode != 0o600 {
			t.Errorf("session %d: key file mode %v, want 0600", i, s.keyMode)
		}
		if s.keyContent != srv.clientKey {
			t.Errorf("session %d: key file does not hold the remote's key", i)
		}
		if !s.pathInArgv {
			t.Errorf("session %d: no process's command line names the key file %s; is ssh visible in /proc?", i, s.keyFiles[0])
		}
		for _, leak := range s.argvLeaks {
			t.Errorf("session %d: private key in a process's argv: %s", i, leak)
		}
	}
	// Strict checking never writes the mirror's own known hosts.
	dir, _ := m.dir("acme/api")
	if _, err := os.Stat(filepath.Join(dir, "airlock_known_hosts")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("with KnownHosts given, the mirror's trust-on-first-use file exists (%v)", err)
	}
	checkNoKeyLeft(t, m, logs, nil, srv.clientKey)

	// KnownHosts naming another key for the host is refused, strictly.
	_, otherHost := sshKeygen(t, "ed25519", filepath.Join(t.TempDir(), "other-host"))
	r = Remote{Name: "acme/strict", URL: r.URL, Credentials: r.Credentials,
		KnownHosts: fmt.Sprintf("[127.0.0.1]:%d %s", srv.port, otherHost)}
	err := m.Ensure(context.Background(), r, head)
	if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "Host key verification failed") {
		t.Errorf("Ensure with KnownHosts naming another key = %v, want ErrAuthentication saying host key verification failed", err)
	}
	checkNoKeyLeft(t, m, logs, err, srv.clientKey)
}

func TestEnsureOverSSHTrustsOnFirstUsePerMirror(t *testing.T) {
	t.Parallel()
	srv := startSSHD(t)
	up := newUpstream(t, upstreamOpts{})
	m, logs := setup(t)
	ctx := context.Background()
	creds := Credentials{SSHKey: srv.clientKey}
	// "acme/api" is stored as acme%2Fapi.git: the known hosts path has a "%"
	// that ssh must not expand.
	r := Remote{Name: "acme/api", URL: srv.url(up.bare), Credentials: creds}
	if err := m.Ensure(ctx, r, up.rev("main")); err != nil {
		t.Fatalf("first Ensure, no known hosts: %v\nsshd log:\n%s", err, srv.logs.String())
	}
	dir, _ := m.dir("acme/api")
	pinFile := filepath.Join(dir, "airlock_known_hosts")
	pinned, err := os.ReadFile(pinFile)
	if err != nil {
		t.Fatalf("the first connection recorded no host key in the mirror: %v", err)
	}
	firstKey := srv.hostKey()
	if !strings.Contains(string(pinned), firstKey) {
		t.Errorf("mirror known hosts %q does not hold the server's key %q", pinned, firstKey)
	}

	// The server's host key changes, to another key of the same type and
	// then to a key of another type (which accept-new must not take for a
	// new host): the next fetch of this mirror fails each time.
	next := up.commit("after the host key changed")
	up.push()
	for _, kind := range []string{"ed25519", "ecdsa"} {
		srv.restart(kind)
		if srv.hostKey() == firstKey {
			t.Fatal("restarted sshd has the same host key")
		}
		err = m.Ensure(ctx, r, next)
		if !errors.Is(err, ErrAuthentication) {
			t.Fatalf("Ensure after the host key changed to a new %s key = %v, want ErrAuthentication", kind, err)
		}
		for _, want := range []string{"REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("new %s key: error does not say %q: %v", kind, want, err)
			}
		}
		if _, err := mirrorGit(t, m, "acme/api", "cat-file", "-e", next+"^{commit}"); err == nil {
			t.Errorf("commit %s fetched from a server with a changed host key", next)
		}
		if after, _ := os.ReadFile(pinFile); string(after) != string(pinned) {
			t.Errorf("mirror known hosts changed after a refused connection:\n%s\nwas:\n%s", after, pinned)
		}
		checkNoKeyLeft(t, m, logs, err, srv.clientKey)
	}

	// Trust is per mirror: another mirror of the same URL meets the new key
	// first and accepts it.
	if err := m.Ensure(ctx, Remote{Name: "acme/fork", URL: r.URL, Credentials: creds}, next); err != nil {
		t.Errorf("Ensure of another mirror after the host key changed: %v", err)
	}
	// Removing the mirror forgets its key; a new mirror of the name trusts
	// the new one.
	if err := m.Remove(ctx, "acme/api"); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx, r, next); err != nil {
		t.Errorf("Ensure after Remove: %v", err)
	}
	if pinned, _ := os.ReadFile(pinFile); !strings.Contains(string(pinned), srv.hostKey()) {
		t.Errorf("re-created mirror's known hosts %q does not hold the new key", pinned)
	}
	checkNoKeyLeft(t, m, logs, nil, srv.clientKey)
}

func TestEnsureOverSSHWithAWrongKey(t *testing.T) {
	t.Parallel()
	srv := startSSHD(t)
	up := newUpstream(t, upstreamOpts{})
	wrongKey, _ := sshKeygen(t, "ed25519", filepath.Join(t.TempDir(), "wrong"))
	for _, tc := range []struct {
		name string
		key  string
	}{
		{"unauthorized key", wrongKey},
		{"no key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, logs := setup(t)
			r := Remote{Name: "acme/api", URL: srv.url(up.bare), Credentials: Credentials{SSHKey: tc.key}, KnownHosts: srv.knownHosts()}
			before := srv.sessionCount()
			start := time.Now()
			err := m.Ensure(context.Background(), r, up.rev("main"))
			if !errors.Is(err, ErrAuthentication) || !strings.Contains(err.Error(), "Permission denied (publickey") {
				t.Fatalf("Ensure = %v, want ErrAuthentication saying permission denied", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("a refused key took %s to fail", d)
			}
			if got := srv.sessionCount() - before; got != 0 {
				t.Errorf("%d sessions started with a refused key", got)
			}
			checkNoKeyLeft(t, m, logs, err, tc.key)
		})
	}
	if !strings.Contains(srv.logs.String(), "Connection closed by authenticating user root") {
		t.Errorf("sshd did not see a refused authentication; its log:\n%s", srv.logs.String())
	}
}
