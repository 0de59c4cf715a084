package image

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
)

func TestGroupSurvivesOneCallerCancelling(t *testing.T) {
	t.Parallel()
	var g group[int]
	var calls atomic.Int32
	started := make(chan struct{})
	proceed := make(chan struct{})
	fnCtxErr := make(chan error, 1)
	fn := func(ctx context.Context) (int, error) {
		calls.Add(1)
		close(started)
		<-proceed
		fnCtxErr <- ctx.Err()
		return 42, nil
	}

	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, err := g.do(ctxA, "k", fn)
		errA <- err
	}()
	<-started
	resB := make(chan int, 1)
	go func() {
		v, err := g.do(context.Background(), "k", fn)
		if err != nil {
			t.Errorf("B: %v", err)
		}
		resB <- v
	}()
	// B joins before A gives up: wait until it is counted.
	for {
		g.mu.Lock()
		n := g.calls["k"].waiters
		g.mu.Unlock()
		if n == 2 {
			break
		}
		runtime.Gosched()
	}
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("A: %v, want context.Canceled", err)
	}
	close(proceed)
	if got := <-resB; got != 42 {
		t.Errorf("B got %d, want 42", got)
	}
	if err := <-fnCtxErr; err != nil {
		t.Errorf("the shared call's context was cancelled (%v) though B still waited", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("fn ran %d times, want 1", got)
	}
}

func TestGroupCancelsWhenEveryoneLeaves(t *testing.T) {
	t.Parallel()
	var g group[int]
	started := make(chan struct{})
	cause := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := g.do(ctx, "k", func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("do: %v, want context.Canceled", err)
	}
	if got := <-cause; !errors.Is(got, errAbandoned) {
		t.Errorf("shared call cancelled with %v, want errAbandoned", got)
	}
}

func TestRegistryKey(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"docker.io":            "index.docker.io",
		"index.docker.io":      "index.docker.io",
		"ghcr.io":              "ghcr.io",
		"127.0.0.1:5000":       "127.0.0.1:5000",
		"registry.example:443": "registry.example:443",
	} {
		if got, err := registryKey(in); err != nil || got != want {
			t.Errorf("registryKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
