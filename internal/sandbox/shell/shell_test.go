package shell_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/sandboxtest"
	"github.com/airlock-run/airlock/internal/sandbox/shell"
	"github.com/airlock-run/airlock/internal/testenv"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sandboxtest.Exercise(t, rt, sandboxtest.Options{
		ExtraEnv: []string{shell.SandboxEnv, shell.RootEnv},
		HostPIDs: true,
	})
}

// newRuntime returns a runtime rooted in a fresh temporary directory.
func newRuntime(t *testing.T) *shell.Runtime {
	t.Helper()
	rt, err := shell.New(shell.Options{Root: t.TempDir(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func open(t *testing.T, rt *shell.Runtime, name string) sandbox.Sandbox {
	t.Helper()
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name})
	if err != nil {
		t.Fatalf("Open(%q): %v", name, err)
	}
	t.Cleanup(func() {
		if err := sb.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sb
}

func run(t *testing.T, sb sandbox.Sandbox, st sandbox.Step) sandbox.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := sb.Run(ctx, st)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func TestNewWarnsThatItIsolatesNothing(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	if _, err := shell.New(shell.Options{Root: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatal(err)
	}
	if got := logs.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "isolates nothing") {
		t.Errorf("New logged %q, want a WARN saying the runtime isolates nothing", got)
	}
}

func TestNewRefusesBadRoot(t *testing.T) {
	t.Parallel()
	for _, root := range []string{"", "/", "/.."} {
		if _, err := shell.New(shell.Options{Root: root, Logger: slog.New(slog.DiscardHandler)}); err == nil {
			t.Errorf("New(Root: %q) succeeded, want an error", root)
		}
	}
}

func TestOpenLayout(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb := open(t, rt, "airlock-42-1")
	if got, want := sb.WorkDir(), filepath.Join(rt.Root(), "airlock-42-1", "work"); got != want {
		t.Errorf("WorkDir() = %q, want %q", got, want)
	}
	for dir, want := range map[string]os.FileMode{
		filepath.Dir(sb.WorkDir()): 0o700,
		sb.WorkDir():               0o755,
	} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", dir, got, want)
		}
	}
	if rt.Name() != shell.Name || shell.Name != "shell" {
		t.Errorf("Name() = %q, want %q", rt.Name(), "shell")
	}
}

func TestOpenRefusesBadNames(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	for _, name := range []string{"", ".", "..", "../x", "a/b", "/abs", "a..b", ".hidden", "-flag", "sp ace", "nul\x00", strings.Repeat("a", 129)} {
		if sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name}); err == nil {
			sb.Close(context.Background())
			t.Errorf("Open(%q) succeeded, want an error", name)
		}
	}
	entries, err := os.ReadDir(rt.Root())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("root holds %d entries after refused Opens, want none", len(entries))
	}
}

func TestOpenRefusesNameInUse(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "job-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "job-1"}); err == nil {
		t.Errorf("second Open of an open name succeeded, want an error")
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	open(t, rt, "job-1") // free again after Close
}

func TestOpenRemovesLeftover(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	stale := filepath.Join(rt.Root(), "job-1", "work", "stale", "file")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	sb := open(t, rt, "job-1")
	entries, err := os.ReadDir(sb.WorkDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("a fresh workspace holds %v, want nothing", entries)
	}
}

func TestRunEnvAdditions(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb := open(t, rt, "job-env")
	var out bytes.Buffer
	res := run(t, sb, sandbox.Step{
		Run:    `printf '%s\n' "$HOME" "$PATH" "$AIRLOCK_SANDBOX" "$AIRLOCK_SANDBOX_ROOT"`,
		Env:    map[string]string{shell.SandboxEnv: "spoofed", shell.RootEnv: "/spoofed"},
		Stdout: &out,
	})
	if !res.Success() {
		t.Fatalf("Result = %+v, want success", res)
	}
	want := []string{sb.WorkDir(), shell.DefaultPath, "job-env", rt.Root()}
	if diff := cmp.Diff(want, strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")); diff != "" {
		t.Errorf("HOME, PATH, markers mismatch (-want +got):\n%s", diff)
	}
}

func TestRunRefusesBadEnv(t *testing.T) {
	t.Parallel()
	sb := open(t, newRuntime(t), "job-badenv")
	for _, env := range []map[string]string{{"": "x"}, {"A=B": "x"}, {"NUL": "a\x00b"}} {
		if _, err := sb.Run(context.Background(), sandbox.Step{Run: "true", Env: env}); err == nil {
			t.Errorf("Run with Env %q succeeded, want an error", env)
		}
	}
}

func TestRunWorkingDirectoryIsTheWorkspace(t *testing.T) {
	t.Parallel()
	sb := open(t, newRuntime(t), "job-pwd")
	for _, dir := range []string{"", "a", "not/yet/there"} {
		var out bytes.Buffer
		if res := run(t, sb, sandbox.Step{Run: "pwd -P", Dir: dir, Stdout: &out}); !res.Success() {
			t.Fatalf("Dir %q: Result = %+v, want success", dir, res)
		}
		if got, want := out.String(), filepath.Join(sb.WorkDir(), dir)+"\n"; got != want {
			t.Errorf("Dir %q: pwd = %q, want %q", dir, got, want)
		}
	}
}

func TestRunRefusesDirOutsideWorkspace(t *testing.T) {
	t.Parallel()
	sb := open(t, newRuntime(t), "job-escape")
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(sb.WorkDir(), "link")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"..", "../x", "a/../../x", "/", outside, "link", "link/new"} {
		res, err := sb.Run(context.Background(), sandbox.Step{Run: "touch ran", Dir: dir})
		if err == nil {
			t.Errorf("Run with Dir %q = %+v, want an error", dir, res)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("a refused Dir created %v outside the workspace", entries)
	}
}

func TestRunAfterCloseFails(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "job-closed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if _, err := sb.Run(context.Background(), sandbox.Step{Run: "true"}); err == nil {
		t.Errorf("Run after Close succeeded, want an error")
	}
}

func TestCloseRemovesSandboxDirectory(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "job-close"})
	if err != nil {
		t.Fatal(err)
	}
	if res := run(t, sb, sandbox.Step{Run: "mkdir -p ro && touch ro/f && chmod 0 ro"}); !res.Success() {
		t.Fatalf("Result = %+v, want success", res)
	}
	if err := sb.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(rt.Root(), "job-close")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox directory after Close: %v, want it gone", err)
	}
	if _, err := os.Stat(rt.Root()); err != nil {
		t.Errorf("root after Close: %v, want it kept", err)
	}
}

func TestCloseRefusesToRemoveMounts(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "job-mount"})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(sb.WorkDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		sb.Close(context.Background())
		testenv.Missing(t, "mounting a tmpfs (root, mount namespace)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
		}
		os.RemoveAll(filepath.Join(rt.Root(), "job-mount"))
	})
	precious := filepath.Join(mnt, "precious")
	if err := os.WriteFile(precious, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sb.Close(context.Background()); err == nil {
		t.Errorf("Close succeeded with a mount under the workspace, want an error")
	}
	if _, err := os.Stat(precious); err != nil {
		t.Errorf("Close deleted a file on a mount under the workspace: %v", err)
	}
}

func TestEscapedProcessDoesNotHoldRun(t *testing.T) {
	t.Parallel()
	sb := open(t, newRuntime(t), "job-escaped")
	// The escapee leaves the group and scrubs the marker, so the runtime
	// cannot find it; it keeps stdout open. Run must still return.
	var out syncBuffer
	start := time.Now()
	res := run(t, sb, sandbox.Step{
		Run:    "setsid env -u AIRLOCK_SANDBOX -u AIRLOCK_SANDBOX_ROOT sleep 30 & echo $! > escaped; echo bye",
		Stdout: &out,
	})
	b, err := os.ReadFile(filepath.Join(sb.WorkDir(), "escaped"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(pid, syscall.SIGKILL) // the test started it; the runtime could not find it
	if !res.Success() || out.String() != "bye\n" {
		t.Errorf("Run = %+v with output %q, want success and %q", res, out.String(), "bye\n")
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Errorf("Run took %v with an escaped process holding its output", elapsed)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	return 0, errors.New("log sink is gone")
}

func TestRunReportsWriterFailure(t *testing.T) {
	t.Parallel()
	sb := open(t, newRuntime(t), "job-writer")
	// The step writes far more than a pipe holds: it must not block on the
	// failed writer, and its result must still come back.
	res, err := sb.Run(context.Background(), sandbox.Step{
		Run:    "head -c 4194304 /dev/zero; exit 7",
		Stdout: &failingWriter{},
	})
	if err == nil || !strings.Contains(err.Error(), "log sink is gone") {
		t.Errorf("Run error = %v, want the writer's error", err)
	}
	if res.ExitCode != 7 {
		t.Errorf("ExitCode = %d, want 7", res.ExitCode)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	open(t, rt, "open") // open: never touched, whatever keep says
	for _, name := range []string{"kept", "stale", "stale-ro"} {
		if err := os.MkdirAll(filepath.Join(rt.Root(), name, "work", "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(rt.Root(), "stale-ro", "work", "sub"), 0o500); err != nil {
		t.Fatal(err)
	}
	// Leftover processes, as a crashed executor would leave them: in their
	// own session, carrying the marker. The test started them, so it waits
	// for them; a waited-for exit is the signal that they were killed.
	leftover := func(name string) *exec.Cmd {
		cmd := exec.Command("sleep", "1000")
		cmd.Env = []string{shell.SandboxEnv + "=" + name, shell.RootEnv + "=" + rt.Root()}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	stale, kept, openLeft := leftover("stale"), leftover("kept"), leftover("open")
	// A process of a sandbox under another root with the same name.
	other := exec.Command("sleep", "1000")
	other.Env = []string{shell.SandboxEnv + "=stale", shell.RootEnv + "=/elsewhere"}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*exec.Cmd{kept, openLeft, other} {
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	// Not a sandbox name: left alone.
	if err := os.WriteFile(filepath.Join(rt.Root(), ".not-a-sandbox"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := rt.RemoveLeftovers(context.Background(), func(name string) bool { return name == "kept" }); err != nil {
		t.Fatalf("RemoveLeftovers: %v", err)
	}

	if err := stale.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("leftover process of a stale sandbox ended with %v, want killed", err)
	}
	for _, c := range []*exec.Cmd{kept, openLeft, other} {
		if !alive(c.Process.Pid) {
			t.Errorf("process with %v was killed", c.Env)
		}
	}
	var got []string
	entries, err := os.ReadDir(rt.Root())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if diff := cmp.Diff([]string{".not-a-sandbox", "kept", "open"}, got); diff != "" {
		t.Errorf("root entries mismatch (-want +got):\n%s", diff)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func TestCloseKillsMarkedProcesses(t *testing.T) {
	t.Parallel()
	rt := newRuntime(t)
	sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: "job-marked"})
	if err != nil {
		t.Fatal(err)
	}
	// A process carrying the sandbox's marker that Run never saw, in a
	// session of its own: only the marker can find it.
	cmd := exec.Command("sleep", "1000")
	cmd.Env = []string{shell.SandboxEnv + "=job-marked", shell.RootEnv + "=" + rt.Root()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	if err := sb.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("marked process ended with %v, want killed", err)
	}
}
