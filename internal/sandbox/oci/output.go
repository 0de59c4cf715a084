// A step's output: pipes and the goroutines copying them to Step.Stdout and
// Step.Stderr.
//
// This is the shell runtime's output plumbing (internal/sandbox/shell/run.go),
// which the two runtimes share in behaviour: one pipe per writer, one pipe
// for both streams when they are the same writer (the bytes then keep the
// order the step wrote them in), a writer error discards the rest of that
// stream without blocking the step, and draining stops once nothing has
// arrived for drainIdle after the step's processes are gone.
package oci

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// drainIdle is how long Run keeps reading a step's output, once its
// container is gone, without receiving anything.
const drainIdle = time.Second

// output is a step's stdout and stderr pipes and the goroutines copying them.
type output struct {
	stdout, stderr *os.File // write ends for the step; nil is /dev/null
	copiers        []*copier
	detached       bool // a copier stopped reading before the end of its pipe
}

func newOutput(stdout, stderr io.Writer) (*output, error) {
	o := &output{}
	var err error
	if stdout != nil {
		if o.stdout, err = o.pipe(stdout); err != nil {
			o.abort()
			return nil, err
		}
	}
	switch {
	case stderr == nil:
	case stdout != nil && sameWriter(stdout, stderr):
		o.stderr = o.stdout
	default:
		if o.stderr, err = o.pipe(stderr); err != nil {
			o.abort()
			return nil, err
		}
	}
	return o, nil
}

func (o *output) pipe(w io.Writer) (*os.File, error) {
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating output pipe: %w", err)
	}
	o.copiers = append(o.copiers, &copier{r: r, w: w, done: make(chan struct{})})
	return pw, nil
}

// start closes the write ends, which the step now holds, and starts copying.
func (o *output) start() {
	o.closeWriteEnds()
	for _, c := range o.copiers {
		go c.run()
	}
}

// abort releases every descriptor when the step did not start.
func (o *output) abort() {
	o.closeWriteEnds()
	for _, c := range o.copiers {
		c.r.Close()
	}
}

func (o *output) closeWriteEnds() {
	if o.stdout != nil {
		o.stdout.Close()
	}
	if o.stderr != nil && o.stderr != o.stdout {
		o.stderr.Close()
	}
}

// drain reads every pipe to its end, or until it stays idle for drainIdle,
// and returns the first writer error.
func (o *output) drain() error {
	var errs []error
	for _, c := range o.copiers {
		c.draining.Store(true)
		_ = c.r.SetReadDeadline(time.Now().Add(drainIdle))
	}
	for _, c := range o.copiers {
		<-c.done
		c.r.Close()
		o.detached = o.detached || c.detached
		if c.err != nil {
			errs = append(errs, c.err)
		}
	}
	return errors.Join(errs...)
}

// copier copies one pipe to one writer.
type copier struct {
	r        *os.File
	w        io.Writer
	draining atomic.Bool // the step's processes are gone: stop after drainIdle without data
	done     chan struct{}

	// Set by run, read after done is closed.
	err      error // the writer's first error, or a read error
	detached bool
}

func (c *copier) run() {
	defer close(c.done)
	buf := make([]byte, 64<<10)
	for {
		// The deadline is renewed before each read, never left over from
		// before a long Write to a slow writer.
		if c.draining.Load() {
			_ = c.r.SetReadDeadline(time.Now().Add(drainIdle))
		}
		n, err := c.r.Read(buf)
		if n > 0 && c.err == nil {
			if m, werr := c.w.Write(buf[:n]); werr != nil || m < n {
				c.err = cmp.Or(werr, io.ErrShortWrite) // keep reading, discarding, so the step does not block
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.detached = true
			return
		default:
			if c.err == nil {
				c.err = err
			}
			return
		}
	}
}

// sameWriter reports whether a and b are the same writer. Interface values
// holding an incomparable type panic on ==; such writers are never the same.
func sameWriter(a, b io.Writer) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}
