package checkout

// How git is run. Every git process the package starts gets an environment
// built from nothing rather than inherited: the executor's own GIT_DIR,
// GIT_TRACE*, HOME and XDG settings never reach it, and neither the system
// nor the global git configuration is read, so a host's credential helpers,
// url.insteadOf rewrites, LFS filters or submodule.recurse cannot change what
// a checkout does. Settings that close what an untrusted repository could
// use against the host are then passed as command-scope configuration
// (GIT_CONFIG_COUNT/KEY/VALUE), which outranks every configuration file,
// including the repository's own.
//
// The job token travels the same way, as an http.extraHeader value in the
// environment of the one fetch that talks to the remote: never in argv (which
// every user of the host can read in the process list), never in a file. Git
// itself does not print extra headers unless GIT_TRACE_CURL is set, which the
// clean environment rules out; as a second line of defence every error
// message built from git's output has the token replaced. Background work
// (gc --auto, maintenance) is disabled, so no process carrying the token
// outlives the fetch.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// hardening is the command-scope configuration of every git process.
var hardening = [][2]string{
	// No hooks, ever: the workspace's .git is ours, but a cache or a
	// workspace must never be able to run code on the host.
	{"core.hooksPath", "/dev/null"},
	{"core.fsmonitor", "false"},
	// Transports: only what a given command needs is allowed again below.
	{"protocol.allow", "never"},
	// No submodules, no recursion.
	{"submodule.recurse", "false"},
	{"fetch.recurseSubmodules", "false"},
	// Nothing runs in the background carrying our environment.
	{"gc.auto", "0"},
	{"gc.autoDetach", "false"},
	{"maintenance.auto", "false"},
	{"fetch.writeCommitGraph", "false"},
	// No credentials from anywhere but the token we pass.
	{"credential.helper", ""},
	{"core.askPass", ""},
	// Content is checked out as stored: no host-side conversion.
	{"core.autocrlf", "false"},
	{"core.symlinks", "true"},
	{"core.protectNTFS", "true"},
	{"core.protectHFS", "true"},
	{"advice.detachedHead", "false"},
	{"init.defaultBranch", "main"},
}

// passEnv are the variables of the executor's environment a git process
// keeps: how to find programs, and how to reach the network.
var passEnv = []string{
	"PATH",
	"http_proxy", "https_proxy", "no_proxy", "all_proxy",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
}

// gitCmd is one git invocation.
type gitCmd struct {
	dir     string      // working directory
	args    []string    // after "git"
	config  [][2]string // extra command-scope configuration
	stdin   io.Reader
	secrets []string // replaced in any output kept for errors
	// proxy, if set, is the proxy URL (credentials included) every
	// connection goes through; the environment's proxy settings are then
	// not passed on, no_proxy included.
	proxy string
}

// git runs one git command and returns its standard output. An error
// carries the command's name and the tail of its standard error.
func (c *Cache) git(ctx context.Context, g gitCmd) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.gitPath, g.args...)
	cmd.Dir = g.dir
	cmd.Env = c.gitEnv(g.config, g.proxy)
	cmd.Stdin = g.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &limitedBuffer{buf: &stderr, max: 64 << 10}
	// Git runs helpers (git-remote-https, index-pack, upload-pack) as
	// children; cancelling kills the whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		for _, sec := range g.secrets {
			if sec != "" {
				msg = strings.ReplaceAll(msg, sec, "[REDACTED]")
			}
		}
		if len(msg) > 2000 {
			msg = "…" + msg[len(msg)-2000:]
		}
		if cause := context.Cause(ctx); cause != nil {
			return nil, fmt.Errorf("git %s: %w", g.args[0], cause)
		}
		if msg == "" {
			return nil, fmt.Errorf("git %s: %w", g.args[0], err)
		}
		return nil, &gitError{cmd: g.args[0], stderr: msg, err: err}
	}
	return stdout.Bytes(), nil
}

// gitError is a git command that ran and failed.
type gitError struct {
	cmd    string
	stderr string
	err    error
}

func (e *gitError) Error() string { return fmt.Sprintf("git %s: %s", e.cmd, e.stderr) }
func (e *gitError) Unwrap() error { return e.err }

// stderrOf returns the standard error of a failed git command, or "".
func stderrOf(err error) string {
	var ge *gitError
	if errors.As(err, &ge) {
		return ge.stderr
	}
	return ""
}

func (c *Cache) gitEnv(extra [][2]string, proxy string) []string {
	env := []string{
		"HOME=" + c.home,
		"XDG_CONFIG_HOME=" + c.home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_LFS_SKIP_SMUDGE=1",
		"GIT_NO_REPLACE_OBJECTS=1",
		"GIT_PROTOCOL_FROM_USER=0",
		"LC_ALL=C",
	}
	for _, k := range passEnv {
		if proxy != "" && strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	cfg := append(append([][2]string(nil), hardening...), extra...)
	if proxy != "" {
		cfg = append(cfg, [2]string{"http.proxy", proxy}, [2]string{"http.proxyAuthMethod", "basic"})
	}
	if c.opts.CAFile != "" {
		env = append(env, "GIT_SSL_CAINFO="+c.opts.CAFile)
	}
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(cfg)))
	for i, kv := range cfg {
		n := strconv.Itoa(i)
		env = append(env, "GIT_CONFIG_KEY_"+n+"="+kv[0], "GIT_CONFIG_VALUE_"+n+"="+kv[1])
	}
	return env
}

// limitedBuffer keeps the last max bytes written to it, roughly: git's last
// lines are the ones that explain a failure.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	l.buf.Write(p)
	if over := l.buf.Len() - l.max; over > 0 {
		rest := append([]byte(nil), l.buf.Bytes()[over:]...)
		l.buf.Reset()
		l.buf.Write(rest)
	}
	return n, nil
}
