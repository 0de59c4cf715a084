package joblog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// referenceRedact is the obvious, whole-input redaction the streaming
// Redactor must agree with: find every occurrence of every form, merge the
// ones that overlap, replace each merged range by Mask.
func referenceRedact(in []byte, secrets []string) []byte {
	var spans []span
	for _, f := range secretForms(secrets) {
		for i := 0; i <= len(in); {
			j := bytes.Index(in[i:], []byte(f))
			if j < 0 {
				break
			}
			spans = append(spans, span{int64(i + j), int64(i + j + len(f))})
			i += j + 1
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return int(a.start - b.start) })
	var out []byte
	at := int64(0)
	for i := 0; i < len(spans); {
		cur := spans[i]
		for i++; i < len(spans) && spans[i].start < cur.end; i++ {
			cur.end = max(cur.end, spans[i].end)
		}
		out = append(out, in[at:cur.start]...)
		out = append(out, Mask...)
		at = cur.end
	}
	return append(out, in[at:]...)
}

type matcherKey struct {
	secrets string
	budget  int
}

// matchers caches compiled matchers across the many short redactions of the
// split tests.
var matchers sync.Map // matcherKey → *matcher

// redactAll runs in through a fresh Redactor, written in the given pieces.
func redactAll(secrets []string, denseBudget int, pieces ...[]byte) ([]byte, error) {
	key := matcherKey{fmt.Sprintf("%q", secrets), denseBudget}
	m, ok := matchers.Load(key)
	if !ok {
		m, _ = matchers.LoadOrStore(key, newMatcher(secretForms(secrets), denseBudget))
	}
	var buf bytes.Buffer
	r := newRedactorMatcher(&buf, m.(*matcher))
	for _, p := range pieces {
		n, err := r.Write(p)
		if err != nil {
			return nil, err
		}
		if n != len(p) {
			return nil, fmt.Errorf("Write returned %d, want %d", n, len(p))
		}
	}
	if err := r.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// split cuts b at the given offsets (sorted, within b).
func split(b []byte, at ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, a := range at {
		out = append(out, b[prev:a])
		prev = a
	}
	return append(out, b[prev:])
}

// logText returns n bytes of plausible build output: timestamps, words,
// paths, hex digests and base64 blobs, in lines.
func logText(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	words := []string{"building", "package", "github.com/acme/api/internal/server", "ok", "PASS", "--- FAIL:",
		"TestHandler", "(0.03s)", "go:", "downloading", "golang.org/x/net", "v0.31.0", "npm", "WARN", "deprecated",
		"error:", "warning:", "src/index.ts:42:7", "Compiling", "serde", "v1.0.210", "Finished", "release", "[", "]",
		"target(s)", "in", "12.3s", "=>", "CACHED", "[2/7]", "RUN", "apt-get", "install", "-y", "curl", "ca-certificates"}
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, n+256)
	for len(out) < n {
		out = fmt.Appendf(out, "2025-03-%02dT%02d:%02d:%02d.%03dZ ", rng.IntN(28)+1, rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(1000))
		for range rng.IntN(12) + 2 {
			switch rng.IntN(20) {
			case 0:
				out = append(out, "sha256:"...)
				for range 64 {
					out = append(out, hexd[rng.IntN(16)])
				}
			case 1:
				for range rng.IntN(80) + 8 {
					out = append(out, b64[rng.IntN(64)])
				}
			default:
				out = append(out, words[rng.IntN(len(words))]...)
			}
			out = append(out, ' ')
		}
		out[len(out)-1] = '\n'
	}
	return out[:n]
}

var errTransient = errors.New("connection reset by peer")

// memSink is an in-memory log that behaves as the coordinator's store: a
// chunk ending at or before the end is a no-op, one overlapping the end
// appends the new part, one starting past the end is a gap. It injects
// failures on demand.
type memSink struct {
	mu    sync.Mutex
	log   []byte
	calls int
	// Failure injection, all by call number (1-based).
	failEvery int  // fail every n-th call before storing anything
	loseEvery int  // every n-th call stores, then reports an error (lost response)
	halve     bool // store only the first half of chunks longer than one byte
	limit     int64
	permAfter int   // from this call on, fail with permErr
	permErr   error //
	truncAt   int   // at this call, lose the whole log first (data loss on the coordinator)
	wrongEnd  int   // at this call, acknowledge an end 5 bytes too far
	maxChunk  int
	entered   chan struct{} // if set, receives when a call begins (non-blocking)
	called    chan struct{} // if set, receives after each call (non-blocking)
	gate      chan struct{} // if set, each call waits for a receive from it (or ctx)
}

var errGap = errors.New("log chunk leaves a gap")

func (m *memSink) AppendLog(ctx context.Context, off int64, data []byte) (int64, error) {
	defer func() {
		if m.called != nil {
			select {
			case m.called <- struct{}{}:
			default:
			}
		}
	}()
	if m.entered != nil {
		select {
		case m.entered <- struct{}{}:
		default:
		}
	}
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.maxChunk = max(m.maxChunk, len(data))
	if m.permAfter > 0 && m.calls >= m.permAfter {
		return 0, m.permErr
	}
	if m.failEvery > 0 && m.calls%m.failEvery == 0 {
		return 0, errTransient
	}
	if m.truncAt > 0 && m.calls == m.truncAt {
		m.log = m.log[:0]
	}
	end := int64(len(m.log))
	if off > end {
		return 0, Permanent(fmt.Errorf("append at %d past end %d: %w", off, end, errGap))
	}
	if m.halve && len(data) > 1 {
		data = data[:len(data)/2]
	}
	if newEnd := off + int64(len(data)); newEnd > end {
		if m.limit > 0 && newEnd > m.limit {
			return 0, Permanent(fmt.Errorf("log would reach %d bytes, limit %d", newEnd, m.limit))
		}
		m.log = append(m.log, data[end-off:]...)
	}
	if m.loseEvery > 0 && m.calls%m.loseEvery == 0 {
		return 0, errTransient
	}
	if m.wrongEnd > 0 && m.calls == m.wrongEnd {
		return int64(len(m.log)) + 5, nil
	}
	return int64(len(m.log)), nil
}

func (m *memSink) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.log)
}

func (m *memSink) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// fakeClock is a Clock whose time moves only when Advance is called. After
// reports each timer it creates on armed.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
	armed  chan time.Duration
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), armed: make(chan time.Duration, 64)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{c.now.Add(d), ch})
	select {
	case c.armed <- d:
	default:
	}
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
			continue
		}
		kept = append(kept, t)
	}
	c.timers = kept
}
