// Package stepio is the output plumbing every sandbox runtime shares: the
// pipes a step writes its stdout and stderr into, and the goroutines copying
// them to Step.Stdout and Step.Stderr. One pipe per writer, and one pipe for
// both streams when they are the same writer, so the bytes keep the order the
// step wrote them in; a writer error discards the rest of that stream without
// blocking the step; and draining stops once nothing has arrived for
// DrainIdle after the step's processes are gone, so a process that escaped
// the runtime's kill cannot hold Run open by keeping a pipe.
package stepio

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// DrainIdle is how long Run keeps reading a step's output, once its
// container is gone, without receiving anything.
const DrainIdle = time.Second

// Output is a step's stdout and stderr pipes and the goroutines copying them.
type Output struct {
	Stdout, Stderr *os.File // write ends for the step; nil is /dev/null
	copiers        []*copier
	Detached       bool // a copier stopped reading before the end of its pipe
}

// New makes the pipes for a step whose output goes to stdout and stderr (a
// nil writer discards; the same writer for both shares one pipe).
func New(stdout, stderr io.Writer) (*Output, error) {
	o := &Output{}
	var err error
	if stdout != nil {
		if o.Stdout, err = o.pipe(stdout); err != nil {
			o.Abort()
			return nil, err
		}
	}
	switch {
	case stderr == nil:
	case stdout != nil && sameWriter(stdout, stderr):
		o.Stderr = o.Stdout
	default:
		if o.Stderr, err = o.pipe(stderr); err != nil {
			o.Abort()
			return nil, err
		}
	}
	return o, nil
}

func (o *Output) pipe(w io.Writer) (*os.File, error) {
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating output pipe: %w", err)
	}
	o.copiers = append(o.copiers, &copier{r: r, w: w, done: make(chan struct{})})
	return pw, nil
}

// start closes the write ends, which the step now holds, and starts copying.
func (o *Output) Start() {
	o.closeWriteEnds()
	for _, c := range o.copiers {
		go c.run()
	}
}

// abort releases every descriptor when the step did not start.
func (o *Output) Abort() {
	o.closeWriteEnds()
	for _, c := range o.copiers {
		c.r.Close()
	}
}

func (o *Output) closeWriteEnds() {
	if o.Stdout != nil {
		o.Stdout.Close()
	}
	if o.Stderr != nil && o.Stderr != o.Stdout {
		o.Stderr.Close()
	}
}

// drain reads every pipe to its end, or until it stays idle for DrainIdle,
// and returns the first writer error.
func (o *Output) Drain() error {
	var errs []error
	for _, c := range o.copiers {
		c.draining.Store(true)
		_ = c.r.SetReadDeadline(time.Now().Add(DrainIdle))
	}
	for _, c := range o.copiers {
		<-c.done
		c.r.Close()
		o.Detached = o.Detached || c.detached
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
	draining atomic.Bool // the step's processes are gone: stop after DrainIdle without data
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
			_ = c.r.SetReadDeadline(time.Now().Add(DrainIdle))
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
