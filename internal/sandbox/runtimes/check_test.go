package runtimes

import "testing"

func TestCheckReportsEveryKnownRuntime(t *testing.T) {
	reports := Check(Options{WorkRoot: t.TempDir()})
	if len(reports) != len(Names()) {
		t.Fatalf("Check reported %d runtimes, want %d (%v)", len(reports), len(Names()), Names())
	}
	for _, r := range reports {
		if len(r.Items) == 0 {
			t.Errorf("%s: no items reported", r.Runtime)
		}
		ready := true
		for _, it := range r.Items {
			ready = ready && it.OK
			if !it.OK && it.Detail == "" {
				t.Errorf("%s: %s is missing without saying why", r.Runtime, it.Name)
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
		case "oci":
			if !r.Isolates || r.Ready {
				t.Errorf("oci: isolates %v, ready %v; want true, false until images are wired", r.Isolates, r.Ready)
			}
		}
	}
}
