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
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/shell"
)

// Auto asks for the strongest isolating runtime available on this host.
const Auto = "auto"

// Options configure the runtime being built.
type Options struct {
	// WorkRoot is the directory under which per-attempt state (workspaces,
	// overlays) is created.
	WorkRoot string
	Logger   *slog.Logger
	// OCIBinary is the oci runtime's OCI runtime: "runc", "crun" or a path;
	// "" picks crun if installed, else runc.
	OCIBinary string
}

// entry is one runtime this build knows.
type entry struct {
	isolates bool // false only for the development shell
	open     func(Options) (sandbox.Runtime, error)
}

var known = map[string]entry{
	shell.Name: {isolates: false, open: func(o Options) (sandbox.Runtime, error) {
		return shell.New(shell.Options{Root: o.WorkRoot, Logger: o.Logger})
	}},
	// oci.New checks the host (binary, static init, cgroups, user
	// namespaces, disk-limit tools; see oci.Check) and fails listing
	// everything missing. It also needs an image source, which is not wired
	// yet: until it is, opening "oci" fails saying so.
	oci.Name: {isolates: true, open: func(o Options) (sandbox.Runtime, error) {
		return oci.New(oci.Options{Root: o.WorkRoot, Binary: o.OCIBinary, Logger: o.Logger})
	}},
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
// runtime this host can run and fails when there is none: it never falls back
// to the shell.
func Open(name string, opts Options) (sandbox.Runtime, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if name == Auto {
		return nil, fmt.Errorf("no isolating sandbox runtime is available in this build (known: %s); "+
			"for development only, ask for the shell runtime by name (--runtime shell): it isolates nothing",
			strings.Join(Names(), ", "))
	}
	e, ok := known[name]
	if !ok {
		return nil, fmt.Errorf("unknown runtime %q (known: %s, or %s)", name, strings.Join(Names(), ", "), Auto)
	}
	return e.open(opts)
}
