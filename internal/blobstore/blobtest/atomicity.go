package blobtest

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/blobstore"
)

// streamingPut is a Put fed through a pipe, so the test decides when each
// part of the content arrives: when write returns, the store has read it.
type streamingPut struct {
	pw   *io.PipeWriter
	done chan error
}

func (h *harness) startPut(ctx context.Context, key string, limit int64) *streamingPut {
	pr, pw := io.Pipe()
	p := &streamingPut{pw: pw, done: make(chan error, 1)}
	go func() {
		_, err := h.store.Put(ctx, key, pr, limit)
		pr.CloseWithError(errors.New("put returned"))
		p.done <- err
	}()
	return p
}

// write hands s to the store and returns once the store has read all of it.
func (p *streamingPut) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(p.pw, s); err != nil {
		t.Fatalf("the store stopped reading: %v", err)
	}
}

// finish ends the content and returns Put's error.
func (p *streamingPut) finish() error {
	p.pw.Close()
	return <-p.done
}

var atomicityCases = []testCase{
	{"a blob being put is invisible until the put returns", func(t *testing.T, h *harness) {
		p := h.startPut(h.ctx, "jobs/1/a", 0)
		p.write(t, "first half, ")
		h.wantAbsent("jobs/1/a")
		if keys := h.keys("", 0); len(keys) != 0 {
			t.Errorf("List during a put = %q, want nothing", keys)
		}
		p.write(t, "second half")
		if err := p.finish(); err != nil {
			t.Fatal(err)
		}
		h.wantContent("jobs/1/a", "first half, second half")
	}},
	{"a blob being replaced reads as the old one until the put returns", func(t *testing.T, h *harness) {
		h.put("k", "old")
		p := h.startPut(h.ctx, "k", 0)
		p.write(t, strings.Repeat("new ", 10_000))
		h.wantContent("k", "old")
		if keys := h.keys("", 0); !slices.Equal(keys, []string{"k"}) {
			t.Errorf("List during a put = %q, want [k]", keys)
		}
		p.write(t, "end")
		if err := p.finish(); err != nil {
			t.Fatal(err)
		}
		h.wantContent("k", strings.Repeat("new ", 10_000)+"end")
	}},
	{"a put cancelled mid-stream leaves nothing", func(t *testing.T, h *harness) {
		h.put("other", "kept")
		ctx, cancel := context.WithCancel(h.ctx)
		p := h.startPut(ctx, "jobs/1/a", 0)
		p.write(t, strings.Repeat("x", 100_000))
		cancel()
		// The store may be waiting in a Read already: feed it until it
		// gives up; finish's Close then unblocks this writer.
		go io.Copy(p.pw, zeros{})
		if err := <-p.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Put with ctx cancelled mid-stream error = %v, want context.Canceled", err)
		}
		p.pw.Close()
		h.wantAbsent("jobs/1/a")
		if keys := h.keys("", 0); !slices.Equal(keys, []string{"other"}) {
			t.Errorf("List after a cancelled put = %q, want [other]", keys)
		}
	}},
	{"a put cancelled mid-stream leaves the previous blob", func(t *testing.T, h *harness) {
		h.put("k", "previous")
		ctx, cancel := context.WithCancel(h.ctx)
		p := h.startPut(ctx, "k", 0)
		p.write(t, "partial")
		cancel()
		go io.Copy(p.pw, zeros{})
		if err := <-p.done; !errors.Is(err, context.Canceled) {
			t.Errorf("Put error = %v, want context.Canceled", err)
		}
		p.pw.Close()
		h.wantContent("k", "previous")
	}},
	{"a put whose reader fails returns the reader's error and leaves nothing", func(t *testing.T, h *harness) {
		boom := errors.New("connection reset by test")
		p := h.startPut(h.ctx, "k", 0)
		p.write(t, "some content")
		p.pw.CloseWithError(boom)
		if err := <-p.done; !errors.Is(err, boom) {
			t.Errorf("Put error = %v, want the reader's error", err)
		}
		h.wantAbsent("k")
	}},
	{"a put with a cancelled context stores nothing", func(t *testing.T, h *harness) {
		ctx, cancel := context.WithCancel(h.ctx)
		cancel()
		if _, err := h.store.Put(ctx, "k", strings.NewReader("x"), 0); !errors.Is(err, context.Canceled) {
			t.Errorf("Put error = %v, want context.Canceled", err)
		}
		h.wantAbsent("k")
	}},
	{"a put over the limit mid-stream stops reading and leaves nothing", func(t *testing.T, h *harness) {
		p := h.startPut(h.ctx, "k", 1000)
		// The store needs to read only 1001 bytes to know; it must not
		// wait for the rest, so this write may end with the pipe closed.
		go io.Copy(p.pw, zeros{})
		if err := <-p.done; !errors.Is(err, blobstore.ErrTooLarge) {
			t.Errorf("Put of an endless stream with limit 1000 error = %v, want ErrTooLarge", err)
		}
		p.pw.Close()
		h.wantAbsent("k")
	}},
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
