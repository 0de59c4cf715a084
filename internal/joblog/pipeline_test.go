package joblog

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// discardSink checks that chunks arrive in order without gap or overlap,
// counts them and throws them away.
type discardSink struct {
	end    atomic.Int64
	masks  atomic.Int64
	lastMu sync.Mutex
	last   []byte // the end of the previous chunk, to count Masks across chunks
}

func (d *discardSink) AppendLog(ctx context.Context, off int64, data []byte) (int64, error) {
	if end := d.end.Load(); off != end {
		return 0, Permanent(fmt.Errorf("append at %d, log ends at %d", off, end))
	}
	d.lastMu.Lock()
	// A Mask split across two chunks is counted once: look at the joint.
	joint := append(d.last, data[:min(len(data), len(Mask)-1)]...)
	n := bytes.Count(joint, []byte(Mask)) + bytes.Count(data, []byte(Mask))
	d.last = append(d.last[:0], data[max(0, len(data)-(len(Mask)-1)):]...)
	d.lastMu.Unlock()
	d.masks.Add(int64(n))
	return d.end.Add(int64(len(data))), nil
}

var pipelineSecrets = []string{"ghp_R4nd0mT0k3nV4lu3xyzABCDEFGH12345", "hunter2hunter2", "npm_0123456789abcdefABCDEF",
	"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}

// pipelineBlock returns 1 MiB of log text with the secrets, in several
// forms, scattered through it, away from its edges.
func pipelineBlock() []byte {
	block := logText(1<<20, 12)
	for i := 1; i < 200; i++ {
		s := pipelineSecrets[i%len(pipelineSecrets)]
		forms := SecretForms(s)
		f := forms[i%len(forms)]
		at := i * (len(block) / 200)
		copy(block[at:], " "+f+" ")
	}
	block[0], block[len(block)-1] = '\n', '\n'
	return block
}

// runPipeline writes total bytes (whole blocks) through a Redactor into a
// Streamer shipping to sink, in 32 KiB writes like a pipe's.
func runPipeline(tb testing.TB, block []byte, total int64, sink Sink) {
	s := NewStreamer(context.Background(), sink, StreamerOptions{})
	r := NewRedactor(s, pipelineSecrets)
	for n := int64(0); n < total; n += int64(len(block)) {
		for off := 0; off < len(block); off += 32 << 10 {
			if _, err := r.Write(block[off:min(len(block), off+32<<10)]); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := r.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		tb.Fatal(err)
	}
}

// A gigabyte of output goes through redaction and shipping in bounded
// memory, and every secret in it is redacted.
func TestPipelineBoundedMemory(t *testing.T) {
	// Not parallel: the heap is measured for the whole process.
	total := int64(1 << 30)
	if testing.Short() || raceEnabled {
		total = 64 << 20
	}
	block := pipelineBlock()
	wantBlock := referenceRedact(block, pipelineSecrets)
	wantMasks := int64(bytes.Count(wantBlock, []byte(Mask)))
	if wantMasks < 150 {
		t.Fatalf("block holds %d secrets, want at least 150", wantMasks)
	}

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	sink := &discardSink{}
	start := time.Now()
	runPipeline(t, block, total, sink)
	elapsed := time.Since(start)
	close(stop)
	<-sampled

	reps := total / int64(len(block))
	if got, want := sink.end.Load(), reps*int64(len(wantBlock)); got != want {
		t.Errorf("sink received %d bytes, want %d", got, want)
	}
	if got, want := sink.masks.Load(), reps*wantMasks; got != want {
		t.Errorf("sink received %d Masks, want %d", got, want)
	}
	const limit = 32 << 20
	if p := peak.Load(); p > limit {
		t.Errorf("heap peaked at %d MiB, want under %d MiB", p>>20, limit>>20)
	}
	t.Logf("%d MiB in %v (%.0f MB/s), heap peak %.1f MiB", total>>20, elapsed.Round(time.Millisecond),
		float64(total)/elapsed.Seconds()/1e6, float64(peak.Load())/(1<<20))
}

func BenchmarkPipeline(b *testing.B) {
	block := pipelineBlock()
	const total = 1 << 30
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		runPipeline(b, block, total, &discardSink{})
	}
}
