// Package blobtest is the conformance suite of blobstore.Store. Every
// implementation runs it from its own tests:
//
//	func TestStore(t *testing.T) {
//		blobtest.Exercise(t, func(t *testing.T, clock *blobtest.Clock) blobstore.Store {
//			s, err := dirstore.Open(t.TempDir(), dirstore.Options{Now: clock.Now})
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The suite speaks only the blobstore.Store interface and the contract in its
// doc comments. Each case opens a fresh, empty store with its own manual
// Clock and runs in parallel with the others. Created times are compared to
// the millisecond-aligned values the clock hands out, so an implementation
// that keeps milliseconds passes too. A bug fixed in one implementation
// becomes a case here.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/blobstore"
)

// Clock is a manual clock for the store under test: its time moves only when
// Advance is called. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock that reads start until advanced.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// start is where every case's clock begins: a whole second, in UTC.
var start = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// Exercise runs the whole suite against one implementation. open must return
// a fresh, empty store that reads the time from clock.Now, and arrange (with
// t.Cleanup) for it to be closed; it is called once per case, from parallel
// subtests.
func Exercise(t *testing.T, open func(t *testing.T, clock *Clock) blobstore.Store) {
	t.Helper()
	groups := []struct {
		name  string
		cases []testCase
	}{
		{"Put", putCases},
		{"Limit", limitCases},
		{"Atomicity", atomicityCases},
		{"Keys", keyCases},
		{"List", listCases},
		{"Delete", deleteCases},
		{"Touch", touchCases},
		{"Concurrency", concurrencyCases},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, setup(t, open))
				})
			}
		})
	}
}

// testCase is one sentence of the contract.
type testCase struct {
	name string
	run  func(t *testing.T, h *harness)
}

// harness is one case's store, clock and helpers.
type harness struct {
	t     *testing.T
	ctx   context.Context
	store blobstore.Store
	clock *Clock
}

func setup(t *testing.T, open func(t *testing.T, clock *Clock) blobstore.Store) *harness {
	t.Helper()
	clock := NewClock(start)
	return &harness{t: t, ctx: t.Context(), store: open(t, clock), clock: clock}
}

// put stores content under key without a limit and returns the Info.
func (h *harness) put(key, content string) blobstore.Info {
	h.t.Helper()
	info, err := h.store.Put(h.ctx, key, bytes.NewReader([]byte(content)), 0)
	if err != nil {
		h.t.Fatalf("Put(%q): %v", key, err)
	}
	return info
}

// get returns the content and Info of key, failing the test on any error.
func (h *harness) get(key string) (string, blobstore.Info) {
	h.t.Helper()
	content, info, err := h.tryGet(key)
	if err != nil {
		h.t.Fatalf("Get(%q): %v", key, err)
	}
	return content, info
}

func (h *harness) tryGet(key string) (string, blobstore.Info, error) {
	rc, info, err := h.store.Get(h.ctx, key)
	if err != nil {
		return "", blobstore.Info{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return "", blobstore.Info{}, err
	}
	return string(b), info, nil
}

// wantAbsent checks that key has no blob.
func (h *harness) wantAbsent(key string) {
	h.t.Helper()
	if _, err := h.store.Stat(h.ctx, key); !errors.Is(err, blobstore.ErrNotFound) {
		h.t.Errorf("Stat(%q) error = %v, want ErrNotFound", key, err)
	}
	if _, _, err := h.tryGet(key); !errors.Is(err, blobstore.ErrNotFound) {
		h.t.Errorf("Get(%q) error = %v, want ErrNotFound", key, err)
	}
}

// wantContent checks that key holds exactly content, with a matching Info.
func (h *harness) wantContent(key, content string) {
	h.t.Helper()
	got, info := h.get(key)
	if got != content {
		h.t.Errorf("Get(%q) content = %s, want %s", key, abbrev(got), abbrev(content))
	}
	if want := infoOf(key, content); info.Size != want.Size || info.SHA256 != want.SHA256 {
		h.t.Errorf("Get(%q) Info = size %d sha256 %s, want size %d sha256 %s", key, info.Size, info.SHA256, want.Size, want.SHA256)
	}
}

// keys lists every key under prefix, one page at a time of the given size.
func (h *harness) keys(prefix string, pageSize int) []string {
	h.t.Helper()
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			h.t.Fatalf("List(%q) did not end after 1000 pages", prefix)
		}
		page, err := h.store.List(h.ctx, blobstore.ListParams{Prefix: prefix, After: after, Limit: pageSize})
		if err != nil {
			h.t.Fatalf("List(%q, after %q): %v", prefix, after, err)
		}
		if pageSize > 0 && len(page.Blobs) > pageSize {
			h.t.Errorf("List(limit %d) returned %d blobs", pageSize, len(page.Blobs))
		}
		for _, b := range page.Blobs {
			keys = append(keys, b.Key)
		}
		if page.Next == "" {
			return keys
		}
		after = page.Next
	}
}

// infoOf is the Info a blob of content under key has, apart from Created.
func infoOf(key, content string) blobstore.Info {
	sum := sha256.Sum256([]byte(content))
	return blobstore.Info{Key: key, Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
}

// abbrev shortens long content in messages.
func abbrev(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q… (%d bytes)", s[:20], len(s))
	}
	return fmt.Sprintf("%q", s)
}
