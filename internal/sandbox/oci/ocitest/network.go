package ocitest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
)

// NewRuntimeFunc returns a runtime under test configured with network as
// its Options.Network, and checks at the end of the test that it left
// nothing behind.
type NewRuntimeFunc func(t *testing.T, network oci.NetworkFunc) sandbox.Runtime

// egressCounter is what the executor asks a sandbox for its denials.
type egressCounter interface {
	EgressDenied(ctx context.Context) (uint64, error)
}

var netSandboxSeq atomic.Int64

// peer returns the peer server's address as nc takes it.
func peer(n *Net) string { return n.Addr.Addr().String() + " " + fmt.Sprint(n.Addr.Port()) }

// ExerciseNetwork checks a runtime's network hook with a test Net: a job
// whose policy is "internet" gets the hook's network in every step (it
// reaches the peer server; the runtime refreshes the network before each
// step; /etc/resolv.conf names the hook's nameservers and is read-only),
// its sandbox reports the hook's denial count, and Close — or a failed
// Open — closes the network; a job whose policy is "none", or a runtime
// without a hook, gets loopback only. Steps use busybox's nc and ip.
func ExerciseNetwork(t *testing.T, newRuntime NewRuntimeFunc) {
	name := func() string { return fmt.Sprintf("net-%d-%d", os.Getpid(), netSandboxSeq.Add(1)) }
	run := func(t *testing.T, sb sandbox.Sandbox, script string) (sandbox.Result, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out bytes.Buffer
		res, err := sb.Run(ctx, sandbox.Step{Run: script, Stdout: &out, Stderr: &out})
		if err != nil {
			t.Fatalf("Run(%q): %v (output %q)", script, err, out.String())
		}
		return res, out.String()
	}

	t.Run("internet", func(t *testing.T) {
		t.Parallel()
		n := NewNet(t)
		rt := newRuntime(t, n.Func())
		sbName := name()
		sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: sbName, Network: job.NetworkInternet})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { sb.Close(context.Background()) }) // after a failure; a second Close does nothing
		a := n.Attempt(sbName)
		if a == nil || a.Policy != job.NetworkInternet {
			t.Fatalf("the hook was not asked for the attempt's network: %+v", a)
		}
		want := PeerGreeting + "# written by airlock: the resolvers this job's egress policy allows\n" +
			"nameserver 198.51.100.53\nnameserver 2001:db8::53\noptions ndots:0\n" +
			"inet " + a.Addr().String() + "/24\n"
		for step := 1; step <= 2; step++ {
			res, out := run(t, sb, "nc "+peer(n)+" </dev/null && cat /etc/resolv.conf && ip -o -4 addr show eth0 | grep -o 'inet [^ ]*'")
			if !res.Success() || out != want {
				t.Errorf("step %d: Result %+v, output %q; want success and %q", step, res, out, want)
			}
			if got := a.Refreshes.Load(); got != int64(step) {
				t.Errorf("after step %d the network was refreshed %d times, want once per step", step, got)
			}
		}
		res, out := run(t, sb, "echo nameserver 127.0.0.2 > /etc/resolv.conf; echo x >> /etc/hosts; true")
		if !res.Success() || strings.Count(out, "can't create") != 2 {
			t.Errorf("Result %+v, output %q; want both files read-only", res, out)
		}
		// runc and crun cannot mount a sysfs for a namespace of another
		// user namespace; /sys is then an empty read-only tmpfs, with the
		// cgroup hierarchy still mounted on it.
		res, out = run(t, sb, "touch /sys/x 2>&1 | grep -c Read-only; ls /sys/fs/cgroup | grep -c memory")
		if want := "1\n1\n"; !res.Success() || out != want {
			t.Errorf("Result %+v, output %q; want %q: a read-only /sys and a cgroup mount", res, out, want)
		}
		denied, err := sb.(egressCounter).EgressDenied(context.Background())
		if err != nil || denied != n.Denied {
			t.Errorf("EgressDenied = %d, %v; want %d", denied, err, n.Denied)
		}
		if err := sb.Close(context.Background()); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if got := a.Closes.Load(); got != 1 {
			t.Errorf("the network was closed %d times, want once", got)
		}
	})

	t.Run("none", func(t *testing.T) {
		t.Parallel()
		n := NewNet(t)
		rt := newRuntime(t, n.Func())
		sbName := name()
		sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: sbName, Network: job.NetworkNone})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := sb.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		if a := n.Attempt(sbName); a != nil {
			t.Errorf("the hook made a network for a job without network")
		}
		res, out := run(t, sb, "ip -o link | cut -d: -f2; nc -w 5 "+peer(n)+" </dev/null 2>&1; echo $?")
		if want := " lo\nnc: can't connect to remote host (198.51.100.10): Network is unreachable\n1\n"; !res.Success() || out != want {
			t.Errorf("Result %+v, output %q; want %q", res, out, want)
		}
		if denied, err := sb.(egressCounter).EgressDenied(context.Background()); err != nil || denied != 0 {
			t.Errorf("EgressDenied = %d, %v; want 0", denied, err)
		}
	})

	t.Run("no hook", func(t *testing.T) {
		t.Parallel()
		rt := newRuntime(t, nil)
		sb, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name(), Network: job.NetworkInternet})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() {
			if err := sb.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		res, out := run(t, sb, "ip -o link | cut -d: -f2")
		if want := " lo\n"; !res.Success() || out != want {
			t.Errorf("Result %+v, output %q; want %q", res, out, want)
		}
	})

	t.Run("a failed Open closes the network", func(t *testing.T) {
		t.Parallel()
		n := NewNet(t)
		rt := newRuntime(t, n.Func())
		sbName := name()
		// A disk limit below the minimum fails Open after the network.
		if _, err := rt.Open(context.Background(), sandbox.OpenParams{Name: sbName, Network: job.NetworkInternet, Resources: job.Resources{Disk: 1 << 20}}); err == nil {
			t.Fatal("Open succeeded, want an error")
		}
		a := n.Attempt(sbName)
		if a == nil {
			t.Fatal("the hook was not asked for a network")
		}
		if got := a.Closes.Load(); got != 1 {
			t.Errorf("the network was closed %d times, want once", got)
		}
	})

	t.Run("unknown policy", func(t *testing.T) {
		t.Parallel()
		rt := newRuntime(t, NewNet(t).Func())
		if _, err := rt.Open(context.Background(), sandbox.OpenParams{Name: name(), Network: "intranet"}); err == nil {
			t.Error("Open with network policy \"intranet\" succeeded, want an error")
		}
	})
}
