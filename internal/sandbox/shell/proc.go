// Finding and stopping a sandbox's processes.
//
// A step's processes are found two ways, both through /proc: membership of
// the process group the step's shell leads, and the marker variables in
// /proc/<pid>/environ, which every descendant inherits unless it rewrites its
// environment. The group catches descendants that scrubbed the marker; the
// marker catches those that left the group with setsid or setpgid.
//
// The group is only trusted while its leader, the step's shell, has not been
// reaped: Run waits for the shell with waitid(WNOWAIT), which leaves it a
// zombie, so its PID, and hence the group ID, cannot be reused by an
// unrelated process while the tree is being killed. Individual processes are
// signalled through a pidfd, and only after re-checking, with the pidfd
// open, that the PID still names a process of the sandbox; a PID that was
// reused since the scan is left alone.
//
// Zombies count as gone: they have exited and hold no files or memory, only a
// process table entry until their parent reaps them, and in a container whose
// init does not reap, orphans stay zombies forever.
//
// /proc offers no way to wait for a non-child to exit, so stopping polls, with
// a short backoff, until no process is left.
package shell

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	killPoll      = 50 * time.Millisecond // how often SIGKILL is repeated for processes still alive
	killWarnAfter = 10 * time.Second      // when processes surviving SIGKILL are worth a warning
)

// marker identifies one sandbox's processes.
type marker struct {
	root, name string
	log        *slog.Logger
}

func (m marker) env() []string {
	return []string{SandboxEnv + "=" + m.name, RootEnv + "=" + m.root}
}

// stop ends every live process of the sandbox: members of process group
// pgid (when pgid > 0, and only while its leader is unreaped) and carriers of
// the marker. With a grace it sends SIGTERM and SIGCONT first and waits up to
// grace for them to exit; then it sends SIGKILL until none is left, or once
// when ctx is done. It returns how many processes it found at first and how
// many may be left.
func (m marker) stop(ctx context.Context, pgid int, grace time.Duration) (found, left int) {
	live := m.members(pgid)
	found = len(live)
	if found == 0 {
		return 0, 0
	}
	if grace > 0 {
		m.signalAll(pgid, live, unix.SIGTERM)
		m.signalAll(pgid, live, unix.SIGCONT)
		live = m.await(ctx, pgid, time.Now().Add(grace))
	}
	warnAt := time.Now().Add(killWarnAfter)
	for len(live) > 0 {
		m.signalAll(pgid, live, unix.SIGKILL) // at least once, even when ctx is done
		if ctx.Err() != nil {
			break
		}
		live = m.await(ctx, pgid, time.Now().Add(killPoll))
		if len(live) > 0 && !warnAt.IsZero() && time.Now().After(warnAt) {
			m.log.Warn("processes of a sandbox survive SIGKILL; still waiting for them", "sandbox", m.name, "pids", live)
			warnAt = time.Time{}
		}
	}
	return found, len(live)
}

// await polls until no process of the sandbox is live, deadline has passed or
// ctx is done, and returns the processes still live.
func (m marker) await(ctx context.Context, pgid int, deadline time.Time) []int {
	delay := time.Millisecond
	for {
		live := m.members(pgid)
		wait := min(delay, time.Until(deadline))
		if len(live) == 0 || wait <= 0 {
			return live
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return live
		case <-t.C:
		}
		delay = min(2*delay, 25*time.Millisecond)
	}
}

func (m marker) signalAll(pgid int, pids []int, sig unix.Signal) {
	if pgid > 0 {
		_ = unix.Kill(-pgid, sig) // atomic for the group, including children forked since the scan
	}
	for _, pid := range pids {
		m.signal(pid, pgid, sig)
	}
}

// signal sends sig to pid if, with a pidfd pinning it, it is still a live
// process of the sandbox.
func (m marker) signal(pid, pgid int, sig unix.Signal) {
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		return
	case err != nil: // no pidfd support: fall back to the PID, racy as it is
		if m.member(pid, pgid) {
			_ = unix.Kill(pid, sig)
		}
		return
	}
	defer unix.Close(fd)
	if m.member(pid, pgid) {
		_ = unix.PidfdSendSignal(fd, sig, nil, 0)
	}
}

// members returns the live processes of the sandbox, never this process.
func (m marker) members(pgid int) []int {
	self := os.Getpid()
	var live []int
	for _, pid := range allPids() {
		if pid != self && m.member(pid, pgid) {
			live = append(live, pid)
		}
	}
	return live
}

// member reports whether pid is a live process of the sandbox.
func (m marker) member(pid, pgid int) bool {
	state, pgrp, ok := readStat(pid)
	if !ok || state == 'Z' || state == 'X' {
		return false
	}
	if pgid > 0 && pgrp == pgid {
		return true
	}
	root, name, ok := readMarker(pid)
	return ok && root == m.root && name == m.name
}

// scanRoot returns the live processes carrying the marker of a sandbox under
// root, by sandbox name.
func scanRoot(root string) map[string][]int {
	self := os.Getpid()
	found := make(map[string][]int)
	for _, pid := range allPids() {
		if pid == self {
			continue
		}
		if state, _, ok := readStat(pid); !ok || state == 'Z' || state == 'X' {
			continue
		}
		if r, name, ok := readMarker(pid); ok && r == root {
			found[name] = append(found[name], pid)
		}
	}
	return found
}

func allPids() []int {
	f, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// readStat returns the state and process group of pid from /proc/<pid>/stat.
func readStat(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid pgrp ...": comm may hold spaces and
	// parentheses, so the fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 || f[0] == "" {
		return 0, 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	return f[0][0], pgrp, err == nil
}

var (
	sandboxPrefix = []byte(SandboxEnv + "=")
	rootPrefix    = []byte(RootEnv + "=")
)

// readMarker returns the marker in pid's environment, if it has both
// variables. Processes of other users are unreadable and so never match.
func readMarker(pid int) (root, name string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil || !bytes.Contains(b, sandboxPrefix) {
		return "", "", false
	}
	var hasRoot, hasName bool
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		switch {
		case bytes.HasPrefix(kv, sandboxPrefix):
			name, hasName = string(kv[len(sandboxPrefix):]), true
		case bytes.HasPrefix(kv, rootPrefix):
			root, hasRoot = string(kv[len(rootPrefix):]), true
		}
	}
	return root, name, hasRoot && hasName
}
