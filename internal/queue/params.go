package queue

// What the Store contract says about its parameters, once for every
// implementation: the defaults and bounds, and the list cursor's format.

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
)

// DefaultQueue is the queue of a spec that names none. Validation normally
// fills it in; a store only refuses to invent anything stranger.
const DefaultQueue = "default"

// Listing limits (ListParams.Limit).
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// MaxReadBytes is the default and the most one ReadLog returns.
const MaxReadBytes = 1 << 20

// QueueName is the queue the job goes to.
func (p SubmitParams) QueueName() string {
	if p.Spec.Queue == "" {
		return DefaultQueue
	}
	return p.Spec.Queue
}

// MaxAttempts is the job's attempt budget: at least one.
func (p SubmitParams) MaxAttempts() int { return max(p.Spec.MaxAttempts, 1) }

// PageLimit is how many jobs one page holds.
func (p ListParams) PageLimit() int {
	if p.Limit <= 0 {
		return DefaultListLimit
	}
	return min(p.Limit, MaxListLimit)
}

// ByteLimit is how many bytes one read returns at most.
func (p ReadLogParams) ByteLimit() int64 {
	if p.Limit <= 0 || p.Limit > MaxReadBytes {
		return MaxReadBytes
	}
	return int64(p.Limit)
}

// Check refuses a claim without queues or lease, and returns its queues
// sorted and without duplicates.
func (p ClaimParams) Check() ([]string, error) {
	if len(p.Queues) == 0 {
		return nil, fmt.Errorf("claiming a job: no queues given")
	}
	if p.Lease <= 0 {
		return nil, fmt.Errorf("claiming a job: lease %v is not positive", p.Lease)
	}
	queues := slices.Clone(p.Queues)
	slices.Sort(queues)
	return slices.Compact(queues), nil
}

// EncodeCursor is the ListResult.NextCursor that continues below job id.
func EncodeCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(id, 10)))
}

// DecodeCursor reads a cursor; ErrBadCursor if it is not one.
func DecodeCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, fmt.Errorf("%w %q", ErrBadCursor, c)
	}
	id, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w %q", ErrBadCursor, c)
	}
	return id, nil
}
