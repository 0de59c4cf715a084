package oci

import (
	"context"
	"os/exec"

	"github.com/airlock-run/airlock/internal/sandbox"
)

// PrepareBundle writes the bundle of the next step of sb, as Run would, and
// returns its directory, the runtime's --root, and a function that removes
// the bundle: for comparing Run with the raw runtime on the same bundle.
func PrepareBundle(ctx context.Context, sb sandbox.Sandbox, s sandbox.Step) (bundle, state string, cleanup func() error, err error) {
	b := sb.(*box)
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.steps
	b.steps++
	st, err := b.prepare(ctx, n, s)
	if err != nil {
		if st != nil {
			st.cleanup(b)
		}
		return "", "", nil, err
	}
	return st.bundle, b.state, func() error { return st.cleanup(b) }, nil
}

// RuntimeCommand returns the command Run uses to invoke the OCI runtime,
// through the cgroup2-hiding wrapper where the host needs it.
func RuntimeCommand(ctx context.Context, sb sandbox.Sandbox, args ...string) *exec.Cmd {
	b := sb.(*box)
	return b.rt.command(ctx, b.state, args...)
}
