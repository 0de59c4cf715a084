package image

import (
	"context"
	"errors"
	"sync"
)

// errAbandoned cancels a shared call once every caller waiting for it has
// given up.
var errAbandoned = errors.New("every caller waiting for this fetch gave up")

// group runs one call per key at a time and hands its result to every caller
// that asked meanwhile. Unlike x/sync/singleflight, the call runs on a
// context of its own that keeps the first caller's values but is cancelled
// only when every waiting caller has gone, so one job's cancellation does
// not fail another job's pull.
type group[V any] struct {
	mu    sync.Mutex
	calls map[string]*call[V]
}

type call[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int
	cancel  context.CancelCauseFunc
}

// do returns the result of fn for key, running fn unless a call for key is
// already in flight. It returns early with ctx's cause when ctx is done.
func (g *group[V]) do(ctx context.Context, key string, fn func(context.Context) (V, error)) (V, error) {
	g.mu.Lock()
	if g.calls == nil {
		g.calls = make(map[string]*call[V])
	}
	c, ok := g.calls[key]
	if !ok {
		cctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		g.calls[key] = c
		go func() {
			v, err := fn(cctx)
			g.mu.Lock()
			c.val, c.err = v, err
			if g.calls[key] == c {
				delete(g.calls, key)
			}
			g.mu.Unlock()
			cancel(nil)
			close(c.done)
		}()
	}
	c.waiters++
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		if c.waiters == 0 {
			c.cancel(errAbandoned)
			// A caller arriving now starts afresh rather than joining a
			// call that is being cancelled.
			if g.calls[key] == c {
				delete(g.calls, key)
			}
		}
		g.mu.Unlock()
		var zero V
		return zero, context.Cause(ctx)
	}
}
