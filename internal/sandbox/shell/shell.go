// Package shell is the development-only sandbox runtime: it runs a job's
// steps as ordinary host processes, with the executor's user, privileges,
// filesystem and network, in a per-attempt workspace directory.
//
// It isolates nothing. A step can read and write whatever the executor can,
// reach any address, and, if it means to, outlive its sandbox by leaving both
// its process group and its environment marker (see Processes). Use it to
// develop Airlock and nowhere else: an executor must run it only when it is
// named ("shell"), never as a fallback, and New logs a warning that says so.
// Resources and Network in sandbox.OpenParams are ignored, and
// Result.OOMKilled is never set.
//
// # Layout
//
// The Runtime owns its Root directory exclusively: two runtimes, or two
// executors, must not share one, since RemoveLeftovers removes whatever it
// finds there that is not open or kept. Each attempt gets
// <Root>/<name> (mode 0700) holding the workspace <Root>/<name>/work (0755),
// which steps run in and see as $HOME unless their Env sets HOME. Open
// removes a leftover directory of the same name first; Close removes
// <Root>/<name> entirely, read-only directories included, but leaves it in
// place, with an error, if a mount point lies under it.
//
// # Steps
//
// Each step is `/bin/sh -c <Run>` with stdin from /dev/null, its working
// directory Step.Dir inside the workspace (created if missing; a Dir that
// leaves the workspace, lexically or through a symlink, is an error), and
// exactly this environment: Step.Env, plus HOME (the workspace) and PATH
// (DefaultPath) when Step.Env does not set them, plus the marker variables
// SandboxEnv=<name> and RootEnv=<Root>, which always override Step.Env.
//
// # Processes
//
// A step's shell starts in a process group of its own, and every process it
// starts inherits the marker variables. The runtime finds the step's
// processes by both: members of the group, and any process whose
// /proc/<pid>/environ carries the marker (this catches processes that called
// setsid or setpgid; Jenkins's ProcessTreeKiller uses the same trick). When
// Run's ctx is done it sends SIGTERM (and SIGCONT, so that stopped processes
// can act on it) to all of them, waits up to Step.KillGrace, then sends
// SIGKILL until none is left. When the step's shell exits on its own, any
// process it left behind is stopped the same way before Run returns: a step
// does not outlive itself, and `cmd &` at the end of a step does not run on
// into the next one. A process that both leaves the group and scrubs the
// marker from its environment escapes; if it still holds the step's output
// open, Run stops reading that output once the rest of the tree is gone and
// nothing has arrived for a second, logs a warning, and returns.
package shell

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
)

// Name is the runtime's registered name.
const Name = "shell"

// Marker variables, set in every step's environment.
const (
	SandboxEnv = "AIRLOCK_SANDBOX"      // the sandbox's name (OpenParams.Name)
	RootEnv    = "AIRLOCK_SANDBOX_ROOT" // the Root of the runtime that opened it
)

// DefaultPath is the PATH a step gets when its Env does not set one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Options configure a Runtime.
type Options struct {
	// Root is the directory under which per-attempt workspaces are created
	// (e.g. /var/lib/airlock/work). It is created if missing and belongs to
	// the runtime: RemoveLeftovers deletes what it finds there.
	Root string
	// Logger receives the runtime's warnings; nil means slog.Default(), so
	// that the warning that this runtime isolates nothing is never lost.
	Logger *slog.Logger
}

// Runtime runs steps as host processes. It is safe for concurrent use.
type Runtime struct {
	root string
	log  *slog.Logger

	mu   sync.Mutex
	busy map[string]bool // names open, or being removed by RemoveLeftovers
}

var _ sandbox.Runtime = (*Runtime)(nil)

// New returns a shell runtime rooted at opts.Root, and logs a warning that it
// isolates nothing.
func New(opts Options) (*Runtime, error) {
	if opts.Root == "" {
		return nil, errors.New("shell runtime: Root is required")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("shell runtime: resolving root %q: %w", opts.Root, err)
	}
	if root == "/" {
		return nil, errors.New("shell runtime: Root must not be /")
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("shell runtime: creating root: %w", err)
	}
	// A canonical root keeps paths, the marker and the Dir check consistent
	// when Root goes through a symlink.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("shell runtime: resolving root %q: %w", opts.Root, err)
	}
	if _, err := os.ReadFile("/proc/self/environ"); err != nil {
		return nil, fmt.Errorf("shell runtime: finding step processes needs /proc: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Warn("the shell runtime isolates nothing: job steps run as host processes with the executor's privileges; use it only for development",
		"runtime", Name, "root", root)
	return &Runtime{root: root, log: log, busy: make(map[string]bool)}, nil
}

// Name returns "shell".
func (r *Runtime) Name() string { return Name }

// Root returns the runtime's canonical root directory.
func (r *Runtime) Root() string { return r.root }

// Open creates the attempt's workspace, <Root>/<p.Name>/work, removing a
// leftover directory of that name (and killing its processes) first. It
// refuses a name that is not a single safe path element, and a name already
// open in this Runtime.
func (r *Runtime) Open(ctx context.Context, p sandbox.OpenParams) (sandbox.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening sandbox %q: %w", p.Name, err)
	}
	if err := sandbox.ValidName(p.Name); err != nil {
		return nil, fmt.Errorf("opening sandbox: %w", err)
	}
	if !r.claim(p.Name) {
		return nil, fmt.Errorf("opening sandbox %q: it is already in use", p.Name)
	}
	sb, err := r.open(ctx, p.Name)
	if err != nil {
		r.release(p.Name)
		return nil, fmt.Errorf("opening sandbox %q: %w", p.Name, err)
	}
	return sb, nil
}

func (r *Runtime) open(ctx context.Context, name string) (*box, error) {
	m := marker{root: r.root, name: name, log: r.log}
	dir := filepath.Join(r.root, name)
	if _, err := os.Lstat(dir); err == nil {
		r.log.Warn("removing a leftover sandbox", "sandbox", name, "dir", dir)
		if err := r.remove(ctx, m); err != nil {
			return nil, err
		}
	}
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating sandbox directory: %w", err)
	}
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	// Mkdir is subject to the umask; the modes are part of the layout.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	return &box{rt: r, marker: m, dir: dir, work: work}, nil
}

// RemoveLeftovers is the runtime's janitor: it kills the processes and
// removes the directories of every sandbox under Root that is neither open in
// this Runtime nor kept by keep, which is typically "the executor is running
// this attempt". Leftover processes get SIGKILL without a grace. Entries of
// Root that cannot be sandbox names are left alone. A nil keep keeps nothing.
// The error joins every failure; RemoveLeftovers carries on past them.
func (r *Runtime) RemoveLeftovers(ctx context.Context, keep func(name string) bool) error {
	names := make(map[string]bool)
	for name := range scanRoot(r.root) {
		names[name] = true
	}
	entries, err := os.ReadDir(r.root)
	if err != nil {
		return fmt.Errorf("removing leftover sandboxes: %w", err)
	}
	for _, e := range entries {
		if sandbox.ValidName(e.Name()) == nil {
			names[e.Name()] = true
		}
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if keep != nil && keep(name) {
			continue
		}
		if !r.claim(name) {
			continue // open: its Close is in charge
		}
		r.log.Info("removing a leftover sandbox", "sandbox", name)
		if err := r.remove(ctx, marker{root: r.root, name: name, log: r.log}); err != nil {
			errs = append(errs, err)
		}
		r.release(name)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing leftover sandboxes: %w", err)
	}
	return nil
}

// remove kills what is left of sandbox m and deletes its directory.
func (r *Runtime) remove(ctx context.Context, m marker) error {
	var errs []error
	if _, left := m.stop(ctx, 0, 0); left > 0 {
		errs = append(errs, fmt.Errorf("removing sandbox %q: %d of its processes are still running", m.name, left))
	}
	if err := hostfs.RemoveTree(filepath.Join(r.root, m.name)); err != nil {
		errs = append(errs, fmt.Errorf("removing sandbox %q: %w", m.name, err))
	}
	return errors.Join(errs...)
}

func (r *Runtime) claim(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.busy[name] {
		return false
	}
	r.busy[name] = true
	return true
}

func (r *Runtime) release(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.busy, name)
}

// box is one attempt's sandbox.
type box struct {
	rt     *Runtime
	marker marker
	dir    string // <Root>/<name>
	work   string // <Root>/<name>/work

	mu     sync.Mutex
	closed bool
}

var _ sandbox.Sandbox = (*box)(nil)

func (b *box) WorkDir() string { return b.work }

// Close kills any process still carrying the sandbox's marker and removes
// <Root>/<name>. When ctx is done it stops waiting for processes to die but
// still removes the directory. A second Close does nothing.
func (b *box) Close(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	defer b.rt.release(b.marker.name)
	if err := b.rt.remove(ctx, b.marker); err != nil {
		return fmt.Errorf("closing sandbox: %w", err)
	}
	return nil
}
