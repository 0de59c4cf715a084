package executor

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/sandbox"
)

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
