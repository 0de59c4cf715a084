// Running git. Every git process gets a clean environment (no system or
// global config, an empty HOME, C locale so messages can be matched, no
// prompts), a timeout, and its own process group so that a timeout kills
// git-remote-https or ssh along with git. Credentials travel only in the
// environment of fetch commands (HTTPS) or in a temporary key file (SSH),
// and everything git prints is redacted before it becomes an error.

package gitmirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// passEnv are variables of the coordinator's environment that git may need.
var passEnv = []string{
	"PATH", "TMPDIR",
	"http_proxy", "https_proxy", "no_proxy", "all_proxy",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
	"SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
}

func (m *Mirrors) baseEnv() []string {
	env := []string{
		"HOME=" + filepath.Join(m.opts.Root, ".home"),
		"LC_ALL=C",
		"LANGUAGE=C",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_ALLOW_PROTOCOL=https:http:ssh:git",
		"GIT_HTTP_LOW_SPEED_LIMIT=1000",
		"GIT_HTTP_LOW_SPEED_TIME=60",
		"SSH_ASKPASS_REQUIRE=never",
	}
	for _, k := range passEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// gitCmd is one git invocation.
type gitCmd struct {
	dir     string // GIT_DIR; empty for none
	timeout time.Duration
	env     []string // added to the base environment
	secrets []string // redacted from errors
	stdin   io.Reader
	stdout  io.Writer
}

// gitError is a git command that ran and failed (or was killed).
type gitError struct {
	cmd    string // "git fetch"
	stderr string // redacted, trimmed tail
	err    error
}

func (e *gitError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("%s: %v", e.cmd, e.err)
	}
	return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.stderr)
}

func (e *gitError) Unwrap() error { return e.err }

// stderrOf returns the git stderr carried by err, if any.
func stderrOf(err error) string {
	var ge *gitError
	if errors.As(err, &ge) {
		return ge.stderr
	}
	return ""
}

func (m *Mirrors) run(parent context.Context, c gitCmd, args ...string) error {
	ctx, cancel := context.WithTimeout(parent, c.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.opts.Git, args...)
	cmd.Env = append(m.baseEnv(), c.env...)
	if c.dir != "" {
		cmd.Env = append(cmd.Env, "GIT_DIR="+c.dir)
	}
	cmd.Dir = m.opts.Root
	cmd.Stdin = c.stdin
	cmd.Stdout = c.stdout
	stderr := &tailBuffer{max: 8 << 10}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second

	err := cmd.Run()
	if err == nil {
		return nil
	}
	name := "git"
	if len(args) > 0 {
		name += " " + args[0]
	}
	switch {
	case parent.Err() != nil:
		err = context.Cause(parent)
	case ctx.Err() != nil:
		err = fmt.Errorf("timed out after %s: %w", c.timeout, ctx.Err())
	}
	return &gitError{cmd: name, stderr: redact(strings.TrimSpace(stderr.String()), c.secrets), err: err}
}

// git runs a local git command.
func (m *Mirrors) git(ctx context.Context, dir string, timeout time.Duration, args ...string) error {
	return m.run(ctx, gitCmd{dir: dir, timeout: timeout}, args...)
}

// gitOutput runs a local git command and returns its standard output.
func (m *Mirrors) gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	var out bytes.Buffer
	err := m.run(ctx, gitCmd{dir: dir, timeout: m.opts.LocalTimeout, stdout: &out}, args...)
	return out.String(), err
}

// credentialHelper answers git's "get" with the username and password from
// its environment, and only for the remote's own host; it ignores "store"
// and "erase". It is configuration, not a secret: the secrets stay in the
// environment variables it reads.
const credentialHelper = `!f() { test "$1" = get || exit 0; h=; ` +
	`while IFS= read -r l; do test -z "$l" && break; case "$l" in host=*) h=${l#host=};; esac; done; ` +
	`test -n "$h" && test "$h" = "$AIRLOCK_GIT_HOST" || exit 0; ` +
	`printf 'username=%s\npassword=%s\n' "$AIRLOCK_GIT_USERNAME" "$AIRLOCK_GIT_PASSWORD"; }; f`

// remoteCmd prepares a git command that talks to r: its environment carries
// the credentials (HTTPS) or names a temporary key file (SSH). Call cleanup
// when the command has finished.
func (m *Mirrors) remoteCmd(dir string, timeout time.Duration, r Remote) (c gitCmd, cleanup func(), err error) {
	c = gitCmd{dir: dir, timeout: timeout, secrets: r.Credentials.secrets()}
	cleanup = func() {}
	cr := r.Credentials
	if !isSSH(r.URL) {
		if cr.Password == "" {
			return c, cleanup, nil
		}
		host, err := remoteHost(r.URL)
		if err != nil {
			return c, cleanup, err
		}
		user := cr.Username
		if user == "" {
			user = "x-access-token"
		}
		c.env = append(c.env,
			"GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=credential.helper",
			"GIT_CONFIG_VALUE_0=",
			"GIT_CONFIG_KEY_1=credential.helper",
			"GIT_CONFIG_VALUE_1="+credentialHelper,
			"AIRLOCK_GIT_HOST="+host,
			"AIRLOCK_GIT_USERNAME="+user,
			"AIRLOCK_GIT_PASSWORD="+cr.Password,
		)
		return c, cleanup, nil
	}

	ssh := []string{"ssh", "-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no",
		"-o", "ConnectTimeout=30",
		"-o", "ServerAliveInterval=15",
		"-o", "ServerAliveCountMax=4",
		"-o", "GlobalKnownHostsFile=/dev/null",
	}
	var tmp string
	if cr.SSHKey != "" || r.KnownHosts != "" {
		tmp, err = os.MkdirTemp(filepath.Join(m.opts.Root, ".tmp"), "ssh-")
		if err != nil {
			return c, cleanup, fmt.Errorf("preparing ssh: %w", err)
		}
		cleanup = func() { os.RemoveAll(tmp) }
	}
	if cr.SSHKey != "" {
		key := cr.SSHKey
		if !strings.HasSuffix(key, "\n") {
			key += "\n"
		}
		path := filepath.Join(tmp, "key")
		if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
			cleanup()
			return c, func() {}, fmt.Errorf("writing ssh key: %w", err)
		}
		ssh = append(ssh, "-i", sshPath(path))
	}
	if r.KnownHosts != "" {
		path := filepath.Join(tmp, "known_hosts")
		if err := os.WriteFile(path, []byte(r.KnownHosts+"\n"), 0o600); err != nil {
			cleanup()
			return c, func() {}, fmt.Errorf("writing known hosts: %w", err)
		}
		ssh = append(ssh, "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+sshPath(path))
	} else {
		ssh = append(ssh, "-o", "StrictHostKeyChecking=accept-new",
			"-o", "UserKnownHostsFile="+sshPath(filepath.Join(dir, "airlock_known_hosts")))
	}
	c.env = append(c.env, "GIT_SSH_COMMAND="+shellJoin(ssh), "GIT_SSH_VARIANT=ssh")
	return c, cleanup, nil
}

// sshPath escapes a path for ssh options that expand %-tokens (mirror
// directories contain "%2F").
func sshPath(p string) string { return strings.ReplaceAll(p, "%", "%%") }

// shellJoin quotes args for sh, as GIT_SSH_COMMAND is run by the shell.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
		// A multi-line secret (an SSH key) could be echoed line by line.
		for _, line := range strings.Split(sec, "\n") {
			if line = strings.TrimSpace(line); len(line) >= 16 {
				s = strings.ReplaceAll(s, line, "[REDACTED]")
			}
		}
	}
	return s
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string { return string(b.buf) }
