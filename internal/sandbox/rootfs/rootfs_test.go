package rootfs_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/rootfs"
	"github.com/airlock-run/airlock/internal/testenv"
)

func newProvider(t *testing.T) (*rootfs.Provider, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root (overlay mounts)", errors.New("not running as root"))
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := image.New(image.Options{Root: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	root := filepath.Join(dir, "rootfs")
	p, err := rootfs.New(rootfs.Options{Cache: c, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	return p, root
}

func pushTool(t *testing.T, reg *imagetest.Registry) (ref, digest string) {
	t.Helper()
	img := imagetest.Image(t, v1.Config{User: "1000:1000", Env: []string{"PATH=/tools"}},
		imagetest.Layer(t, imagetest.Dir("tools", 0o755), imagetest.Reg("tools/hello", "hi\n", 0o755)))
	return reg.Push(t, "tools:1", img)
}

func TestPullThenImageGivesAnOverlayPerAttemptAndDigest(t *testing.T) {
	p, root := newProvider(t)
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ref, digest := pushTool(t, reg)
	ctx := context.Background()

	got, err := p.Pull(ctx, "airlock-1-1", ref, "")
	if err != nil {
		t.Fatal(err)
	}
	if got != digest {
		t.Errorf("Pull digest = %s, want %s", got, digest)
	}
	img, err := p.Image(ctx, "airlock-1-1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != digest || img.User != "1000:1000" || len(img.Env) != 1 || img.Env[0] != "PATH=/tools" {
		t.Errorf("Image = %+v, want digest %s, user 1000:1000, env PATH=/tools", img, digest)
	}
	if !strings.HasPrefix(img.RootFS, filepath.Join(root, "airlock-1-1")+"/") {
		t.Errorf("RootFS %s is not under the attempt's directory", img.RootFS)
	}
	b, err := os.ReadFile(filepath.Join(img.RootFS, "tools/hello"))
	if err != nil || string(b) != "hi\n" {
		t.Fatalf("reading the image's file through the overlay: %q, %v", b, err)
	}
	// Writes land in the attempt's layer, not in the cache.
	if err := os.WriteFile(filepath.Join(img.RootFS, "tools/hello"), []byte("changed"), 0o755); err != nil {
		t.Fatal(err)
	}
	again, err := p.Image(ctx, "airlock-1-1", ref)
	if err != nil || again.RootFS != img.RootFS {
		t.Fatalf("a second step of the attempt got %+v, %v; want the same overlay", again, err)
	}
	other, err := p.Image(ctx, "airlock-2-1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(other.RootFS, "tools/hello")); string(b) != "hi\n" {
		t.Errorf("another attempt sees %q: one job's write reached the shared image", b)
	}

	for _, sb := range []string{"airlock-1-1", "airlock-2-1"} {
		if err := p.Release(sb); err != nil {
			t.Fatal(err)
		}
		if err := p.Release(sb); err != nil {
			t.Fatalf("second Release: %v", err)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("left after Release: %v", entries)
	}
	if _, err := p.Image(ctx, "airlock-1-1", ref); err != nil {
		t.Errorf("a new attempt of the same name after Release: %v", err)
	}
	p.Release("airlock-1-1")
}

func TestImageFuncGivesTheCachedLayersWithoutMounting(t *testing.T) {
	p, root := newProvider(t)
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ref, _ := pushTool(t, reg)
	ctx := context.Background()
	images := p.ImageFunc()

	got, err := images(ctx, "airlock-1-1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if got.RootFS != "" || got.User != "1000:1000" || len(got.Env) != 1 || got.Env[0] != "PATH=/tools" || len(got.Layers) != 1 {
		t.Fatalf("ImageFunc gave %+v, want the image's one layer, user 1000:1000, env PATH=/tools, and no RootFS", got)
	}
	if b, err := os.ReadFile(filepath.Join(got.Layers[0], "tools/hello")); err != nil || string(b) != "hi\n" {
		t.Errorf("the layer's tools/hello = %q, %v; want the image's file", b, err)
	}
	// The runtime makes the overlay: nothing is mounted for the attempt.
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("ImageFunc made %v under the Provider's root, want nothing", entries)
	}
	// Image gives the same layers, and the attempt's overlay over them.
	img, err := p.Image(ctx, "airlock-1-1", ref)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got.Layers, img.Layers); diff != "" {
		t.Errorf("Image's layers differ from ImageFunc's (-ImageFunc +Image):\n%s", diff)
	}
	if err := p.Release("airlock-1-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := images(ctx, "airlock-1-1", "  "); !errors.Is(err, sandbox.ErrImage) {
		t.Errorf("ImageFunc without a reference = %v, want an ErrImage", err)
	}
}

func TestPullUsesTheJobsDockerAuthConfig(t *testing.T) {
	p, _ := newProvider(t)
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{Username: "ci", Password: "s3cret"})
	ref, digest := pushTool(t, reg)
	ctx := context.Background()

	_, err := p.Pull(ctx, "airlock-1-1", ref, "")
	if !errors.Is(err, sandbox.ErrImage) {
		t.Errorf("Pull without credentials = %v, want an ErrImage (the registry refuses)", err)
	}
	for _, cfg := range []string{
		`{"auths":{"` + reg.Host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("ci:s3cret")) + `"}}}`,
		`{"auths":{"http://` + reg.Host + `/v2/":{"username":"ci","password":"s3cret"}}}`,
	} {
		got, err := p.Pull(ctx, "airlock-2-1", ref, cfg)
		if err != nil || got != digest {
			t.Errorf("Pull with %s = %s, %v; want %s", cfg, got, err, digest)
		}
		p.Release("airlock-2-1")
	}
	_, err = p.Pull(ctx, "airlock-3-1", ref, `{"auths": s3cret`)
	if !errors.Is(err, sandbox.ErrImage) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Pull with malformed credentials = %v, want an ErrImage that does not quote them", err)
	}
}

func TestImageErrorsThatRetryingCannotFixAreErrImage(t *testing.T) {
	p, _ := newProvider(t)
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ctx := context.Background()
	for _, ref := range []string{
		"",
		reg.Host + "/nosuch:1",
		"Not A Reference!",
		"oci-layout:/etc",
	} {
		if _, err := p.Pull(ctx, "airlock-1-1", ref, ""); !errors.Is(err, sandbox.ErrImage) {
			t.Errorf("Pull(%q) = %v, want an ErrImage", ref, err)
		}
	}
	// A registry that does not answer is the system's problem: retry.
	if _, err := p.Pull(ctx, "airlock-1-1", "127.0.0.1:1/tools:1", ""); err == nil || errors.Is(err, sandbox.ErrImage) {
		t.Errorf("Pull from a closed port = %v, want a retryable error", err)
	}
}

func TestRemoveLeftoversUnmountsWhatACrashedExecutorLeft(t *testing.T) {
	p, root := newProvider(t)
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ref, _ := pushTool(t, reg)
	ctx := context.Background()
	for _, sb := range []string{"airlock-1-1", "airlock-2-1"} {
		if _, err := p.Image(ctx, sb, ref); err != nil {
			t.Fatal(err)
		}
	}
	// A crash: a new Provider over the same root knows nothing of them.
	c2, err := image.New(image.Options{Root: filepath.Join(t.TempDir(), "cache2")})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	p2, err := rootfs.New(rootfs.Options{Cache: c2, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.RemoveLeftovers(ctx, func(name string) bool { return name == "airlock-2-1" }); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != "airlock-2-1" {
		t.Errorf("after RemoveLeftovers keeping airlock-2-1: %v", entries)
	}
	if err := p.Release("airlock-2-1"); err != nil {
		t.Fatal(err)
	}
	p.Release("airlock-1-1")
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), root) {
		t.Errorf("mounts left under %s", root)
	}
}
