package bench

// A test of the sandbox benchmarks' process and memory accounting, so that a
// figure in BENCHMARKS.md is not an artefact of a bug there.

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestDescendantsAndTheirMemory(t *testing.T) {
	t.Parallel()
	// A child whose command name holds a space and a parenthesis, which
	// /proc/PID/stat does not escape.
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	odd := filepath.Join(dir, "a) b")
	if err := os.Symlink(sleep, odd); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	if got := ppid(pid); got != os.Getpid() {
		t.Errorf("ppid(%d) = %d, want %d", pid, got, os.Getpid())
	}
	if got := descendants(os.Getpid()); !slices.Contains(got, pid) {
		t.Errorf("descendants = %v, want it to hold %d", got, pid)
	}
	if got := pssKB([]int{pid}); got <= 0 {
		t.Errorf("pssKB of a running sleep = %d, want > 0", got)
	}
	if got := pssKB([]int{-1}); got != 0 {
		t.Errorf("pssKB of no process = %d, want 0", got)
	}
}
