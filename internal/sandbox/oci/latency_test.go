package oci_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
)

// TestStepLatency measures a trivial step through Run and through the raw
// runtime on the same bundle. It only runs when AIRLOCK_OCI_LATENCY is set
// (it times, and so must not run beside other tests); with AIRLOCK_RUNSC set
// to a runsc, gVisor is measured too:
//
//	AIRLOCK_OCI_LATENCY=1 AIRLOCK_RUNSC=/path/to/runsc go test -run TestStepLatency -v ./internal/sandbox/oci
func TestStepLatency(t *testing.T) {
	if os.Getenv("AIRLOCK_OCI_LATENCY") == "" {
		t.Skip("set AIRLOCK_OCI_LATENCY=1 to measure step latency")
	}
	const n = 30
	binaries := []string{"runc", "crun"}
	if os.Getenv("AIRLOCK_RUNSC") != "" {
		binaries = append(binaries, "runsc")
	}
	for _, binary := range binaries {
		t.Run(binary, func(t *testing.T) {
			var opts oci.Options
			fdArgs := []string{"--preserve-fds", "3"}
			if binary == "runsc" {
				// gVisor: the same machinery with runsc (package gvisor).
				opts = options(t, "runc")
				opts.Binary, opts.Runsc = os.Getenv("AIRLOCK_RUNSC"), &oci.RunscOptions{}
				fdArgs = []string{"--pass-fd", "3:3", "--pass-fd", "4:4", "--pass-fd", "5:5"}
			} else {
				opts = options(t, binary)
			}
			rt := newRuntime(t, opts)
			sb := open(t, rt, job.Resources{Memory: 256 << 20, Pids: 256, CPUs: 1})
			bundle, _, cleanup, err := oci.PrepareBundle(context.Background(), sb, sandbox.Step{Run: "true"})
			if err != nil {
				t.Fatal(err)
			}
			defer cleanup()
			// A second bundle: the same spec with /bin/true as the process.
			bundleTrue, _, cleanupTrue, err := oci.PrepareBundle(context.Background(), sb, sandbox.Step{Run: "true"})
			if err != nil {
				t.Fatal(err)
			}
			defer cleanupTrue()
			cfgPath := filepath.Join(bundleTrue, "config.json")
			b, err := os.ReadFile(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			var spec map[string]any
			if err := json.Unmarshal(b, &spec); err != nil {
				t.Fatal(err)
			}
			spec["process"].(map[string]any)["args"] = []string{"/bin/true"}
			if b, err = json.Marshal(spec); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
				t.Fatal(err)
			}
			devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer devNull.Close()

			id := 0
			raw := func(bundle string) func() error {
				return func() error {
					id++
					args := append(append([]string{"run", "--bundle", bundle}, fdArgs...), fmt.Sprintf("raw-%d", id))
					cmd := oci.RuntimeCommand(context.Background(), sb, args...)
					cmd.ExtraFiles = []*os.File{devNull, devNull, devNull}
					if out, err := cmd.CombinedOutput(); err != nil {
						return fmt.Errorf("%v: %s", err, out)
					}
					return nil
				}
			}
			cases := []struct {
				name string
				f    func() error
			}{
				{"Run(true)", func() error {
					res, err := sb.Run(context.Background(), sandbox.Step{Run: "true"})
					if err == nil && !res.Success() {
						err = fmt.Errorf("result %+v", res)
					}
					return err
				}},
				{"raw run, same bundle (init, sh -c true)", raw(bundle)},
				{"raw run, same spec, /bin/true only", raw(bundleTrue)},
			}
			// Interleaved, so that drift affects every case alike; the
			// first round warms caches.
			times := make([][]time.Duration, len(cases))
			for round := range n + 1 {
				for i, c := range cases {
					start := time.Now()
					if err := c.f(); err != nil {
						t.Fatalf("%s: %v", c.name, err)
					}
					if round > 0 {
						times[i] = append(times[i], time.Since(start))
					}
				}
			}
			for i, c := range cases {
				d := times[i]
				slices.Sort(d)
				t.Logf("%-46s median %6.1f ms   p95 %6.1f ms   (n=%d)", binary+": "+c.name,
					ms(d[len(d)/2]), ms(d[len(d)*95/100]), len(d))
			}
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
