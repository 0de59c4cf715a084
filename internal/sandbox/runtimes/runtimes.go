// Package runtimes knows every sandbox runtime this build ships, by name, and
// builds the one an executor is configured for. It is the only package that
// imports the runtime implementations, so the executor and the CLI depend on
// the sandbox seam alone.
//
// There is no silent downgrade: asking for a runtime that cannot run on this
// host is an error naming what is missing, and the development-only shell
// runtime is never chosen unless asked for by name.
package runtimes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/netpolicy"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/gvisor"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/shell"
)

// Auto asks for the strongest isolating runtime available on this host.
const Auto = "auto"

// Options configure the runtime being built.
type Options struct {
	// WorkRoot is the directory under which per-attempt state (workspaces,
	// overlays, the image cache by default) is created. It belongs to one
	// executor: the janitor removes what it finds there.
	WorkRoot string
	Logger   *slog.Logger
	// OCIBinary is the oci runtime's OCI runtime: "runc", "crun" or a path;
	// "" picks crun if installed, else runc.
	OCIBinary string
	// Runsc is the gvisor runtime's runsc; "" is runsc in PATH.
	Runsc string
	// GVisorPlatform is the gvisor runtime's platform; "" is systrap.
	GVisorPlatform string
	// CgroupParent is the cgroup under which the container runtimes make
	// the attempts' cgroups; "" is oci.DefaultCgroupParent. It belongs to
	// one executor: its janitor removes what it finds there.
	CgroupParent string
	// Init is the static executable the container runtimes run as PID 1;
	// "" is this executable (which must then be static).
	Init string
	// Images configure the image cache of the container runtimes.
	Images ImageOptions
	// Network configures the egress policy of the container runtimes.
	Network NetworkOptions
}

// entry is one runtime this build knows.
type entry struct {
	isolates bool // false only for the development shell
	// strength orders the isolating runtimes for Auto: higher first.
	strength int
	open     func(Options, *Built) (sandbox.Runtime, error)
}

var known = map[string]entry{
	shell.Name: {isolates: false, open: func(o Options, b *Built) (sandbox.Runtime, error) {
		rt, err := shell.New(shell.Options{Root: filepath.Join(o.WorkRoot, "shell"), Logger: o.Logger})
		if err == nil {
			b.janitors = append(b.janitors, rt)
		}
		return rt, err
	}},
	oci.Name: {isolates: true, strength: 1, open: func(o Options, b *Built) (sandbox.Runtime, error) {
		return o.openContainer(b, func(images oci.ImageFunc, network oci.NetworkFunc) (containerRuntime, error) {
			rt, err := oci.New(oci.Options{Root: filepath.Join(o.WorkRoot, "oci"), Binary: o.OCIBinary,
				CgroupParent: o.CgroupParent, Init: o.Init, Images: images, Network: network, Logger: o.Logger})
			if err != nil {
				return nil, err
			}
			return rt, nil
		})
	}},
	gvisor.Name: {isolates: true, strength: 2, open: func(o Options, b *Built) (sandbox.Runtime, error) {
		return o.openContainer(b, func(images oci.ImageFunc, network oci.NetworkFunc) (containerRuntime, error) {
			rt, err := gvisor.New(gvisor.Options{Root: filepath.Join(o.WorkRoot, "gvisor"), Runsc: o.Runsc,
				Platform: o.GVisorPlatform, CgroupParent: o.CgroupParent, Init: o.Init, Images: images, Network: network,
				Logger: o.Logger})
			if err != nil {
				return nil, err
			}
			return rt, nil
		})
	}},
}

// containerRuntime is what the oci and gvisor runtimes have in common here.
type containerRuntime interface {
	sandbox.Runtime
	janitor
	Close() error
}

// openContainer opens a container runtime with newRuntime over what the
// container runtimes share: the host's lock, the image cache and the egress
// policy. The policy is opened last: newRuntime checks the host (binaries,
// static init, cgroups, user namespaces, disk-limit tools; see oci.Check)
// and fails listing everything missing, and a runtime that cannot run must
// not change the host's network.
func (o Options) openContainer(b *Built, newRuntime func(oci.ImageFunc, oci.NetworkFunc) (containerRuntime, error)) (sandbox.Runtime, error) {
	if err := o.lockHost(b); err != nil {
		return nil, err
	}
	p, err := o.images(b)
	if err != nil {
		return nil, err
	}
	var m *netpolicy.Manager // set before the runtime is returned, so before any Open
	network := func(ctx context.Context, sb string, policy job.Network) (oci.Network, error) {
		n, err := m.Open(ctx, sb, policy)
		if err != nil {
			return nil, err // not a nil *Sandbox in a non-nil interface
		}
		return n, nil
	}
	rt, err := newRuntime(p.ImageFunc(), network)
	if err != nil {
		return nil, err
	}
	b.closers = append(b.closers, rt.Close)
	if m, err = o.network(); err != nil {
		return nil, err
	}
	// The runtime's janitor first: it stops the leftovers' processes.
	b.janitors = append(b.janitors, rt, p, m)
	return rt, nil
}

// Names lists the runtimes this build knows, sorted.
func Names() []string {
	var names []string
	for n := range known {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Open builds the runtime called name. Auto picks the strongest isolating
// runtime this host can run (gvisor, then oci) and fails, with every
// runtime's report, when there is none: it never falls back to the shell.
func Open(name string, opts Options) (*Built, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if name == Auto {
		var names []string
		for n, e := range known {
			if e.isolates {
				names = append(names, n)
			}
		}
		sort.Slice(names, func(i, j int) bool { return known[names[i]].strength > known[names[j]].strength })
		var errs []string
		for _, n := range names {
			b, err := Open(n, opts)
			if err == nil {
				opts.Logger.Info("runtime chosen: the strongest isolating runtime this host can run", "runtime", n)
				return b, nil
			}
			errs = append(errs, fmt.Sprintf("%s: %v", n, err))
		}
		return nil, fmt.Errorf("no isolating sandbox runtime can run on this host (`airlock executor validate` says why; "+
			"`airlock executor install` installs what it can):\n  %s\n"+
			"for development only, ask for the shell runtime by name (--runtime shell): it isolates nothing",
			strings.Join(errs, "\n  "))
	}
	e, ok := known[name]
	if !ok {
		return nil, fmt.Errorf("unknown runtime %q (known: %s, or %s)", name, strings.Join(Names(), ", "), Auto)
	}
	b := &Built{}
	rt, err := e.open(opts, b)
	if err != nil {
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	b.Runtime = rt
	return b, nil
}
