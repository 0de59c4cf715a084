package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/blobstore"
	"github.com/airlock-run/airlock/internal/gitmirror"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// Defaults and hard limits of Config.
const (
	DefaultLease             = 30 * time.Second
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultReapInterval      = 5 * time.Second
	DefaultClaimWait         = 30 * time.Second
	MaxClaimWait             = 60 * time.Second
	DefaultLogLimit          = 64 << 20 // bytes kept per attempt
	DefaultMaxRequestBytes   = 2 << 20  // JSON bodies
	DefaultArtifactLimit     = 1 << 30  // compressed artifacts per attempt
	DefaultFileLimit         = 1 << 30  // one uploaded job file
	DefaultRetentionInterval = time.Hour
	DefaultUploadGrace       = 24 * time.Hour
	// MaxLogChunkBytes bounds one log append request (api.MaxLogChunkBytes).
	MaxLogChunkBytes = 4 << 20
	// MinTokenLength is the shortest configured token accepted.
	MinTokenLength = 16

	jobTokenPrefix = "alj_"
)

// Config configures a Server. The zero value of every field but Store and
// the tokens means its default.
type Config struct {
	Store queue.Store

	// ClientTokens may use the client routes (submit, read, cancel, retry,
	// executors) and /metrics; ExecutorTokens may claim and heartbeat and do
	// nothing else. A token may not be in both lists.
	ClientTokens   []string
	ExecutorTokens []string

	// Secrets maps a name a spec may list in spec.secrets to its value; the
	// values go only to the executor that claims such a job.
	Secrets map[string]string

	// Blobs keeps the attempts' artifacts; nil keeps none.
	Blobs blobstore.Store
	// ArtifactLimit bounds one attempt's artifacts (compressed). Default
	// DefaultArtifactLimit.
	ArtifactLimit int64
	// FileLimit bounds one uploaded job file. Default DefaultFileLimit.
	FileLimit int64
	// Retention is how long a finished job is kept, with its logs and
	// artifacts; 0 keeps jobs forever.
	Retention time.Duration
	// RetentionInterval is how often the retention sweep runs. Default
	// DefaultRetentionInterval.
	RetentionInterval time.Duration
	// UploadGrace is how long an uploaded file that no job names is kept
	// (the time a client has between uploading and submitting). Default
	// DefaultUploadGrace.
	UploadGrace time.Duration
	// Peers carries wake-ups from other replicas sharing Store; nil when
	// this coordinator is the store's only user.
	Peers Peers
	// TempDir stages uploads while their digest is checked; "" is the
	// system's temporary directory.
	TempDir string

	// Mirrors keeps the registered repositories' mirrors and serves them to
	// executors; nil serves no repositories.
	Mirrors *gitmirror.Mirrors

	// Limits bound submitted specs; zero means job.DefaultLimits().
	Limits job.Limits

	Lease             time.Duration // attempt lifetime without a heartbeat (30s)
	HeartbeatInterval time.Duration // how often executors should heartbeat (5s)
	ReapInterval      time.Duration // how often expired leases are reaped (5s)
	ClaimWait         time.Duration // default long-poll wait of a claim (30s, at most 60s)

	LogLimit        int64 // log bytes kept per attempt (64 MiB)
	MaxRequestBytes int64 // largest JSON request body (2 MiB); log chunks may be up to 4 MiB

	Logger *slog.Logger
	Now    func() time.Time // the clock; time.Now if nil
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if reflect.ValueOf(c.Limits).IsZero() {
		c.Limits = job.DefaultLimits()
	}
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ReapInterval == 0 {
		c.ReapInterval = DefaultReapInterval
	}
	if c.ClaimWait == 0 {
		c.ClaimWait = DefaultClaimWait
	}
	if c.LogLimit == 0 {
		c.LogLimit = DefaultLogLimit
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.ArtifactLimit == 0 {
		c.ArtifactLimit = DefaultArtifactLimit
	}
	if c.RetentionInterval == 0 {
		c.RetentionInterval = DefaultRetentionInterval
	}
	if c.UploadGrace == 0 {
		c.UploadGrace = DefaultUploadGrace
	}
	if c.FileLimit == 0 {
		c.FileLimit = DefaultFileLimit
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports everything wrong with c, joined. Zero durations and sizes
// are fine (they mean the defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store is required"))
	}
	if len(c.ClientTokens) == 0 {
		errs = append(errs, errors.New("at least one client token is required"))
	}
	if len(c.ExecutorTokens) == 0 {
		errs = append(errs, errors.New("at least one executor token is required"))
	}
	kinds := make(map[string]string)
	check := func(kind string, tokens []string) {
		for i, t := range tokens {
			switch {
			case len(t) < MinTokenLength:
				errs = append(errs, fmt.Errorf("%s token %d is shorter than %d characters", kind, i+1, MinTokenLength))
			case strings.HasPrefix(t, jobTokenPrefix):
				errs = append(errs, fmt.Errorf("%s token %d starts with %q, which is reserved for job tokens", kind, i+1, jobTokenPrefix))
			case strings.TrimSpace(t) != t:
				errs = append(errs, fmt.Errorf("%s token %d has leading or trailing space", kind, i+1))
			}
			if other, ok := kinds[t]; ok && other != kind {
				errs = append(errs, fmt.Errorf("%s token %d is also a %s token", kind, i+1, other))
			}
			kinds[t] = kind
		}
	}
	check("client", c.ClientTokens)
	check("executor", c.ExecutorTokens)
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("retention %s is negative (0 keeps jobs forever)", c.Retention))
	}
	if c.UploadGrace < 0 {
		errs = append(errs, fmt.Errorf("upload grace %s is negative", c.UploadGrace))
	}

	for name, d := range map[string]time.Duration{
		"lease": c.Lease, "heartbeat interval": c.HeartbeatInterval,
		"reap interval": c.ReapInterval, "claim wait": c.ClaimWait,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v is negative", name, d))
		}
	}
	if c.ClaimWait > MaxClaimWait {
		errs = append(errs, fmt.Errorf("claim wait %v is over the maximum %v", c.ClaimWait, MaxClaimWait))
	}
	d := c.withDefaults()
	if d.Lease > 0 && d.HeartbeatInterval > 0 && d.HeartbeatInterval >= d.Lease {
		errs = append(errs, fmt.Errorf("heartbeat interval %v must be shorter than the lease %v", d.HeartbeatInterval, d.Lease))
	}
	if c.LogLimit < 0 {
		errs = append(errs, fmt.Errorf("log limit %d is negative", c.LogLimit))
	}
	if c.MaxRequestBytes < 0 {
		errs = append(errs, fmt.Errorf("max request bytes %d is negative", c.MaxRequestBytes))
	}
	for name := range c.Secrets {
		if name == "" {
			errs = append(errs, errors.New("a secret has an empty name"))
		}
	}
	return errors.Join(errs...)
}
