package e2e

// Images for the sandboxed end-to-end tests, written as OCI layouts into a
// directory the executor is told to trust (--local-images): no registry is
// reachable from this machine, and the executor may run in a network
// namespace of its own.

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/airlock-run/airlock/internal/image/imagetest"
)

// testImages are the references of the test images.
type testImages struct {
	root string // the directory to pass as --local-images
	// Busybox is busybox plus /probe (e2e/testdata/probe) and
	// /bin/suid-probe, a set-user-ID-root copy of it, running as root.
	Busybox string
	// User is the same image with the config's User 1000:1000.
	User string
}

var (
	probeOnce sync.Once
	probeBin  string
	probeErr  error
)

// buildProbe builds the static probe binary once per test process.
func buildProbe(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "airlock-e2e-probe-")
		if err != nil {
			probeErr = err
			return
		}
		probeBin = filepath.Join(dir, "probe")
		cmd := exec.Command("go", "build", "-trimpath", "-o", probeBin, "./testdata/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeErr = err
			t.Logf("building the probe: %s", out)
		}
	})
	if probeErr != nil {
		t.Fatalf("building the probe: %v", probeErr)
	}
	return probeBin
}

// writeTestImages writes the test images under a fresh directory.
func writeTestImages(t *testing.T) testImages {
	t.Helper()
	body, err := os.ReadFile(buildProbe(t))
	if err != nil {
		t.Fatal(err)
	}
	extra := imagetest.Layer(t,
		imagetest.Reg("probe", string(body), 0o755),
		imagetest.File{Name: "bin/suid-probe", Body: string(body), Mode: 0o4755},
		imagetest.Reg("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
		imagetest.Reg("etc/group", "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n", 0o644),
	)
	base, err := mutate.AppendLayers(imagetest.Busybox(t), extra)
	if err != nil {
		t.Fatal(err)
	}
	user := withUser(t, base, "1000:1000")

	root := t.TempDir()
	// Containers reach their root file systems from a user namespace.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	imgs := testImages{root: root}
	for _, im := range []struct {
		ref *string
		dir string
		img v1.Image
	}{{&imgs.Busybox, "busybox", base}, {&imgs.User, "user", user}} {
		dir := filepath.Join(root, im.dir)
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.AppendImage(im.img); err != nil {
			t.Fatal(err)
		}
		*im.ref = "oci-layout:" + dir
	}
	return imgs
}

func withUser(t *testing.T, img v1.Image, user string) v1.Image {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.User = user
	out, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
