// Package oci is the sandbox runtime that runs each step in a fresh OCI
// container with runc or crun: namespaces, a user namespace, seccomp and
// cgroups, over the attempt's shared workspace. With Options.Runsc it runs
// gVisor's runsc instead, for package gvisor; runsc.go lists what differs.
//
// # Isolation
//
// Every step is a new container from a hardened spec (spec.go), written with
// the runtime-spec types:
//   - all namespaces: PID, network, IPC, UTS, mount, cgroup, and a user
//     namespace that maps container IDs 0–65535 to unprivileged host IDs
//     from Options.IDBase (not the time namespace: runc 1.1 lacks it);
//   - the capability set Capabilities() (Docker's default minus NET_RAW, MKNOD,
//     AUDIT_WRITE and SETFCAP), no_new_privs, RLIMIT_CORE 0;
//   - Docker's default seccomp profile, from github.com/moby/profiles;
//   - Docker's masked and read-only /proc and /sys paths, /sys read-only;
//   - a read-only root filesystem; writable are only /work (the workspace),
//     /tmp (a tmpfs, as large as the memory limit, and charged to it) and
//     the small tmpfs /dev/shm;
//   - the image's user (Image.User, root if unset; IDs below 65536) — root
//     in the container is the unprivileged host user IDBase, and whatever
//     user a step runs as owns the workspace (mount.go);
//   - cgroup limits (memory without swap, pids, CPU quota) from
//     OpenParams.Resources, on the attempt's cgroup above the containers', on
//     cgroup v1, hybrid and v2 hosts, and Result.OOMKilled from the kernel's
//     OOM events (cgroup.go);
//   - a disk limit on the workspace, Resources.Disk, as a loop-mounted ext4
//     filesystem (mount.go).
//
// Resources of zero are not limited: the executor applies its defaults, and
// refuses jobs that ask for more than it offers, before Open.
//
// Network (network.go): a step of a job whose policy is "none" runs in a
// network namespace of its own holding only loopback. For the "internet"
// policy, Options.Network makes the attempt a network namespace with its
// egress rules, which every step joins, with /etc/resolv.conf and /etc/hosts
// provided read-only; without Options.Network such a job gets loopback only
// too, never an unfiltered network. Sandboxes report the policy's denials
// with EgressDenied.
//
// # Steps
//
// A step runs `/bin/sh -c <Run>` in the image named by Step.Image, resolved
// by Options.Images to the image's layers, over which the runtime makes the
// attempt's copy-on-write root filesystem (mount.go), or to a root
// filesystem directory; under the package's init as PID 1 (init.go), with
// stdin /dev/null, its working directory /work/<Dir> (created if missing; a
// Dir leaving the workspace is an error), and exactly
// this environment: Step.Env, plus HOME=/work and PATH (the image's, else
// DefaultPath) when Step.Env does not set them. The image's other
// variables are not added: the executor composes the step's environment. The
// container is `<name>-s<n>`, n counting the attempt's steps from 0, run in
// the foreground with `runc run` (or crun, or runsc), the step's stdout and
// stderr the output pipes (one pipe when both are the same writer; run.go).
// When Run's ctx is done, the
// runtime sends SIGTERM to the container's init, which passes it to every
// process of the step, waits up to Step.KillGrace, then SIGKILLs the init,
// which takes the PID namespace and everything in it along. When the step's
// shell exits, whatever it left running is killed with it.
//
// # Layout and cleanup
//
// The Runtime owns Options.Root and Options.CgroupParent exclusively: its
// janitor, RemoveLeftovers, deletes what it finds there. Each attempt gets
// <Root>/<name> (mode 0711: container root must traverse it to reach its
// mounts), holding work/ (the workspace, WorkDir), idwork/ (its ID-mapped
// mount, bound at /work), disk.img (with a disk limit), images/<key>/ (the
// overlay of each image the steps used: rootfs/, upper/, work/), state/ (the
// OCI runtime's --root), steps/<n>/ (each step's bundle, removed after the
// step) and, with a network, resolv.conf and hosts; and the cgroup
// <CgroupParent>/<name>. Close kills and deletes any container left in
// state/, removes the cgroup in every hierarchy, unmounts everything under
// <Root>/<name>, deletes it, and closes the attempt's network. The janitor
// leaves alone the runtime's own entries of Root, whose names start with a
// dot (.init, and runsc's .runsc).
package oci

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
)

// Name is the runtime's registered name.
const Name = "oci"

// DefaultPath is the PATH a step gets when neither its Env nor its image sets
// one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Defaults of Options.
const (
	DefaultCgroupParent = "/airlock"
	// DefaultIDBase is far from the 100000+ ranges that /etc/subuid hands
	// to users for rootless containers, whose files a sandbox must not own.
	DefaultIDBase = 1_000_000_000
	// idRange is how many IDs the user namespace maps.
	idRange = 65536
)

// Image is the root filesystem a step runs in, and what the runtime takes
// from its image's config. Exactly one of Layers and RootFS is set.
type Image struct {
	// Layers are the image's unpacked layer directories, bottom first, in a
	// shared cache that nothing may write to. The runtime makes the
	// attempt's copy-on-write root filesystem over them, once per attempt
	// and image: an overlay whose lower layers are ID-mapped into the
	// containers' user namespace, so that the image's files keep their
	// owners inside (see mount.go). Keep the layers from being removed
	// (the image leased) until the sandbox is closed.
	Layers []string
	// RootFS is a directory holding a root filesystem, used as it is (for
	// tests and development): never a shared image, since the runtime
	// creates missing mount points (/proc, /sys, /dev, /tmp, /work) in it.
	// Steps see it read-only. With a user namespace, the runtime ID-maps it
	// when its filesystem allows that; else its files show as owned by
	// nobody. Every directory on its path must be searchable by others
	// (mode o+x): the OCI runtime reaches it from the containers' user
	// namespace.
	RootFS string
	// User is the image config's User: "", "uid", "uid:gid", "name" or
	// "name:group", names looked up in RootFS's /etc/passwd and /etc/group.
	// "" is root.
	User string
	// Env is the image config's Env ("KEY=value"). Only PATH is used.
	Env []string
}

// ImageFunc resolves a step's image reference for the attempt called
// sandbox (OpenParams.Name), typically by pulling it into a cache (once per
// attempt) and giving its layers. The runtime calls it once per step.
type ImageFunc func(ctx context.Context, sandbox, ref string) (Image, error)

// DirImage returns an ImageFunc that gives every reference the root
// filesystem dir (Image.RootFS), as root, with no environment: for tests and
// development.
func DirImage(dir string) ImageFunc {
	return func(context.Context, string, string) (Image, error) { return Image{RootFS: dir}, nil }
}

// Options configure a Runtime.
type Options struct {
	// Root is the directory under which per-attempt state is created (e.g.
	// /var/lib/airlock/oci). It is created if missing, made mode 0711, and
	// belongs to the runtime: RemoveLeftovers deletes what it finds there.
	Root string
	// Binary is the OCI runtime: "runc", "crun", or a path to either. ""
	// means crun if it is in PATH, else runc. With Runsc, it is runsc.
	Binary string
	// Images resolves step images. Required.
	Images ImageFunc
	// Init is a statically linked executable that contains this package,
	// run as every container's PID 1 (see init.go). "" means this
	// process's own executable. The runtime copies it into Root.
	Init string
	// CgroupParent is the cgroup, from the hierarchy roots, under which
	// attempts' cgroups are created; it belongs to the runtime like Root.
	// "" means DefaultCgroupParent.
	CgroupParent string
	// IDBase is the first host user and group ID of the 65536 that the
	// containers' user namespace maps. 0 means DefaultIDBase.
	IDBase uint32
	// NoUserNamespace runs containers without a user namespace: root in a
	// step is then the host's root, held back only by capabilities, seccomp
	// and no_new_privs. For hosts without user namespaces or ID-mapped
	// mounts; never chosen by the runtime itself.
	NoUserNamespace bool
	// Network makes the network of each attempt whose policy is "internet"
	// (see network.go). Nil gives every step loopback only, whatever its
	// policy.
	Network NetworkFunc
	// Runsc, when set, makes this a gVisor runtime: Binary is runsc ("" is
	// runsc in PATH) and every step runs in a gVisor sandbox (runsc.go).
	// Package gvisor sets it.
	Runsc *RunscOptions
	// Logger receives the runtime's warnings; nil discards them.
	Logger *slog.Logger
}

// Runtime runs steps in OCI containers. It is safe for concurrent use.
type Runtime struct {
	name     string // Name, or "gvisor" with runsc
	root     string
	binary   string // absolute path
	flavor   string // "runc", "crun" or "runsc"
	runsc    *runscFlavor
	network  NetworkFunc
	version  string // the binary's first --version line
	hide     bool   // run the binary through the cgroup2-hiding wrapper
	self     string // this executable, for the wrapper
	init     string // the init's copy under root
	images   ImageFunc
	cgParent string // without a leading slash
	cg       *cgroupHost
	ids      *idMap   // nil without a user namespace
	userns   *os.File // a user namespace with ids, for ID-mapped mounts
	seccomp  *specs.LinuxSeccomp
	log      *slog.Logger

	netWarn   sync.Once
	idmapWarn sync.Once

	usernsMu sync.Mutex
	swapped  map[[2]uint32]*os.File // user namespaces for non-root steps' workspaces, by uid and gid

	mu   sync.Mutex
	busy map[string]bool // names open, or being removed by RemoveLeftovers
}

var _ sandbox.Runtime = (*Runtime)(nil)

// New checks that this host can run the runtime (see Check), and returns it.
// The error lists everything missing.
func New(opts Options) (*Runtime, error) {
	name := Name
	if opts.Runsc != nil {
		name = "gvisor"
	}
	r, err := newRuntime(name, opts)
	if err != nil {
		return nil, fmt.Errorf("%s runtime: %w", name, err)
	}
	return r, nil
}

func newRuntime(name string, opts Options) (*Runtime, error) {
	if opts.Root == "" {
		return nil, errors.New("no Root is configured")
	}
	if opts.Images == nil {
		return nil, errors.New("no Images function is configured (no image source)")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("resolving root %q: %w", opts.Root, err)
	}
	if root == "/" {
		return nil, errors.New("the Root must not be /")
	}
	host, err := probe(opts)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Runtime, error) {
		host.close()
		return nil, err
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return fail(fmt.Errorf("creating root: %w", err))
	}
	if root, err = filepath.EvalSymlinks(root); err == nil {
		err = os.Chmod(root, 0o711)
	}
	if err == nil && host.ids != nil {
		err = searchable(filepath.Dir(root))
	}
	if err != nil {
		return fail(fmt.Errorf("preparing root %q: %w", opts.Root, err))
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runtime{
		name:     name,
		root:     root,
		network:  opts.Network,
		binary:   host.binary,
		flavor:   host.flavor,
		version:  host.version,
		hide:     host.flavor == "crun" && host.cg.hybridV2Controllers,
		images:   opts.Images,
		cgParent: strings.Trim(host.cgParent, "/"),
		cg:       host.cg,
		ids:      host.ids,
		userns:   host.userns,
		log:      log,
		busy:     make(map[string]bool),
		swapped:  make(map[[2]uint32]*os.File),
	}
	if opts.Runsc != nil {
		r.runsc = &runscFlavor{platform: host.platform, sharedRoot: filepath.Join(root, runscSharedRoot)}
		err := os.MkdirAll(r.runsc.sharedRoot, 0o700)
		if err == nil {
			err = pinNullNetns(filepath.Join(r.runsc.sharedRoot, "null-netns"))
		}
		if err != nil {
			return fail(err)
		}
	}
	if r.hide {
		if r.self, err = os.Executable(); err != nil {
			return fail(fmt.Errorf("finding this executable: %w", err))
		}
	}
	if r.seccomp, err = seccompFor(capabilities); err != nil {
		return fail(err)
	}
	if r.init, err = installInit(host.init, filepath.Join(root, ".init")); err != nil {
		return fail(err)
	}
	return r, nil
}

// installInit copies the init binary to dir/airlock-init, readable and
// executable by all, where the containers' user namespace can reach it; a
// copy also stays valid when the executor's binary is replaced.
func installInit(src, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", fmt.Errorf("installing the container init: %w", err)
	}
	dst := filepath.Join(dir, "airlock-init")
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("installing the container init: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".airlock-init-*")
	if err != nil {
		return "", fmt.Errorf("installing the container init: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, in)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o755)
	}
	if err == nil {
		// Rename: a container starting meanwhile sees the old file or the
		// new one, never half of one.
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return "", fmt.Errorf("installing the container init: %w", err)
	}
	return dst, nil
}

// Name returns "oci", or "gvisor" when it runs runsc.
func (r *Runtime) Name() string { return r.name }

// Close releases what the Runtime holds for all attempts: the network
// namespace pinned for runsc's gofers. Close the attempts' sandboxes first;
// a Runtime is not used after Close.
func (r *Runtime) Close() error {
	if r.runsc == nil {
		return nil
	}
	p := filepath.Join(r.runsc.sharedRoot, "null-netns")
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unpinning %s: %w", p, err)
	}
	return nil
}

// Root returns the runtime's canonical root directory.
func (r *Runtime) Root() string { return r.root }

// Binary returns the OCI runtime's path and its version line.
func (r *Runtime) Binary() (path, version string) { return r.binary, r.version }

// Open creates the attempt's workspace, cgroup and runtime state, removing
// leftovers of an attempt with the same name first. It refuses a name that is
// not a single safe path element, and a name already open in this Runtime.
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
	b, err := r.open(ctx, p)
	if err != nil {
		if rerr := r.remove(context.WithoutCancel(ctx), p.Name); rerr != nil {
			r.log.Warn("cleaning up after a failed open", "sandbox", p.Name, "error", rerr)
		}
		if b != nil && b.net != nil {
			if cerr := b.net.Close(context.WithoutCancel(ctx)); cerr != nil {
				r.log.Warn("closing the network after a failed open", "sandbox", p.Name, "error", cerr)
			}
		}
		r.release(p.Name)
		return nil, fmt.Errorf("opening sandbox %q: %w", p.Name, err)
	}
	return b, nil
}

func (r *Runtime) open(ctx context.Context, p sandbox.OpenParams) (*box, error) {
	dir := filepath.Join(r.root, p.Name)
	if _, err := os.Lstat(dir); err == nil || r.cg.exists(r.cgroup(p.Name)) {
		r.log.Warn("removing a leftover sandbox", "sandbox", p.Name, "dir", dir)
		if err := r.remove(ctx, p.Name); err != nil {
			return nil, err
		}
	}
	b := &box{
		rt:    r,
		name:  p.Name,
		dir:   dir,
		work:  filepath.Join(dir, "work"),
		state: filepath.Join(dir, "state"),
		res:   p.Resources,
	}
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o711}, {b.work, 0o755}, {b.state, 0o700}, {filepath.Join(dir, "steps"), 0o711}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d.path, err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // past the umask
			return nil, err
		}
	}
	// From here on, a failed open returns b: Open closes its network.
	var err error
	if b.net, err = r.openNetwork(ctx, p.Name, p.Network); err != nil {
		return nil, err
	}
	if b.net != nil {
		if err := writeNetworkFiles(dir, b.net.Nameservers()); err != nil {
			return b, err
		}
	}
	if p.Resources.Disk > 0 {
		if err := mountDisk(ctx, filepath.Join(dir, "disk.img"), b.work, int64(p.Resources.Disk)); err != nil {
			return b, err
		}
	}
	b.bind = b.work
	if r.ids != nil {
		b.bind = filepath.Join(dir, "idwork")
		if err := os.Mkdir(b.bind, 0o755); err != nil {
			return b, fmt.Errorf("creating %s: %w", b.bind, err)
		}
		if err := idmapMount(b.work, b.bind, r.userns, false); err != nil {
			return b, fmt.Errorf("mapping the workspace into the user namespace: %w", err)
		}
	}
	limits := p.Resources
	if r.runsc != nil && limits.Pids > 0 {
		limits.Pids = runscHostPids(limits.Pids)
	}
	if err := r.cg.create(r.cgroup(p.Name), limits); err != nil {
		return b, fmt.Errorf("creating the attempt's cgroup: %w", err)
	}
	if b.oom, err = r.cg.watchOOM(r.cgroup(p.Name)); err != nil {
		return b, err
	}
	return b, nil
}

// workspaceUserns returns the user namespace to ID-map the workspace with
// for a step running as uid:gid; see mount.go.
func (r *Runtime) workspaceUserns(uid, gid uint32) (*os.File, error) {
	if uid == 0 && gid == 0 {
		return r.userns, nil
	}
	r.usernsMu.Lock()
	defer r.usernsMu.Unlock()
	key := [2]uint32{uid, gid}
	if ns, ok := r.swapped[key]; ok {
		return ns, nil
	}
	ns, err := newUserns(r.ids.swap(uid), r.ids.swap(gid))
	if err != nil {
		return nil, err
	}
	r.swapped[key] = ns
	return ns, nil
}

// cgroup returns the attempt's cgroup path, relative to the hierarchy roots.
func (r *Runtime) cgroup(name string) string {
	return filepath.Join(r.cgParent, name)
}

// RemoveLeftovers is the runtime's janitor: it kills the containers and
// removes the cgroups, mounts and directories of every attempt found under
// Root or CgroupParent that is neither open in this Runtime nor kept by keep,
// which is typically "the executor is running this attempt". Entries of Root
// that cannot be sandbox names are left alone. A nil keep keeps nothing. The
// error joins every failure; RemoveLeftovers carries on past them.
func (r *Runtime) RemoveLeftovers(ctx context.Context, keep func(name string) bool) error {
	names := make(map[string]bool)
	entries, err := os.ReadDir(r.root)
	if err != nil {
		return fmt.Errorf("removing leftover sandboxes: %w", err)
	}
	for _, e := range entries {
		if sandbox.ValidName(e.Name()) == nil {
			names[e.Name()] = true
		}
	}
	for _, n := range r.cg.children(r.cgParent) {
		if sandbox.ValidName(n) == nil {
			names[n] = true
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
		if err := r.remove(ctx, name); err != nil {
			errs = append(errs, err)
		}
		r.release(name)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing leftover sandboxes: %w", err)
	}
	return nil
}

// cleanupTimeout bounds the removal of an attempt: its runtime commands and
// the wait for its cgroups to empty. Removal runs even when the caller's ctx
// is done.
const cleanupTimeout = 10 * time.Second

// remove destroys everything of attempt name: its containers, its cgroup, its
// mounts and its directory.
func (r *Runtime) remove(ctx context.Context, name string) error {
	// Removal goes ahead when ctx is done, and never waits forever on a
	// process that will not die.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	dir := filepath.Join(r.root, name)
	var errs []error
	state := filepath.Join(dir, "state")
	for _, id := range r.containers(state) {
		// SIGKILL first: delete --force of a running container would do it
		// too, but runc 1.1 then waits for the whole cgroup.
		_ = r.command(ctx, state, "kill", id, "KILL").Run()
		if out, err := r.command(ctx, state, "delete", "--force", id).CombinedOutput(); err != nil {
			if r.hasContainer(state, id) {
				errs = append(errs, fmt.Errorf("deleting container %s: %w: %s", id, err, strings.TrimSpace(string(out))))
			}
		}
	}
	if err := r.cg.remove(ctx, r.cgroup(name)); err != nil {
		errs = append(errs, err)
	}
	if err := unmountAll(dir); err != nil {
		errs = append(errs, err)
	} else if err := hostfs.RemoveTree(dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing sandbox %q: %w", name, err)
	}
	return nil
}

// command returns the OCI runtime invoked with --root state and args.
func (r *Runtime) command(ctx context.Context, state string, args ...string) *exec.Cmd {
	pre := []string{"--root", state}
	if r.runsc != nil {
		pre = append(pre, r.runsc.globalArgs()...)
	}
	args = append(pre, args...)
	cmd := exec.CommandContext(ctx, r.binary, args...)
	if r.hide {
		cmd.Path = r.self
		cmd.Args = append([]string{hideCgroup2Arg0, r.binary}, args...)
	}
	return cmd
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

// searchable checks that every directory from dir up to / can be traversed
// by others: root in a container, an unprivileged host user, must reach its
// bundle and mounts under Root.
func searchable(dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %v: every directory above Root must be searchable by others (chmod o+x), since containers reach their mounts from a user namespace", dir, fi.Mode().Perm())
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// IsStatic reports whether the ELF executable at path needs no dynamic
// loader: the only kind that runs as PID 1 in an arbitrary image.
func IsStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}
