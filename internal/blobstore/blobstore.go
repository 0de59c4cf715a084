// Package blobstore defines the blob store seam, Store, where the coordinator
// keeps what does not belong in the queue store: the artifacts a job sends back
// and the files uploaded with a job. Implementations live in sub-packages named
// for what they wrap (dirstore/, a local directory and the default; an
// S3-compatible one when coordinators scale out); every one of them passes
// blobtest.Exercise.
//
// # Keys
//
// A key is a slash-separated path such as "jobs/42/artifacts/1.tar.gz".
// CheckKey states the rules; they are the same for every implementation, so
// a key that one store accepts every store accepts. The store gives keys no
// meaning: prefixes ("jobs/42/") are how callers group blobs, and
// DeletePrefix is how they drop a group ("delete with the job").
//
// # Retention
//
// Stores keep blobs until they are deleted. Retention is the caller's policy:
// the coordinator deletes a job's prefix with the job, and Sweep removes
// blobs older than a cut-off (orphans such as files uploaded for a job that
// was never submitted) through List and Info.Created, so it works on every
// implementation.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors. Implementations wrap them; callers test with errors.Is.
// The HTTP edge maps each to one status code.
var (
	ErrNotFound   = errors.New("blob not found")      // 404
	ErrTooLarge   = errors.New("over the size limit") // 413
	ErrInvalidKey = errors.New("invalid blob key")    // 400
)

// Store holds blobs by key.
//
// Concurrency: every method is safe for concurrent use by many goroutines
// (and, for shared implementations, by many processes). Concurrent Puts of one
// key leave exactly one of the written blobs, whole; which one is unspecified.
//
// Atomicity: a Put becomes visible all at once when it returns successfully.
// Until then Get, Stat and List see the key's previous blob (or none), and a
// Put that fails — too large, a read error, ctx cancelled, a crash — leaves
// the previous blob (or none), and nothing of what it wrote is ever visible.
//
// Context: cancelling ctx abandons the call. Put notices between reads of r:
// a Read that blocks must be unblocked by the caller (an HTTP server does so
// by closing the request body when the client goes away).
//
// Errors: the sentinels above, wrapped, with the key in the message; anything
// else is a storage failure.
type Store interface {
	// Put stores the content of r under key, replacing any blob already
	// there. It streams: the content is never held in memory whole. When r
	// holds more than limit bytes, Put fails with ErrTooLarge (naming the
	// limit) as soon as it has read limit+1 bytes, and stores nothing; limit
	// 0 means no limit. An error reading r is returned wrapped.
	Put(ctx context.Context, key string, r io.Reader, limit int64) (Info, error)
	// Get opens a blob for reading. The reader yields the content of the
	// blob as it was when Get returned, even if the key is overwritten or
	// deleted meanwhile; the caller must close it. ErrNotFound if there is
	// no blob under key.
	Get(ctx context.Context, key string) (io.ReadCloser, Info, error)
	// Stat describes a blob. ErrNotFound if there is no blob under key.
	Stat(ctx context.Context, key string) (Info, error)
	// Touch sets a blob's Created to now, by the store's clock, leaving its
	// content alone, so that an age-based sweep takes it for new; it
	// returns the blob's Info. ErrNotFound if there is no blob under key.
	Touch(ctx context.Context, key string) (Info, error)
	// Delete removes a blob. Deleting a missing blob is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the blobs whose keys begin with p.Prefix (a plain string
	// prefix: "jobs/4" matches "jobs/42/a"), in ascending key order, one page
	// at a time.
	List(ctx context.Context, p ListParams) (ListPage, error)
	// DeletePrefix removes every blob whose key begins with prefix and
	// returns how many it removed. The empty prefix removes everything. A
	// blob put while DeletePrefix runs may survive it.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
	// Close releases the store's resources.
	Close() error
}

// Info describes a stored blob.
type Info struct {
	Key     string
	Size    int64     // bytes
	SHA256  string    // lowercase hex digest of the content
	Created time.Time // when the Put that stored it completed, by the store's clock
}

// DefaultListLimit is the page size of a List whose Limit is 0.
const DefaultListLimit = 1000

// ListParams selects one page of a List.
type ListParams struct {
	Prefix string // only keys beginning with Prefix; "" for all
	After  string // only keys after this one; "" to start at the beginning
	Limit  int    // at most this many; 0 means DefaultListLimit
}

// ListPage is one page of a List.
type ListPage struct {
	Blobs []Info
	// Next is the After of the next page, or "" when this page is the last.
	Next string
}

// Limits on keys.
const (
	MaxKeyLen     = 1024 // bytes
	MaxSegmentLen = 200  // bytes between slashes, so that a segment plus a suffix fits a file name
	// ReservedSuffix may not end a segment that another one follows: stores
	// that map keys to files name the file of blob "a" "a.blob", apart from
	// the directory "a" that holds blob "a/b".
	ReservedSuffix = ".blob"
)

// CheckKey reports whether key is a valid blob key: valid UTF-8 of 1 to
// MaxKeyLen bytes without control characters (NUL included) or backslashes;
// slash-separated segments, none of them empty (no leading, trailing or double
// slash), "." or "..", or longer than MaxSegmentLen; and no segment but the
// last ending in ReservedSuffix. The error wraps ErrInvalidKey and names the key.
func CheckKey(key string) error {
	if msg := keyProblem(key, false); msg != "" {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, msg)
	}
	return nil
}

// CheckPrefix reports whether prefix can begin a valid key: "" (every key),
// or a string that is a valid key, perhaps followed by a slash ("jobs/42/").
// The error wraps ErrInvalidKey and names the prefix.
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if msg := keyProblem(strings.TrimSuffix(prefix, "/"), strings.HasSuffix(prefix, "/")); msg != "" {
		return fmt.Errorf("%w prefix %q: %s", ErrInvalidKey, prefix, msg)
	}
	return nil
}

// keyProblem says what is wrong with key, or "" if nothing. dir says that a
// segment follows key's last one.
func keyProblem(key string, dir bool) string {
	switch {
	case key == "":
		return "is empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("%d bytes, the limit is %d", len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return "is not valid UTF-8"
	case strings.HasPrefix(key, "/"):
		return "must not begin with a slash"
	}
	for _, r := range key {
		switch {
		case r == 0:
			return "must not contain a NUL byte"
		case unicode.IsControl(r):
			return fmt.Sprintf("must not contain the control character %U", r)
		case r == '\\':
			return "must not contain a backslash"
		}
	}
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		last := i == len(segs)-1 && !dir
		switch {
		case seg == "":
			return "must not have an empty segment (a trailing or double slash)"
		case seg == "." || seg == "..":
			return fmt.Sprintf("must not have a %q segment", seg)
		case len(seg) > MaxSegmentLen:
			return fmt.Sprintf("has a segment of %d bytes, the limit is %d", len(seg), MaxSegmentLen)
		case !last && strings.HasSuffix(seg, ReservedSuffix):
			return fmt.Sprintf("has a directory segment ending in %q", ReservedSuffix)
		}
	}
	return ""
}

// All iterates over every blob whose key begins with prefix, in key order,
// page by page. It stops at the first error, which it yields.
func All(ctx context.Context, s Store, prefix string) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		after := ""
		for {
			page, err := s.List(ctx, ListParams{Prefix: prefix, After: after})
			if err != nil {
				yield(Info{}, err)
				return
			}
			for _, b := range page.Blobs {
				if !yield(b, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			after = page.Next
		}
	}
}

// Sweep deletes the blobs under prefix created before olderThan and returns
// how many it deleted. A blob overwritten while Sweep runs may be deleted even
// though its new version is recent, so sweep only prefixes whose blobs are no
// longer written to (those of finished or abandoned jobs).
func Sweep(ctx context.Context, s Store, prefix string, olderThan time.Time) (int, error) {
	n := 0
	for b, err := range All(ctx, s, prefix) {
		if err != nil {
			return n, fmt.Errorf("sweeping %q: %w", prefix, err)
		}
		if !b.Created.Before(olderThan) {
			continue
		}
		if err := s.Delete(ctx, b.Key); err != nil {
			return n, fmt.Errorf("sweeping %q: %w", prefix, err)
		}
		n++
	}
	return n, nil
}
