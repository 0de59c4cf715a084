package executor

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/checkout"
	"github.com/airlock-run/airlock/internal/egressproxy"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
)

// ImagePuller gets a step's image ready for the attempt called sandbox,
// with the job's Docker config JSON of registry credentials ("" for none),
// and returns the digest it resolved to. The attempt's images stay held
// until Release, which the executor calls once the attempt's sandbox is
// closed. An error wrapping sandbox.ErrImage fails the job; any other is the
// system's and the attempt is retried.
type ImagePuller interface {
	Pull(ctx context.Context, sandbox, ref, dockerAuth string) (digest string, err error)
	Release(sandbox string) error
}

// RepositoryCheckout puts a repository at a commit into a workspace; see
// internal/checkout. An error wrapping checkout.ErrCommitNotFound fails the
// job; any other is the system's.
type RepositoryCheckout interface {
	Checkout(ctx context.Context, p checkout.Params) (checkout.Result, error)
}

// ProxySessions hands out proxy sessions for fetches (*egressproxy.Proxy).
type ProxySessions interface {
	Session() *egressproxy.Session
}

// DockerAuthSecret is the job secret that carries the job's registry
// credentials as a Docker config JSON (as GitLab's DOCKER_AUTH_CONFIG).
const DockerAuthSecret = "DOCKER_AUTH_CONFIG"

// resources applies the defaults to what a job asks for and checks it
// against the maximum; refusal names the first field over and both values.
func (c *Config) resources(asked job.Resources) (job.Resources, string) {
	r := asked
	if r.CPUs == 0 {
		r.CPUs = c.DefaultResources.CPUs
	}
	if r.Memory == 0 {
		r.Memory = c.DefaultResources.Memory
	}
	if r.Pids == 0 {
		r.Pids = c.DefaultResources.Pids
	}
	if r.Disk == 0 {
		r.Disk = c.DefaultResources.Disk
	}
	return r, exceeds(r, c.MaxResources)
}

// exceeds names the first field of r above max (zero fields of max do not
// bound), or returns "".
func exceeds(r, max job.Resources) string {
	switch {
	case max.CPUs > 0 && r.CPUs > max.CPUs:
		return fmt.Sprintf("resources.cpus: %g asked, at most %g offered", r.CPUs, max.CPUs)
	case max.Memory > 0 && r.Memory > max.Memory:
		return fmt.Sprintf("resources.memory: %s asked, at most %s offered", r.Memory, max.Memory)
	case max.Pids > 0 && r.Pids > max.Pids:
		return fmt.Sprintf("resources.pids: %d asked, at most %d offered", r.Pids, max.Pids)
	case max.Disk > 0 && r.Disk > max.Disk:
		return fmt.Sprintf("resources.disk: %s asked, at most %s offered", r.Disk, max.Disk)
	}
	return ""
}

// Defaults for the zero values of Config.
const (
	DefaultMaxJobs           = 1
	DefaultMaxClaimsInFlight = 4
	DefaultDrainTimeout      = 10 * time.Minute
	DefaultClaimWait         = 30 * time.Second
	DefaultJobTimeout        = time.Hour
	DefaultKillGrace         = 5 * time.Second
	DefaultReportTimeout     = 2 * time.Minute
	DefaultBackoffMin        = 100 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultJanitorInterval   = 5 * time.Minute
	DefaultArtifactLimit     = 1 << 30

	// MaxClaimWait is the longest long poll the coordinator honours.
	MaxClaimWait = 60 * time.Second
	// defaultHeartbeat is the heartbeat interval before any claim response
	// has said otherwise.
	defaultHeartbeat = 5 * time.Second
)

// Config configures an Executor. The zero value of every field but Queues and
// Runtime is usable; New fills in the defaults.
type Config struct {
	// Name identifies the executor to the coordinator. Default:
	// "<hostname>-<6 random hex digits>", fresh for every New, so that two
	// processes on one host (or one restarted) are never confused.
	Name string
	// Version is the executor's build version, reported to the coordinator.
	Version string
	// Queues are the queues to claim jobs from; at least one.
	Queues []string
	// MaxJobs is how many jobs run at once. Default 1.
	MaxJobs int
	// MaxClaimsInFlight is how many claim long polls may be in flight at
	// once, each for a free job slot: up to min(MaxJobs, MaxClaimsInFlight).
	// An executor whose last claim came back empty keeps only one, until a
	// claim returns a job again. 1 claims one job at a time, which caps an
	// executor at one job per claim round trip. Default 4.
	MaxClaimsInFlight int
	// Runtime runs the jobs' steps.
	Runtime sandbox.Runtime
	// Images pulls the steps' images for an attempt before its first step,
	// with the job's registry credentials, and tells their digests. Nil for
	// runtimes that run no images (the shell): steps' images are then
	// passed through unresolved.
	Images ImagePuller
	// DefaultImage is the image of a step that names none. When Images is
	// set and DefaultImage is "", such a step fails its job.
	DefaultImage string

	// Repositories checks a job's repository out into the workspace before
	// the first step; nil fails the jobs that name one.
	Repositories RepositoryCheckout
	// CoordinatorURL is the coordinator's base URL, whose git endpoint
	// serves the jobs' registered repositories.
	CoordinatorURL string
	// PublicFetch is the egress proxy through which public repository URLs
	// are fetched (public addresses only); nil fails the jobs that name one.
	PublicFetch ProxySessions

	// ArtifactLimit bounds the uncompressed size of one attempt's
	// artifacts; a job over it fails with reason "artifacts". Default
	// DefaultArtifactLimit.
	ArtifactLimit int64
	// TempDir is where artifacts are staged before the upload; "" is the
	// system's temporary directory.
	TempDir string

	// DefaultResources fill in what a job's spec leaves zero.
	DefaultResources job.Resources
	// MaxResources are the most a job may ask for; zero fields do not
	// bound. A job asking for more fails at once, before its sandbox is
	// opened, with reason "resources".
	MaxResources job.Resources

	// JanitorInterval is how often the executor removes what sandboxes of
	// attempts it is not running left on the host (after a crash), if the
	// runtime has a janitor. The first pass runs at Start. Default 5m.
	JanitorInterval time.Duration

	// DrainTimeout is how long Run lets running jobs finish after the first
	// signal before cancelling them. Default 10m.
	DrainTimeout time.Duration
	// ClaimWait is how long a claim long poll waits for a job. Default 30s,
	// at most 60s.
	ClaimWait time.Duration

	// DefaultJobTimeout applies to a job whose spec sets no timeout.
	// Default 1h.
	DefaultJobTimeout time.Duration
	// MaxJobTimeout caps every job's timeout, the spec's included. Zero
	// means no cap.
	MaxJobTimeout time.Duration
	// DefaultStepTimeout applies to a step that sets no timeout. Zero means
	// the step may use whatever remains of the job's timeout.
	DefaultStepTimeout time.Duration
	// KillGrace is how long a step's processes get between SIGTERM and
	// SIGKILL when the step is interrupted. Cancellation by the coordinator
	// takes effect within one heartbeat interval plus KillGrace. Default 5s,
	// at most 1m.
	KillGrace time.Duration
	// ReportTimeout bounds the final report of an attempt: flushing its log
	// and sending Finish, retried with backoff. Past it the executor gives the
	// report up and the coordinator's reaper takes over. Default 2m.
	ReportTimeout time.Duration

	// Backoff paces retries when the coordinator is unreachable. The claims
	// in flight share it: after a failure, one claim per delay probes.
	Backoff Backoff

	// Logger receives the executor's own log lines (never job output).
	// Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for step timestamps. Default time.Now.
	Now func() time.Time
}

// Backoff is a jittered exponential backoff: the n-th consecutive failure
// waits a random duration between Min and min(Max, Min·2ⁿ⁻¹).
type Backoff struct {
	Min time.Duration // default 100ms
	Max time.Duration // default 30s
}

// Delay returns how long to wait after the n-th consecutive failure (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	if hi < lo {
		hi = lo
	}
	ceil := lo
	for i := 1; i < n && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = min(ceil, hi)
	if ceil <= lo {
		return lo
	}
	return lo + rand.N(ceil-lo+1)
}

// Validate reports the first problem with c. Zero values that have a default
// are valid.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Queues) == 0 {
		errs = append(errs, errors.New("at least one queue is required"))
	}
	for _, q := range c.Queues {
		if strings.TrimSpace(q) == "" {
			errs = append(errs, errors.New("queue names must not be empty"))
			break
		}
	}
	if c.Runtime == nil {
		errs = append(errs, errors.New("a sandbox runtime is required"))
	}
	if c.MaxJobs < 0 {
		errs = append(errs, fmt.Errorf("max jobs is %d, must be at least 1", c.MaxJobs))
	}
	if c.MaxClaimsInFlight < 0 {
		errs = append(errs, fmt.Errorf("max claims in flight is %d, must be at least 1", c.MaxClaimsInFlight))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"drain timeout", c.DrainTimeout},
		{"claim wait", c.ClaimWait},
		{"default job timeout", c.DefaultJobTimeout},
		{"max job timeout", c.MaxJobTimeout},
		{"default step timeout", c.DefaultStepTimeout},
		{"kill grace", c.KillGrace},
		{"report timeout", c.ReportTimeout},
		{"backoff min", c.Backoff.Min},
		{"backoff max", c.Backoff.Max},
		{"janitor interval", c.JanitorInterval},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %s, must not be negative", d.name, d.v))
		}
	}
	if c.ClaimWait > MaxClaimWait {
		errs = append(errs, fmt.Errorf("claim wait is %s, at most %s", c.ClaimWait, MaxClaimWait))
	}
	if c.KillGrace > time.Minute {
		errs = append(errs, fmt.Errorf("kill grace is %s, at most 1m", c.KillGrace))
	}
	for _, r := range []struct {
		name string
		v    job.Resources
	}{{"default", c.DefaultResources}, {"max", c.MaxResources}} {
		if r.v.CPUs < 0 || r.v.Memory < 0 || r.v.Pids < 0 || r.v.Disk < 0 {
			errs = append(errs, fmt.Errorf("%s job resources must not be negative", r.name))
		}
	}
	if err := exceeds(c.DefaultResources, c.MaxResources); err != "" {
		errs = append(errs, fmt.Errorf("default job resources exceed the maximum: %s", err))
	}
	if c.Backoff.Min > 0 && c.Backoff.Max > 0 && c.Backoff.Min > c.Backoff.Max {
		errs = append(errs, fmt.Errorf("backoff min %s is above backoff max %s", c.Backoff.Min, c.Backoff.Max))
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero value that has a default filled in.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = defaultName()
	}
	if c.MaxJobs == 0 {
		c.MaxJobs = DefaultMaxJobs
	}
	if c.MaxClaimsInFlight == 0 {
		c.MaxClaimsInFlight = DefaultMaxClaimsInFlight
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ClaimWait == 0 {
		c.ClaimWait = DefaultClaimWait
	}
	if c.DefaultJobTimeout == 0 {
		c.DefaultJobTimeout = DefaultJobTimeout
	}
	if c.KillGrace == 0 {
		c.KillGrace = DefaultKillGrace
	}
	if c.ReportTimeout == 0 {
		c.ReportTimeout = DefaultReportTimeout
	}
	if c.Backoff.Min == 0 {
		c.Backoff.Min = DefaultBackoffMin
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = max(DefaultBackoffMax, c.Backoff.Min)
	}
	if c.ArtifactLimit == 0 {
		c.ArtifactLimit = DefaultArtifactLimit
	}
	if c.JanitorInterval == 0 {
		c.JanitorInterval = DefaultJanitorInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Queues = append([]string(nil), c.Queues...)
	return c
}

// defaultName is "<hostname>-<6 random hex digits>".
func defaultName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "executor"
	}
	var b [3]byte
	_, _ = crand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}
