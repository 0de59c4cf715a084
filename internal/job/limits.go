package job

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults that Normalize fills in.
const (
	// DefaultQueue is the queue of a spec that names none.
	DefaultQueue = "default"
	// DefaultMaxAttempts is how many attempts a spec that sets none gets.
	DefaultMaxAttempts = 3
)

// Fixed bounds. Unlike Limits they are part of the spec's meaning, so a
// coordinator cannot change them.
const (
	MinPriority       = -1000
	MaxPriority       = 1000
	MaxAttemptsCap    = 10         // the most attempts a spec may ask for
	MaxCPUs           = 1024       // resources.cpus
	MaxNameLen        = 64         // queue and step names
	MaxImageLen       = 255        // steps[].image
	MaxPathLen        = 4096       // files keys, dir, artifacts, sparse
	MaxURLLen         = 2048       // repository.url
	MaxRepoNameLen    = 255        // repository.name
	MaxSparse         = 1000       // repository.sparse entries
	ReservedEnvPrefix = "AIRLOCK_" // env and secret names the system keeps for itself
)

// Limits bound what a coordinator accepts. The zero value is usable: a field
// that is zero (or negative) means the default from DefaultLimits, so a
// coordinator sets only the limits it wants to change.
type Limits struct {
	MaxSpecBytes ByteSize // the whole spec as submitted (JSON on the wire)
	MaxSteps     int      // steps per job
	MaxRunBytes  ByteSize // each step's run script
	MaxEnv       int      // variables in the job's env and in each step's env
	MaxFiles     int      // entries in files
	MaxFileBytes ByteSize // the contents of all files together
	MaxArtifacts int      // artifact patterns
	MaxSecrets   int      // secret names
	MaxTimeout   Duration // the job's timeout and each step's timeout
}

// DefaultLimits returns the limits a coordinator applies unless configured
// otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxSpecBytes: 1 << 20,
		MaxSteps:     100,
		MaxRunBytes:  64 << 10,
		MaxEnv:       256,
		MaxFiles:     1000,
		MaxFileBytes: 1 << 20,
		MaxArtifacts: 100,
		MaxSecrets:   100,
		MaxTimeout:   Duration(24 * time.Hour),
	}
}

// WithDefaults returns l with every zero or negative field replaced by its
// default: the limits in effect.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits()
	if l.MaxSpecBytes <= 0 {
		l.MaxSpecBytes = d.MaxSpecBytes
	}
	if l.MaxSteps <= 0 {
		l.MaxSteps = d.MaxSteps
	}
	if l.MaxRunBytes <= 0 {
		l.MaxRunBytes = d.MaxRunBytes
	}
	if l.MaxEnv <= 0 {
		l.MaxEnv = d.MaxEnv
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if l.MaxArtifacts <= 0 {
		l.MaxArtifacts = d.MaxArtifacts
	}
	if l.MaxSecrets <= 0 {
		l.MaxSecrets = d.MaxSecrets
	}
	if l.MaxTimeout <= 0 {
		l.MaxTimeout = d.MaxTimeout
	}
	return l
}

// CheckSize reports whether a spec of n bytes is within l.MaxSpecBytes. The
// error is the one Decode returns for an oversized spec (errors.Is matches
// ErrTooLarge), so an HTTP edge can refuse a request by its Content-Length
// before reading the body.
func (l Limits) CheckSize(n int64) error {
	l = l.WithDefaults()
	if n <= int64(l.MaxSpecBytes) {
		return nil
	}
	return &kindError{
		err:  &ValidationError{Problems: []FieldError{{Message: "spec is " + overLimit(n, int64(l.MaxSpecBytes))}}},
		kind: ErrTooLarge,
	}
}

// humanSize writes n bytes as "900 bytes", "64 KiB" or "2.1 MiB".
func humanSize(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 && n > -1024 {
		if n == 1 {
			return "1 byte"
		}
		return strconv.FormatInt(n, 10) + " bytes"
	}
	f := float64(n)
	u := -1
	for (f >= 1024 || f <= -1024) && u < len(units)-1 {
		f /= 1024
		u++
	}
	if f == float64(int64(f)) {
		return strconv.FormatInt(int64(f), 10) + " " + units[u]
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + " " + units[u]
}

// overLimit writes "2.1 MiB, the limit is 1 MiB".
func overLimit(n, limit int64) string {
	a, b := sizes(n, limit)
	return a + ", the limit is " + b
}

// sizes writes a size and its limit for a message. When rounding would make
// the two look equal ("1.0 MiB" and "1 MiB"), it writes exact byte counts.
func sizes(n, limit int64) (string, string) {
	a, b := humanSize(n), humanSize(limit)
	if strings.Replace(a, ".0 ", " ", 1) == b {
		return fmt.Sprintf("%d bytes", n), fmt.Sprintf("%s (%d bytes)", b, limit)
	}
	return a, b
}

// humanDuration writes d without the zero units time.Duration.String keeps:
// "24h" rather than "24h0m0s".
func humanDuration(d Duration) string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
