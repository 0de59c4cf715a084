package runtimes

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/netpolicy/nettest"
	"github.com/airlock-run/airlock/internal/sandbox/oci/ocitest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// searchableDir is a work root that containers can reach from their user
// namespace (t.TempDir's parents are mode 0700).
func searchableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "airlock-runtimes-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// enclosedOptions are Options whose egress policy lives in an enclosed test
// network, with its resolver.
func enclosedOptions(t *testing.T) Options {
	t.Helper()
	w := nettest.New(t)
	init, err := ocitest.StaticInit(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return Options{WorkRoot: searchableDir(t), Init: init, CgroupParent: fmt.Sprintf("/airlock-runtimes-test-%d", os.Getpid()), Network: NetworkOptions{
		HostNS: w.Enclosure.Path(), Resolvers: []netip.Addr{nettest.ResolverAddr},
		NetnsDir: filepath.Join(t.TempDir(), "netns")}}
}

func TestCheckReportsEveryKnownRuntime(t *testing.T) {
	reports := Check(enclosedOptions(t))
	if len(reports) != len(Names()) {
		t.Fatalf("Check reported %d runtimes, want %d (%v)", len(reports), len(Names()), Names())
	}
	for _, r := range reports {
		if len(r.Items) == 0 {
			t.Errorf("%s: no items reported", r.Runtime)
		}
		ready := true
		var missing []string
		for _, it := range r.Items {
			ready = ready && it.OK
			if !it.OK {
				missing = append(missing, it.Name+": "+it.Detail)
				if it.Detail == "" {
					t.Errorf("%s: %s is missing without saying why", r.Runtime, it.Name)
				}
			}
		}
		if r.Ready != ready {
			t.Errorf("%s: Ready = %v, want %v", r.Runtime, r.Ready, ready)
		}
		switch r.Runtime {
		case "shell":
			if r.Isolates || !r.Ready {
				t.Errorf("shell: isolates %v, ready %v; want false, true", r.Isolates, r.Ready)
			}
		case "oci", "gvisor":
			if !r.Isolates {
				t.Errorf("%s: isolates false", r.Runtime)
			}
			names := ""
			for _, it := range r.Items {
				names += it.Name + "\n"
			}
			for _, want := range []string{"overlayfs", "egress: nftables", "egress: network namespaces"} {
				if !strings.Contains(names, want) {
					t.Errorf("%s: the report lacks %q", r.Runtime, want)
				}
			}
			if !r.Ready {
				testenv.Missing(t, "the "+r.Runtime+" runtime", errorString(strings.Join(missing, "; ")))
			}
		}
	}
}

func TestAutoPicksTheStrongestRuntimeAndNeverTheShell(t *testing.T) {
	opts := enclosedOptions(t)
	b, err := Open(Auto, opts)
	if err != nil {
		testenv.Missing(t, "an isolating runtime", err)
	}
	defer b.Close()
	want := "oci"
	for _, r := range Check(opts) {
		if r.Runtime == "gvisor" && r.Ready {
			want = "gvisor"
		}
	}
	if got := b.Name(); got != want {
		t.Errorf("Auto opened %q, want %q", got, want)
	}
	if b.Images == nil {
		t.Error("a container runtime came without an image puller")
	}
	// The janitor covers the runtime, the networks and the overlays.
	if err := b.RemoveLeftovers(context.Background(), nil); err != nil {
		t.Errorf("RemoveLeftovers on a fresh runtime: %v", err)
	}
	// One executor per host: a second one would remove the first one's
	// sandboxes as leftovers.
	if _, err := Open(b.Name(), opts); err == nil || !strings.Contains(err.Error(), "another executor on this host") {
		t.Errorf("a second runtime on the same host resources opened: %v", err)
	}
}

func TestOpenRefusesUnknownRuntimes(t *testing.T) {
	_, err := Open("firecracker-ish", Options{WorkRoot: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "known: gvisor, oci, shell") {
		t.Errorf("Open(unknown) = %v, want an error listing the known runtimes", err)
	}
	b, err := Open("shell", Options{WorkRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Name() != "shell" || b.Images != nil {
		t.Errorf("Open(shell) = %s with images %v, want the shell without images", b.Name(), b.Images)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
