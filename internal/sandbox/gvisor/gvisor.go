// Package gvisor is the sandbox runtime that runs each step in a fresh gVisor
// sandbox with runsc: the step's system calls are served by gVisor's
// user-space kernel (the sentry), never by the host kernel directly.
//
// It is the oci runtime's machinery with runsc as the OCI runtime (see
// internal/sandbox/oci, runsc.go): the same hardened spec, init as PID 1,
// workspace at /work, cgroup limits with Result.OOMKilled, disk limit, output
// pipes, kill sequence and janitor; its package doc is this runtime's too.
// What gVisor changes:
//
//   - Isolation: the sentry is the boundary. It runs in the spec's user
//     namespace as the unprivileged host user Options.IDBase, chrooted, under
//     runsc's own seccomp filters; the gofer, which serves the mounts'
//     files, likewise. Inside, the spec's seccomp profile (Docker's default)
//     is enforced by the sentry (--oci-seccomp), with the spec's capabilities,
//     no_new_privs, read-only root and masked paths.
//   - Platform: systrap by default (Options.Platform); ptrace works anywhere
//     but is much slower for system-call-heavy steps; kvm needs /dev/kvm.
//   - Network: --network=none (loopback inside the sentry only), or, for an
//     attempt with a Network from Options.Network, --network=sandbox on that
//     namespace: the sentry's netstack sends through the namespace's
//     interfaces, where the egress policy applies.
//   - Host resources: the sandbox's host processes — the sentry, its
//     systrap stubs, and the gofer — live in the attempt's cgroup, so the
//     memory and CPU limits apply to them. A step that exhausts its memory
//     has the sentry OOM-killed, which is reported as Result.OOMKilled. The
//     step's pids limit is enforced inside the sentry (forks fail with
//     EAGAIN); the host's pids limit is a larger backstop, and a step that
//     reaches it (a fork bomb, after a few seconds) loses its sandbox and is
//     reported as killed by SIGKILL.
//   - Host Unix sockets cannot be reached (--host-uds=none); FIFOs in the
//     workspace can (--host-fifo=open).
//
// # runsc
//
// runsc must be recent and statically linked: Debian's runsc (2022) mistakes
// every network namespace for the host's on current kernels, and a cgo build
// cannot re-execute itself in the empty chroot it builds for the sandbox. A
// working build:
//
//	CGO_ENABLED=0 go install -ldflags='-s -w' gvisor.dev/gvisor/runsc@v0.0.0-20260905035102-160fafc42237
//
// New and Check refuse a runsc that is dynamically linked or lacks a flag
// the runtime passes.
package gvisor

import (
	"log/slog"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
)

// Name is the runtime's registered name.
const Name = "gvisor"

// Options configure a Runtime.
type Options struct {
	// Runsc is runsc's path; "" means runsc in PATH.
	Runsc string
	// Platform is gVisor's platform: "systrap" ("" is systrap), "ptrace",
	// or "kvm".
	Platform string
	// Root is the directory under which per-attempt state is created; it
	// belongs to the runtime like the oci runtime's Root. Required.
	Root string
	// CgroupParent is the cgroup under which attempts' cgroups are created;
	// "" means oci.DefaultCgroupParent.
	CgroupParent string
	// Images resolves step images. Required.
	Images oci.ImageFunc
	// Init is the static executable run as every sandbox's PID 1; see
	// oci.Options.Init. "" is this process's own executable.
	Init string
	// IDBase is the first of the 65536 host user and group IDs that the
	// sandbox's user namespace maps; 0 means oci.DefaultIDBase.
	IDBase uint32
	// Network makes the network of attempts whose policy is "internet"; nil
	// gives every step loopback only.
	Network oci.NetworkFunc
	// Logger receives the runtime's warnings; nil discards them.
	Logger *slog.Logger
}

// ociOptions returns the oci runtime's options for opts.
func (o Options) ociOptions() oci.Options {
	return oci.Options{
		Root:         o.Root,
		Binary:       o.Runsc,
		Images:       o.Images,
		Init:         o.Init,
		CgroupParent: o.CgroupParent,
		IDBase:       o.IDBase,
		Network:      o.Network,
		Runsc:        &oci.RunscOptions{Platform: o.Platform},
		Logger:       o.Logger,
	}
}

// Runtime runs steps in gVisor sandboxes. It is safe for concurrent use. Its
// sandboxes have an EgressDenied method (oci's), and RemoveLeftovers is its
// janitor.
type Runtime struct {
	*oci.Runtime
}

var _ sandbox.Runtime = (*Runtime)(nil)

// New checks that this host can run the runtime (see Check), and returns it.
// The error lists everything missing.
func New(opts Options) (*Runtime, error) {
	rt, err := oci.New(opts.ociOptions())
	if err != nil {
		return nil, err
	}
	return &Runtime{rt}, nil
}

// Name returns "gvisor".
func (r *Runtime) Name() string { return Name }

// Check reports, item by item, what this host offers the runtime configured
// by opts and what it lacks; New refuses to start when any item is not OK.
func Check(opts Options) []oci.Item {
	return oci.Check(opts.ociOptions())
}
