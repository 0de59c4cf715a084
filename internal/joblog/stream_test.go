package joblog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fastRetry keeps retries quick in tests that inject failures.
func fastRetry(o StreamerOptions) StreamerOptions {
	o.RetryMin, o.RetryMax = time.Microsecond, 100*time.Microsecond
	return o
}

// writeRandomly writes in in pieces of random sizes up to maxWrite.
func writeRandomly(t *testing.T, w interface{ Write([]byte) (int, error) }, in []byte, maxWrite int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	for len(in) > 0 {
		k := min(len(in), rng.IntN(maxWrite)+1)
		n, err := w.Write(in[:k])
		if err != nil || n != k {
			t.Fatalf("Write(%d bytes) = %d, %v", k, n, err)
		}
		in = in[k:]
	}
}

func closeStreamer(t *testing.T, s *Streamer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestStreamerDeliversExactlyOnce(t *testing.T) {
	t.Parallel()
	in := logText(3<<20, 11)
	tests := []struct {
		name string
		sink *memSink
	}{
		{"reliable", &memSink{}},
		{"fails every 3rd call", &memSink{failEvery: 3}},
		{"loses every 2nd ack", &memSink{loseEvery: 2}},
		{"keeps half of each chunk", &memSink{halve: true}},
		{"all of it", &memSink{failEvery: 5, loseEvery: 3, halve: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const chunk = 64 << 10
			s := NewStreamer(context.Background(), tt.sink, fastRetry(StreamerOptions{ChunkSize: chunk, BufferSize: 256 << 10}))
			writeRandomly(t, s, in, 70<<10, 1)
			closeStreamer(t, s)
			got := tt.sink.bytes()
			if !bytes.Equal(got, in) {
				t.Fatalf("log differs from the output: %d bytes, want %d; first difference at %d", len(got), len(in), firstDiff(got, in))
			}
			if got, want := s.Written(), int64(len(in)); got != want {
				t.Errorf("Written() = %d, want %d", got, want)
			}
			if got, want := s.Sent(), int64(len(in)); got != want {
				t.Errorf("Sent() = %d, want %d", got, want)
			}
			if tt.sink.maxChunk > chunk {
				t.Errorf("largest chunk %d bytes, want at most %d", tt.sink.maxChunk, chunk)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// The cap keeps head + marker + tail, exactly, and never more than Limit.
func TestStreamerCap(t *testing.T) {
	t.Parallel()
	budget := len("\n[airlock: 9223372036854775807 bytes omitted]\n")
	tests := []struct {
		name     string
		limit    int64
		tailSize int64
		head     int // expected head (bytes shipped as they come)
		tail     int // expected tail kept when something is omitted
	}{
		{"default tail", 10000, 0, 10000 - 2500 - budget, 2500},
		{"small tail", 10000, 100, 10000 - 100 - budget, 100},
		{"no tail", 10000, -1, 10000 - budget, 0},
		{"tail larger than limit", 10000, 1 << 20, 0, 10000 - budget},
		{"tail capped at 1 MiB", 5 << 20, 0, 5<<20 - 1<<20 - budget, 1 << 20},
	}
	for _, tt := range tests {
		sizes := []int{0, 1, tt.head - 1, tt.head, tt.head + 1, int(tt.limit) - 1, int(tt.limit), int(tt.limit) + 1,
			int(tt.limit) + budget, 3 * int(tt.limit)}
		for _, n := range sizes {
			if n < 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d bytes", tt.name, n), func(t *testing.T) {
				t.Parallel()
				in := logText(n, uint64(n))
				var want []byte
				if n <= int(tt.limit) {
					want = in
				} else {
					omitted := n - tt.head - tt.tail
					want = fmt.Appendf(bytes.Clone(in[:tt.head]), "\n[airlock: %d bytes omitted]\n", omitted)
					want = append(want, in[n-tt.tail:]...)
				}
				sink := &memSink{limit: tt.limit}
				s := NewStreamer(context.Background(), sink, StreamerOptions{Limit: tt.limit, TailSize: tt.tailSize, ChunkSize: 4096})
				writeRandomly(t, s, in, max(3000, n/300), uint64(n))
				closeStreamer(t, s)
				got := sink.bytes()
				if !bytes.Equal(got, want) {
					t.Fatalf("log of %d bytes, want %d; first difference at %d: got %q, want %q", len(got), len(want),
						firstDiff(got, want), excerpt(got, firstDiff(got, want)), excerpt(want, firstDiff(got, want)))
				}
				if int64(len(got)) > tt.limit {
					t.Errorf("log of %d bytes, over the limit of %d", len(got), tt.limit)
				}
				if got, want := s.Written(), int64(n); got != want {
					t.Errorf("Written() = %d, want %d", got, want)
				}
				if got, want := s.Sent(), int64(len(want)); got != want {
					t.Errorf("Sent() = %d, want %d", got, want)
				}
			})
		}
	}
}

func excerpt(b []byte, at int) []byte {
	return b[max(0, at-20):min(len(b), at+40)]
}

func TestStreamerTinyLimitKeepsTheHeadOnly(t *testing.T) {
	t.Parallel()
	sink := &memSink{limit: 30}
	s := NewStreamer(context.Background(), sink, StreamerOptions{Limit: 30})
	in := logText(1000, 3)
	writeRandomly(t, s, in, 100, 3)
	closeStreamer(t, s)
	if got, want := sink.bytes(), in[:30]; !bytes.Equal(got, want) {
		t.Errorf("log = %q, want %q", got, want)
	}
}

func TestStreamerUnlimited(t *testing.T) {
	t.Parallel()
	sink := &memSink{}
	s := NewStreamer(context.Background(), sink, StreamerOptions{})
	in := logText(5<<20, 4)
	writeRandomly(t, s, in, 1<<20, 4)
	closeStreamer(t, s)
	if got := sink.bytes(); !bytes.Equal(got, in) {
		t.Fatalf("log differs from the output at %d", firstDiff(got, in))
	}
	if sink.maxChunk > DefaultChunkSize {
		t.Errorf("largest chunk %d bytes, want at most %d", sink.maxChunk, DefaultChunkSize)
	}
}

// Writers share one Streamer; each Write arrives whole and in order, even
// with backpressure and a flaky sink.
func TestStreamerConcurrentWriters(t *testing.T) {
	t.Parallel()
	sink := &memSink{failEvery: 5, loseEvery: 7}
	s := NewStreamer(context.Background(), sink, fastRetry(StreamerOptions{ChunkSize: 1000, BufferSize: 4096}))
	const writers, lines = 8, 400
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				line := fmt.Sprintf("writer %d line %d %s\n", g, i, strings.Repeat("x", (g*31+i*17)%200))
				if _, err := s.Write([]byte(line)); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	closeStreamer(t, s)
	next := make([]int, writers)
	for _, line := range strings.Split(strings.TrimSuffix(string(sink.bytes()), "\n"), "\n") {
		f := strings.SplitN(line, " ", 5)
		if len(f) != 5 || f[0] != "writer" || f[2] != "line" {
			t.Fatalf("garbled line %q", line)
		}
		g, err1 := strconv.Atoi(f[1])
		i, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || g < 0 || g >= writers {
			t.Fatalf("garbled line %q", line)
		}
		xs := f[4]
		if i != next[g] {
			t.Fatalf("writer %d: line %d, want %d", g, i, next[g])
		}
		if want := strings.Repeat("x", (g*31+i*17)%200); xs != want {
			t.Fatalf("writer %d line %d: payload of %d bytes, want %d", g, i, len(xs), len(want))
		}
		next[g]++
	}
	for g, n := range next {
		if n != lines {
			t.Errorf("writer %d: %d lines, want %d", g, n, lines)
		}
	}
}

// Write blocks once BufferSize bytes wait, and no more is held.
func TestStreamerBackpressure(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	sink := &memSink{gate: gate}
	const bufSize, chunk = 8 << 10, 2 << 10
	s := NewStreamer(context.Background(), sink, StreamerOptions{BufferSize: bufSize, ChunkSize: chunk})
	in := logText(10*bufSize, 5)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		s.Write(in)
	}()
	// Poll (there is no signal for "blocked") until the buffer is full.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		held, size := s.n, len(s.buf)
		s.mu.Unlock()
		if size > bufSize {
			t.Fatalf("buffer grew to %d bytes, over BufferSize %d", size, bufSize)
		}
		if held == bufSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffer holds %d bytes, never filled", held)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-wrote:
		t.Fatal("Write returned while the sink had acknowledged nothing")
	default:
	}
	close(gate) // let every call through
	<-wrote
	closeStreamer(t, s)
	if got := sink.bytes(); !bytes.Equal(got, in) {
		t.Fatalf("log differs from the output at %d", firstDiff(got, in))
	}
}

// Once the sink refuses for good, writes are discarded instead of blocking
// the step, and Close reports the error.
func TestStreamerPermanentError(t *testing.T) {
	t.Parallel()
	errStale := errors.New("attempt is no longer current")
	tests := []struct {
		name  string
		sink  *memSink
		retry func(error) bool
		want  error
	}{
		{"wrapped with Permanent", &memSink{permAfter: 3, permErr: Permanent(errStale)}, nil, errStale},
		{"refused by Retry", &memSink{permAfter: 3, permErr: errStale}, func(err error) bool { return !errors.Is(err, errStale) }, errStale},
		{"gap after data loss", &memSink{truncAt: 4}, nil, errGap},
		{"acknowledgement out of sync", &memSink{wrongEnd: 2}, nil, ErrOutOfSync},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const bufSize = 4 << 10
			s := NewStreamer(context.Background(), tt.sink, fastRetry(StreamerOptions{BufferSize: bufSize, ChunkSize: 1 << 10, Retry: tt.retry}))
			in := logText(100*bufSize, 6)
			done := make(chan struct{})
			go func() {
				defer close(done)
				writeRandomly(t, s, in, 2000, 6)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("writes still blocked 20s after shipping stopped")
			}
			err := s.Close(context.Background())
			if !errors.Is(err, tt.want) {
				t.Fatalf("Close = %v, want %v", err, tt.want)
			}
			if got := s.Err(); !errors.Is(got, tt.want) {
				t.Errorf("Err() = %v, want %v", got, tt.want)
			}
			if got, want := s.Written(), int64(len(in)); got != want {
				t.Errorf("Written() = %d, want %d", got, want)
			}
			if s.Sent() >= s.Written() {
				t.Errorf("Sent() = %d, want less than Written() = %d", s.Sent(), s.Written())
			}
		})
	}
}

func TestStreamerContextCancelled(t *testing.T) {
	t.Parallel()
	entered, called := make(chan struct{}, 1), make(chan struct{}, 1)
	gate := make(chan struct{}) // never opened: the sink waits for ctx
	sink := &memSink{gate: gate, entered: entered, called: called}
	ctx, cancel := context.WithCancelCause(context.Background())
	s := NewStreamer(ctx, sink, StreamerOptions{BufferSize: 4096, ChunkSize: 1024})
	if _, err := s.Write(logText(3000, 7)); err != nil {
		t.Fatal(err)
	}
	<-entered // a chunk is in flight
	cause := errors.New("executor shutting down")
	cancel(cause)
	<-called // the blocked call returned
	// Shipping has stopped: a large write must not block.
	if _, err := s.Write(logText(1<<20, 8)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); !errors.Is(err, cause) {
		t.Errorf("Close = %v, want %v", err, cause)
	}
}

// An idle Streamer whose context ends has lost nothing.
func TestStreamerContextCancelledWhenIdle(t *testing.T) {
	t.Parallel()
	called := make(chan struct{}, 1)
	sink := &memSink{called: called}
	ctx, cancel := context.WithCancel(context.Background())
	s := NewStreamer(ctx, sink, StreamerOptions{FlushInterval: time.Millisecond})
	if _, err := s.Write([]byte("all there is\n")); err != nil {
		t.Fatal(err)
	}
	<-called
	cancel()
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close = %v, want nil: every byte was delivered", err)
	}
	if got, want := string(sink.bytes()), "all there is\n"; got != want {
		t.Errorf("log = %q, want %q", got, want)
	}
}

// Close gives up when its context ends while the sink keeps failing.
func TestStreamerCloseTimeout(t *testing.T) {
	t.Parallel()
	called := make(chan struct{}, 1)
	sink := &memSink{failEvery: 1, called: called}
	s := NewStreamer(context.Background(), sink, fastRetry(StreamerOptions{}))
	if _, err := s.Write([]byte("never arrives\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	closed := make(chan error)
	go func() { closed <- s.Close(ctx) }()
	<-called // Close is retrying the flush
	cancel()
	if err := <-closed; !errors.Is(err, context.Canceled) {
		t.Errorf("Close = %v, want context.Canceled", err)
	}
	if got := sink.callCount(); got < 1 {
		t.Errorf("sink called %d times, want at least 1", got)
	}
}

func TestStreamerFlushInterval(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	called := make(chan struct{}, 1)
	sink := &memSink{called: called}
	s := NewStreamer(context.Background(), sink, StreamerOptions{Clock: clock, FlushInterval: time.Second})
	if _, err := s.Write([]byte("first line\n")); err != nil {
		t.Fatal(err)
	}
	if d := <-clock.armed; d != time.Second {
		t.Errorf("flush timer armed for %v, want 1s", d)
	}
	// The shipping goroutine waits on its timer with the bytes unsent.
	if n := sink.callCount(); n != 0 {
		t.Fatalf("sink called %d times before the flush interval, want 0", n)
	}
	clock.Advance(999 * time.Millisecond)
	if n := sink.callCount(); n != 0 {
		t.Fatalf("sink called %d times before the flush interval, want 0", n)
	}
	// The shipping goroutine reads the clock, then arms its timer: an
	// Advance between the two leaves the timer a little later than the
	// interval, as real time would move on. So move on like real time.
	for shipped := false; !shipped; {
		clock.Advance(time.Millisecond)
		select {
		case <-called:
			shipped = true
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got, want := string(sink.bytes()), "first line\n"; got != want {
		t.Errorf("log = %q, want %q", got, want)
	}
	closeStreamer(t, s)
}

// A full chunk goes out at once, without waiting for the flush interval.
func TestStreamerFullChunkShipsAtOnce(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	called := make(chan struct{}, 1)
	sink := &memSink{called: called}
	s := NewStreamer(context.Background(), sink, StreamerOptions{Clock: clock, ChunkSize: 100, FlushInterval: time.Hour})
	in := logText(100, 9)
	if _, err := s.Write(in); err != nil {
		t.Fatal(err)
	}
	<-called
	if got := sink.bytes(); !bytes.Equal(got, in) {
		t.Errorf("log = %q, want %q", got, in)
	}
	closeStreamer(t, s)
}

func TestStreamerWriteAfterClose(t *testing.T) {
	t.Parallel()
	s := NewStreamer(context.Background(), &memSink{}, StreamerOptions{})
	closeStreamer(t, s)
	if _, err := s.Write([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestStreamerBackoff(t *testing.T) {
	t.Parallel()
	s := &Streamer{o: StreamerOptions{RetryMin: 100 * time.Millisecond, RetryMax: 10 * time.Second}.withDefaults()}
	for n := 1; n < 100; n++ {
		hi := min(10*time.Second, 100*time.Millisecond<<min(n-1, 20))
		for range 20 {
			if d := s.backoff(n); d < 100*time.Millisecond || d > hi {
				t.Fatalf("backoff(%d) = %v, want within [100ms, %v]", n, d, hi)
			}
		}
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("stale")
	err := fmt.Errorf("appending: %w", Permanent(base))
	if !errors.Is(err, ErrPermanent) || !errors.Is(err, base) {
		t.Errorf("errors.Is(%v, ErrPermanent/base) = false, want true", err)
	}
	if got, want := err.Error(), "appending: stale"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
}
