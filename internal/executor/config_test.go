package executor

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/sandbox/shell"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	rt, err := shell.New(shell.Options{Root: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	valid := func() Config { return Config{Queues: []string{"default"}, Runtime: rt} }
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"minimal", func(*Config) {}, ""},
		{"no queues", func(c *Config) { c.Queues = nil }, "at least one queue"},
		{"empty queue", func(c *Config) { c.Queues = []string{"a", " "} }, "must not be empty"},
		{"no runtime", func(c *Config) { c.Runtime = nil }, "runtime is required"},
		{"negative max jobs", func(c *Config) { c.MaxJobs = -1 }, "max jobs"},
		{"negative max claims", func(c *Config) { c.MaxClaimsInFlight = -2 }, "max claims in flight is -2"},
		{"negative drain", func(c *Config) { c.DrainTimeout = -time.Second }, "drain timeout is -1s"},
		{"long claim wait", func(c *Config) { c.ClaimWait = 2 * time.Minute }, "claim wait is 2m0s, at most 1m0s"},
		{"long kill grace", func(c *Config) { c.KillGrace = time.Hour }, "kill grace"},
		{"backoff upside down", func(c *Config) { c.Backoff = Backoff{Min: time.Second, Max: time.Millisecond} }, "backoff min"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("got %v, want an error containing %q", err, tc.err)
			}
			if _, nerr := New(c, nil); nerr == nil {
				t.Error("New with a nil coordinator: got nil error")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.withDefaults()
	if c.MaxJobs != 1 || c.MaxClaimsInFlight != 4 || c.DrainTimeout != 10*time.Minute || c.ClaimWait != 30*time.Second ||
		c.DefaultJobTimeout != time.Hour || c.KillGrace != 5*time.Second ||
		c.Backoff != (Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}) || c.Logger == nil || c.Now == nil {
		t.Errorf("defaults: got %+v", c)
	}
	if a, b := (Config{}).withDefaults().Name, (Config{}).withDefaults().Name; a == b {
		t.Errorf("two default names are equal (%q): want a fresh one per executor", a)
	}
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	for n := 1; n <= 20; n++ {
		ceil := min(b.Min<<(n-1), b.Max)
		for range 100 {
			if d := b.Delay(n); d < b.Min || d > ceil {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", n, d, b.Min, ceil)
			}
		}
	}
	if d := b.Delay(1); d != b.Min {
		t.Errorf("Delay(1) = %s, want %s", d, b.Min)
	}
	// Jitter: many draws at a high attempt are not all the same.
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[b.Delay(10)] = true
	}
	if len(seen) < 10 {
		t.Errorf("Delay(10) gave only %d distinct values in 50 draws: no jitter", len(seen))
	}
}
