// Package sandbox is the seam between the executor and whatever isolates a
// job's steps: gVisor, OCI containers, Docker, microVMs, or — for development
// only — the host shell. Implementations live in sub-packages named for what
// they wrap; each passes sandboxtest.Exercise.
//
// # Contract
//
// Lifecycle: the executor calls Runtime.Open once per job attempt, then
// Sandbox.Run once per step, in order, then Sandbox.Close exactly once, even
// after a failure or a cancellation. Steps of one job share the workspace
// (mounted at /work for container runtimes; WorkDir() on the host for all).
// Nothing of the job may survive Close: processes, files, network state.
//
// Concurrency: a Runtime is used by many jobs at once and must be safe for
// concurrent use. A Sandbox is used by one goroutine at a time.
//
// Context: when ctx of Run is done, Run stops the step's whole process tree —
// SIGTERM to every process, then SIGKILL to whatever is left after
// Step.KillGrace — waits until every process is gone, and returns the Result
// with Interrupted set and a nil error. The caller reads context.Cause(ctx) to
// tell a timeout from a cancellation. Open and Close honour ctx for their own
// blocking work; Close still removes everything it can when ctx is done.
//
// Results and errors: a step that ran and exited — with any code, by a signal,
// killed for memory — is a Result, never an error. An error from Run means the
// system could not run the step at all (the image is missing, the runtime
// crashed); the executor reports the attempt as errored and it is retried.
//
// Output: Run copies the step's stdout and stderr to Step.Stdout and
// Step.Stderr as they are produced. When both are the same io.Writer, the
// runtime must preserve the relative order of the bytes the step wrote to its
// two streams (one pipe for both). Writes to them may block; the runtime must
// not buffer without bound.
package sandbox

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/airlock-run/airlock/internal/job"
)

// ErrImage marks an error about a step's image that retrying cannot fix: the
// reference is malformed or names no image, the registry refuses it, a layer
// is unsafe. The job fails with reason "image" instead of being retried.
var ErrImage = errors.New("unusable image")

// Runtime opens sandboxes for job attempts.
type Runtime interface {
	// Name is the runtime's registered name ("shell", "gvisor", "oci", ...).
	Name() string
	// Open prepares an isolated environment for one job attempt: its
	// workspace, and whatever the runtime keeps per job.
	Open(ctx context.Context, p OpenParams) (Sandbox, error)
}

// OpenParams describe the job attempt a sandbox is for.
type OpenParams struct {
	// Name identifies the attempt on the host ("airlock-42-1"). Every host
	// resource the sandbox creates carries it, so a janitor can find leftovers.
	Name      string
	Resources job.Resources
	Network   job.Network
}

// Sandbox is one job attempt's isolated environment.
type Sandbox interface {
	// WorkDir is the host directory that steps see as their workspace. The
	// executor writes job files and the checkout here before the first step.
	WorkDir() string
	// Run runs one step to completion; see the package contract.
	Run(ctx context.Context, s Step) (Result, error)
	// Close destroys the sandbox and everything it created on the host.
	Close(ctx context.Context) error
}

// Step is one command to run.
type Step struct {
	Image string // image reference; ignored by the shell runtime
	// User runs the step as this user ("uid", "uid:gid", "name",
	// "name:group", names from the image) instead of the image's; ignored
	// by the shell runtime.
	User string
	Run  string            // a script run with /bin/sh -c (`set -e` is not implied)
	Env  map[string]string // the step's whole environment apart from what the runtime adds (HOME, PATH if unset)
	Dir  string            // working directory relative to the workspace; "" is the workspace root
	// KillGrace is how long processes get between SIGTERM and SIGKILL when
	// the step is interrupted. Zero means DefaultKillGrace.
	KillGrace time.Duration
	Stdout    io.Writer
	Stderr    io.Writer
}

// DefaultKillGrace is the SIGTERM→SIGKILL grace when Step.KillGrace is zero.
const DefaultKillGrace = 5 * time.Second

// Result is how a step ended.
type Result struct {
	ExitCode    int    // the exit status; -1 when killed by a signal
	Signal      string // the signal that ended it ("SIGKILL"), if any
	OOMKilled   bool   // killed because it ran out of memory
	Interrupted bool   // ended because ctx was done
}

// Success reports whether the step exited 0 on its own.
func (r Result) Success() bool { return r.ExitCode == 0 && !r.Interrupted && !r.OOMKilled }
