package joblog

// The Streamer moves a job attempt's output from the executor to the
// coordinator's log, one goroutine shipping ordered chunks to a Sink.
//
// Writers append to a ring buffer of at most BufferSize bytes and block while
// it is full (backpressure on the step, never unbounded memory). The shipping
// goroutine takes up to ChunkSize bytes out of it as soon as a chunk is full,
// when the oldest buffered byte has waited FlushInterval, or at Close, copies
// them into its one in-flight chunk (freeing buffer space at once) and calls
// AppendLog at the offset the sink has acknowledged so far. A failed call is
// retried at the same offset with jittered exponential backoff; the sink
// treats a resend as a no-op, so a chunk whose acknowledgement was lost is
// never duplicated, and since a chunk is only sent once the previous one is
// acknowledged there is never a gap.
//
// The cap keeps the head and the tail of the output. With a Limit, the first
// head = Limit − TailSize − markerBudget bytes go through the buffer as they
// come; everything after that goes into a ring of TailSize+markerBudget bytes
// that only ever keeps the latest bytes. At Close, once the head is
// acknowledged, the ring is sent: verbatim when it never overflowed (so an
// output of at most Limit bytes arrives whole), or else the marker
// "\n[airlock: N bytes omitted]\n" followed by the last TailSize bytes.
// markerBudget is the length of the marker with the largest N, so the total
// never exceeds Limit.
//
// When shipping stops for good — the Retry function refuses an error, the
// sink's acknowledgements disagree with what was sent, or the context is done
// — the buffered bytes are dropped and Write keeps accepting and discarding,
// so a step is never blocked by a log it can no longer deliver. Close reports
// the error.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Sink receives ordered log chunks. The executor adapts the API client to it.
type Sink interface {
	// AppendLog stores data at byte offset off and returns the log's new end.
	// Resending a chunk is harmless (the coordinator treats a resend as a
	// no-op). It must honour ctx and must not keep data after returning.
	AppendLog(ctx context.Context, off int64, data []byte) (end int64, err error)
}

// Clock is the time source of a Streamer's flush timer and retry backoff.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// ErrPermanent marks a Sink error that retrying cannot fix (the attempt is
// stale, the job token is revoked, the log has a gap or hit its limit). Wrap
// such errors with Permanent, or give the Streamer a Retry function.
var ErrPermanent = errors.New("permanent log error")

// ErrOutOfSync is returned when the sink acknowledges a chunk with an end
// offset that does not match the bytes sent: the coordinator's log and the
// executor's disagree, and no resend can repair that.
var ErrOutOfSync = errors.New("log offsets out of sync with the sink")

// Permanent wraps err so that errors.Is(err, ErrPermanent) holds, as well as
// errors.Is and errors.As for err itself.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() []error { return []error{ErrPermanent, e.err} }

// Defaults of StreamerOptions.
const (
	DefaultChunkSize     = 256 << 10
	DefaultFlushInterval = 250 * time.Millisecond
	DefaultBufferSize    = 4 << 20
	DefaultMaxTailSize   = 1 << 20
	DefaultRetryMin      = 100 * time.Millisecond
	DefaultRetryMax      = 10 * time.Second
)

const markerFormat = "\n[airlock: %d bytes omitted]\n"

// markerBudget is the longest marker there can be.
var markerBudget = int64(len(fmt.Sprintf(markerFormat, int64(math.MaxInt64))))

// StreamerOptions configure a Streamer. The zero value is usable.
type StreamerOptions struct {
	// ChunkSize is the largest chunk sent. Default DefaultChunkSize.
	ChunkSize int
	// FlushInterval is the longest a byte waits in the buffer before a chunk
	// goes out, however small. Default DefaultFlushInterval.
	FlushInterval time.Duration
	// Limit is the most bytes the coordinator keeps for the attempt (from the
	// claim); 0 means unlimited. A Limit smaller than the longest marker (46 bytes)
	// keeps the first Limit bytes and drops the rest without a marker.
	Limit int64
	// TailSize is how much of Limit is kept from the end of the output.
	// Zero means min(Limit/4, DefaultMaxTailSize); negative means none.
	TailSize int64
	// BufferSize is how many bytes are held before Write blocks. Default
	// DefaultBufferSize.
	BufferSize int
	// Retry reports whether a failed AppendLog is tried again. Default:
	// every error except those that wrap ErrPermanent. Whatever it says,
	// nothing is retried once the Streamer's context is done.
	Retry func(err error) bool
	// RetryMin and RetryMax bound the backoff: the n-th consecutive failure
	// waits a random duration between RetryMin and min(RetryMax,
	// RetryMin·2ⁿ⁻¹). Defaults DefaultRetryMin and DefaultRetryMax.
	RetryMin, RetryMax time.Duration
	// Clock drives the flush timer and the backoff. Default the real clock.
	Clock Clock
	// Logger receives retries and the reason shipping stopped. Default: none.
	Logger *slog.Logger
}

func (o StreamerOptions) withDefaults() StreamerOptions {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	if o.Retry == nil {
		o.Retry = func(err error) bool { return !errors.Is(err, ErrPermanent) }
	}
	if o.RetryMin <= 0 {
		o.RetryMin = DefaultRetryMin
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(o.RetryMin, DefaultRetryMax)
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// capPlan splits Limit between head and tail.
type capPlan struct {
	head int64 // bytes shipped as they come; -1: no cap
	tail int64 // bytes of the end kept when something is omitted
	ring int64 // tail ring capacity: tail + markerBudget, or 0
}

func planCap(limit, tailSize int64) capPlan {
	if limit <= 0 {
		return capPlan{head: -1}
	}
	if limit < markerBudget {
		return capPlan{head: limit}
	}
	tail := tailSize
	switch {
	case tail == 0:
		tail = min(limit/4, DefaultMaxTailSize)
	case tail < 0:
		tail = 0
	}
	tail = min(tail, limit-markerBudget)
	return capPlan{head: limit - markerBudget - tail, tail: tail, ring: tail + markerBudget}
}

// Streamer ships a job attempt's log to a Sink: ordered, chunked, retried,
// capped. Writes are safe for concurrent use and each Write's bytes stay
// together. Close must be called; it stops the shipping goroutine.
type Streamer struct {
	sink   Sink
	o      StreamerOptions
	cap    capPlan
	fullAt int // buffered bytes that make a full chunk

	ctx       context.Context
	cancel    context.CancelCauseFunc
	stopAfter func() bool

	sem  chan struct{} // serialises Write and Close
	kick chan struct{} // wakes the shipping goroutine
	done chan struct{} // closed when the shipping goroutine returns

	written, sent atomic.Int64

	mu           sync.Mutex
	cond         sync.Cond // signalled when buffer space frees or shipping stops
	buf          []byte    // ring buffer of bytes to ship
	r, n         int       // read index and length in buf
	pendingSince time.Time // when the oldest buffered byte arrived, roughly
	head         int64     // bytes routed to the buffer
	tail         []byte    // ring of the latest bytes past the head
	tailN        int64     // bytes routed to the tail
	closed       bool
	stopped      bool  // shipping stopped for good; writes discard
	finished     bool  // the shipping goroutine is done
	discarded    bool  // bytes were written after shipping stopped
	err          error // why shipping stopped
}

// NewStreamer starts a Streamer shipping to sink. Cancelling ctx stops the
// shipping: give it a context that outlives the job's cancellation, so the
// log of a cancelled step still arrives.
func NewStreamer(ctx context.Context, sink Sink, opts StreamerOptions) *Streamer {
	o := opts.withDefaults()
	s := &Streamer{
		sink:   sink,
		o:      o,
		cap:    planCap(o.Limit, o.TailSize),
		fullAt: min(o.ChunkSize, o.BufferSize),
		sem:    make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	s.cond.L = &s.mu
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	s.stopAfter = context.AfterFunc(s.ctx, func() { s.stop(context.Cause(s.ctx)) })
	go s.run()
	return s
}

// Write queues p for shipping, blocking while the buffer is full. It returns
// len(p) and nil even when shipping has stopped (the bytes are then
// discarded; Close reports why), and ErrClosed after Close.
func (s *Streamer) Write(p []byte) (int, error) {
	s.sem <- struct{}{}
	defer func() { <-s.sem }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	n := len(p)
	s.written.Add(int64(n))
	for len(p) > 0 {
		if s.stopped {
			s.discarded = true
			break
		}
		if s.cap.head >= 0 && s.head >= s.cap.head {
			s.toTail(p)
			break
		}
		k := len(p)
		if s.cap.head >= 0 {
			k = int(min(int64(k), s.cap.head-s.head))
		}
		free := s.reserve(k)
		if free == 0 {
			s.cond.Wait()
			continue
		}
		k = min(k, free)
		s.enqueue(p[:k])
		s.head += int64(k)
		p = p[k:]
	}
	return n, nil
}

// reserve grows the buffer towards room for k more bytes, up to BufferSize,
// and returns the room there is.
func (s *Streamer) reserve(k int) int {
	if free := len(s.buf) - s.n; free >= k || len(s.buf) == s.o.BufferSize {
		return free
	}
	size := min(s.o.BufferSize, max(2*len(s.buf), s.n+k, 4<<10))
	nb := make([]byte, size)
	s.copyOut(nb[:s.n])
	s.buf, s.r = nb, 0
	return size - s.n
}

// copyOut copies the first len(dst) buffered bytes into dst without
// consuming them.
func (s *Streamer) copyOut(dst []byte) {
	c := copy(dst, s.buf[s.r:min(s.r+len(dst), len(s.buf))])
	copy(dst[c:], s.buf)
}

func (s *Streamer) enqueue(b []byte) {
	before := s.n
	w := (s.r + s.n) % len(s.buf)
	c := copy(s.buf[w:], b)
	copy(s.buf, b[c:])
	s.n += len(b)
	if before == 0 {
		s.pendingSince = s.o.Clock.Now()
		s.wake()
	} else if before < s.fullAt && s.n >= s.fullAt {
		s.wake()
	}
}

func (s *Streamer) take(dst []byte) int {
	k := min(s.n, len(dst))
	s.copyOut(dst[:k])
	s.r = (s.r + k) % len(s.buf)
	s.n -= k
	return k
}

func (s *Streamer) toTail(p []byte) {
	if s.cap.ring == 0 {
		s.tailN += int64(len(p))
		return
	}
	if s.tail == nil {
		s.tail = make([]byte, s.cap.ring)
	}
	ring := int64(len(s.tail))
	skip := max(0, int64(len(p))-ring)
	w := (s.tailN + skip) % ring
	c := copy(s.tail[w:], p[skip:])
	copy(s.tail, p[skip+int64(c):])
	s.tailN += int64(len(p))
}

// tailBytes returns, in up to two pieces, the last k bytes of the tail ring.
func (s *Streamer) tailBytes(k int64) (a, b []byte) {
	if k == 0 {
		return nil, nil
	}
	ring := int64(len(s.tail))
	start := (s.tailN - k) % ring
	a = s.tail[start:min(start+k, ring)]
	return a, s.tail[:k-int64(len(a))]
}

// marker returns the omission marker to send, if any.
func (s *Streamer) marker() []byte {
	if s.tailN <= s.cap.ring || s.cap.ring == 0 {
		return nil
	}
	return fmt.Appendf(nil, markerFormat, s.tailN-s.cap.tail)
}

// tailKept returns how many bytes of the tail are sent.
func (s *Streamer) tailKept() int64 {
	if s.tailN <= s.cap.ring {
		return s.tailN
	}
	return s.cap.tail
}

func (s *Streamer) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// stop ends shipping for good with err, unless it is already over.
func (s *Streamer) stop(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.finished {
		return
	}
	s.stopped = true
	s.err = err
	s.buf, s.r, s.n = nil, 0, 0
	s.tail = nil
	s.cond.Broadcast()
	s.o.Logger.Warn("job log shipping stopped", "sent", s.sent.Load(), "error", err)
}

// run is the shipping goroutine.
func (s *Streamer) run() {
	defer close(s.done)
	var chunk []byte
	for {
		s.mu.Lock()
		for !s.stopped && s.n < s.fullAt && !s.closed {
			var timer <-chan time.Time
			if s.n > 0 {
				wait := s.pendingSince.Add(s.o.FlushInterval).Sub(s.o.Clock.Now())
				if wait <= 0 {
					break
				}
				timer = s.o.Clock.After(wait)
			}
			s.mu.Unlock()
			select {
			case <-s.kick:
			case <-timer:
			case <-s.ctx.Done():
				s.stop(context.Cause(s.ctx))
			}
			s.mu.Lock()
		}
		if s.stopped {
			s.finished = true
			s.mu.Unlock()
			return
		}
		if s.n == 0 { // closed and the head is all acknowledged
			s.buf = nil
			s.mu.Unlock()
			s.shipTail(chunk[:0])
			return
		}
		if len(chunk) < min(s.n, s.fullAt) {
			// Grow to what is buffered, up to a full chunk: a short log
			// never pays for a whole chunk.
			chunk = make([]byte, min(s.fullAt, max(2*len(chunk), s.n)))
		}
		k := s.take(chunk)
		if s.n > 0 {
			s.pendingSince = s.o.Clock.Now()
		}
		s.cond.Broadcast()
		s.mu.Unlock()
		if err := s.ship(chunk[:k]); err != nil {
			s.stop(err)
		}
	}
}

// shipTail sends what the tail ring holds, with the marker when bytes were
// omitted, through chunk, and ends shipping. Writers are gone: the Streamer
// is closed.
func (s *Streamer) shipTail(chunk []byte) {
	s.mu.Lock()
	var parts [3][]byte
	parts[0] = s.marker()
	parts[1], parts[2] = s.tailBytes(s.tailKept())
	s.mu.Unlock()
	if need := min(s.fullAt, len(parts[0])+len(parts[1])+len(parts[2])); cap(chunk) < need {
		chunk = make([]byte, 0, need)
	}

	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := s.ship(chunk)
		chunk = chunk[:0]
		return err
	}
	var err error
	for _, p := range parts {
		for len(p) > 0 && err == nil {
			k := min(len(p), cap(chunk)-len(chunk))
			chunk = append(chunk, p[:k]...)
			p = p[k:]
			if len(chunk) == cap(chunk) {
				err = flush()
			}
		}
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		s.stop(err)
	}
	s.mu.Lock()
	s.finished = true
	s.tail = nil
	s.mu.Unlock()
}

// ship delivers data at the acknowledged offset, retrying as allowed.
func (s *Streamer) ship(data []byte) error {
	off := s.sent.Load()
	failures := 0
	for len(data) > 0 {
		end, err := s.sink.AppendLog(s.ctx, off, data)
		if err == nil {
			want := off + int64(len(data))
			switch {
			case end == want:
				s.sent.Store(end)
				return nil
			case end > off && end < want: // the sink kept a prefix
				data = data[end-off:]
				off = end
				s.sent.Store(end)
				failures = 0
				continue
			default:
				return fmt.Errorf("appending %d log bytes at offset %d: sink reports end %d: %w", len(data), off, end, ErrOutOfSync)
			}
		}
		if s.ctx.Err() != nil {
			return fmt.Errorf("appending log at offset %d: %w", off, context.Cause(s.ctx))
		}
		if !s.o.Retry(err) {
			return fmt.Errorf("appending log at offset %d: %w", off, err)
		}
		failures++
		wait := s.backoff(failures)
		s.o.Logger.Warn("appending job log", "offset", off, "failures", failures, "retry_in", wait, "error", err)
		select {
		case <-s.o.Clock.After(wait):
		case <-s.ctx.Done():
			return fmt.Errorf("appending log at offset %d: %w", off, context.Cause(s.ctx))
		}
	}
	return nil
}

func (s *Streamer) backoff(n int) time.Duration {
	lo, hi := s.o.RetryMin, s.o.RetryMin
	for i := 1; i < n && hi < s.o.RetryMax; i++ {
		hi *= 2
	}
	hi = min(hi, s.o.RetryMax)
	if hi <= lo {
		return lo
	}
	return lo + rand.N(hi-lo+1)
}

// Close flushes everything — the head, then the marker and tail — waits for
// the sink to acknowledge it and stops the shipping goroutine. It returns nil
// when every byte accepted (within the cap) was delivered, and otherwise the
// error that stopped shipping. When ctx is done first, Close cancels the
// shipping and returns an error wrapping ctx's cause. Closing again returns
// the same result.
func (s *Streamer) Close(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		s.cancel(fmt.Errorf("closing job log: %w", context.Cause(ctx)))
		s.sem <- struct{}{} // writers stop blocking once shipping stops
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	<-s.sem
	s.wake()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.cancel(fmt.Errorf("closing job log: %w", context.Cause(ctx)))
		<-s.done
	}
	s.stopAfter()
	s.cancel(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Every byte was delivered unless some were discarded or the sink
	// acknowledged less than the head, marker and tail.
	if s.discarded || s.sent.Load() < s.head+int64(len(s.marker()))+s.tailKept() {
		if s.err == nil { // cannot happen: shipping only ends early by stop
			return fmt.Errorf("job log incomplete: %d bytes acknowledged", s.sent.Load())
		}
		return s.err
	}
	return nil
}

// Err returns the error that stopped shipping for good, if any, even when
// no byte was lost by it. The executor can use it to notice early that its
// attempt is stale.
func (s *Streamer) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Written returns the bytes accepted from writers, before the cap.
func (s *Streamer) Written() int64 { return s.written.Load() }

// Sent returns the bytes the sink has acknowledged: the log's end offset.
func (s *Streamer) Sent() int64 { return s.sent.Load() }

var _ io.Writer = (*Streamer)(nil)
var _ io.WriteCloser = (*Redactor)(nil)
