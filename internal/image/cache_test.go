package image_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// clock is a settable Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newCache(t testing.TB, opts image.Options) *image.Cache {
	t.Helper()
	if opts.Root == "" {
		opts.Root = filepath.Join(t.TempDir(), "cache")
	}
	c, err := image.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(t testing.TB, c *image.Cache, ref string, auth *image.Auth) *image.Image {
	t.Helper()
	img, err := c.Get(context.Background(), ref, auth)
	if err != nil {
		t.Fatalf("Get(%q): %v", ref, err)
	}
	t.Cleanup(img.Release)
	return img
}

// dataImage is an image of one layer holding one file of n bytes of fill.
func dataImage(t testing.TB, fill byte, n int) v1.Image {
	return imagetest.Image(t, v1.Config{},
		imagetest.Layer(t, imagetest.Reg("data", strings.Repeat(string(rune(fill)), n), 0o644)))
}

func digestOf(t testing.TB, img v1.Image) (manifest, config string) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d.String(), id.String()
}

func TestGetByTagAndByDigest(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	bb := imagetest.Busybox(t)
	ref, digest := reg.Push(t, "tools/busybox:1", bb)
	_, id := digestOf(t, bb)
	c := newCache(t, image.Options{})

	byTag := get(t, c, ref, nil)
	if byTag.Digest != digest || byTag.ManifestDigest != digest || byTag.ID != id {
		t.Errorf("by tag: got digest %s manifest %s id %s, want %s %s %s", byTag.Digest, byTag.ManifestDigest, byTag.ID, digest, digest, id)
	}
	if got, want := byTag.Config.Env, []string{imagetest.DefaultPath}; !slices.Equal(got, want) {
		t.Errorf("Config.Env = %q, want %q", got, want)
	}
	if len(byTag.Layers) != 1 {
		t.Fatalf("Layers = %q, want one", byTag.Layers)
	}
	if target, err := os.Readlink(filepath.Join(byTag.Layers[0], "bin/sh")); err != nil || target != "/bin/busybox" {
		t.Errorf("bin/sh links to %q (%v), want /bin/busybox", target, err)
	}
	fi, err := os.Stat(filepath.Join(byTag.Layers[0], "bin/busybox"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/busybox: %v, %v", fi, err)
	}

	byDigest := get(t, c, reg.Host+"/tools/busybox@"+digest, nil)
	if diff := cmp.Diff(byTag.Layers, byDigest.Layers); diff != "" || byDigest.Digest != digest {
		t.Errorf("by digest: digest %s, layers differ (-tag +digest):\n%s", byDigest.Digest, diff)
	}
	if byDigest.Ref != reg.Host+"/tools/busybox@"+digest {
		t.Errorf("Ref = %q", byDigest.Ref)
	}
}

func TestCacheHitsAskNoMoreThanNeeded(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ref, digest := reg.Push(t, "data:1", dataImage(t, 'a', 1000))
	clk := newClock()
	c := newCache(t, image.Options{Now: clk.Now})
	get(t, c, ref, nil).Release()

	reg.Reset()
	get(t, c, reg.Host+"/data@"+digest, nil).Release()
	if got := reg.Requests(); len(got) != 0 {
		t.Errorf("cache hit by digest made requests %q, want none", got)
	}

	reg.Reset()
	img := get(t, c, ref, nil)
	img.Release()
	if got, want := reg.Requests(), []string{"HEAD /v2/data/manifests/1"}; !slices.Equal(got, want) {
		t.Errorf("cache hit by tag (TagTTL 0) made requests %q, want %q", got, want)
	}
	if img.Digest != digest {
		t.Errorf("Digest = %s, want %s", img.Digest, digest)
	}

	ttl := newCache(t, image.Options{Now: clk.Now, TagTTL: time.Minute})
	get(t, ttl, ref, nil).Release()
	reg.Reset()
	get(t, ttl, ref, nil).Release()
	if got := reg.Requests(); len(got) != 0 {
		t.Errorf("cache hit by tag within TagTTL made requests %q, want none", got)
	}
	// The tag moves; after TagTTL the new digest is seen.
	_, digest2 := reg.Push(t, "data:1", dataImage(t, 'b', 1000))
	clk.Advance(2 * time.Minute)
	reg.Reset()
	if got := get(t, ttl, ref, nil).Digest; got != digest2 {
		t.Errorf("after TagTTL: Digest = %s, want the moved tag's %s", got, digest2)
	}
}

func TestConcurrentGetsFetchOnce(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ref, digest := reg.Push(t, "busybox:1", imagetest.Busybox(t))
	c := newCache(t, image.Options{})
	reg.Reset()

	const n = 10
	var wg sync.WaitGroup
	imgs := make([]*image.Image, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { imgs[i], errs[i] = c.Get(context.Background(), ref, nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if imgs[i].Digest != digest || imgs[i].Layers[0] != imgs[0].Layers[0] {
			t.Errorf("Get %d: digest %s layers %q, want %s %q", i, imgs[i].Digest, imgs[i].Layers, digest, imgs[0].Layers)
		}
		imgs[i].Release()
	}
	// One config blob and one layer blob, each fetched once.
	if got := reg.Count("GET", "/blobs/"); got != 2 {
		t.Errorf("blob GETs = %d, want 2; requests: %q", got, reg.Requests())
	}
	if got := reg.Count("GET", "/manifests/"); got != 1 {
		t.Errorf("manifest GETs = %d, want 1; requests: %q", got, reg.Requests())
	}
}

func TestEvictionLRU(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	refs := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		refs[name], _ = reg.Push(t, name+":1", dataImage(t, name[0], 64<<10))
	}
	// Learn an image's size on disk.
	probe := newCache(t, image.Options{})
	size := get(t, probe, refs["a"], nil).Size
	if size < 64<<10 {
		t.Fatalf("Size = %d, want at least the file's 64 KiB", size)
	}

	clk := newClock()
	c := newCache(t, image.Options{MaxBytes: 2*size + size/2, Now: clk.Now})
	use := func(name string) *image.Image {
		t.Helper()
		clk.Advance(time.Second)
		img, err := c.Get(context.Background(), refs[name], nil)
		if err != nil {
			t.Fatalf("Get %s: %v", name, err)
		}
		return img
	}
	cached := func(img *image.Image) bool {
		_, err := os.Stat(img.Layers[0])
		return err == nil
	}

	a := use("a")
	a.Release()
	b := use("b")
	b.Release()
	use("a").Release() // a is now more recent than b
	cImg := use("c")
	cImg.Release()
	if got, want := [3]bool{cached(a), cached(b), cached(cImg)}, [3]bool{true, false, true}; got != want {
		t.Errorf("cached a, b, c = %v, want %v (b least recently used)", got, want)
	}
	if got := c.Size(); got > 2*size+size/2 {
		t.Errorf("Size = %d, over MaxBytes %d", got, 2*size+size/2)
	}

	// A leased image is never evicted, even when it is the oldest.
	held := use("a")
	use("b").Release()
	use("c").Release()
	if !cached(held) {
		t.Fatalf("leased image a was evicted")
	}
	reg.Reset()
	again := use("a")
	again.Release()
	if got := reg.Count("GET", ""); got != 0 {
		t.Errorf("Get of leased image fetched again: %q", reg.Requests())
	}
	held.Release()
}

func TestEvictionKeepsSharedLayers(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	base := imagetest.Layer(t, imagetest.Reg("base", strings.Repeat("x", 32<<10), 0o644))
	refA, _ := reg.Push(t, "a:1", imagetest.Image(t, v1.Config{}, base, imagetest.Layer(t, imagetest.Reg("a", "a", 0o644))))
	refB, _ := reg.Push(t, "b:1", imagetest.Image(t, v1.Config{}, base, imagetest.Layer(t, imagetest.Reg("b", "b", 0o644))))
	clk := newClock()
	c := newCache(t, image.Options{Now: clk.Now})
	a := get(t, c, refA, nil)
	clk.Advance(time.Second)
	b := get(t, c, refB, nil)
	if a.Layers[0] != b.Layers[0] {
		t.Fatalf("shared base layer unpacked twice: %q, %q", a.Layers[0], b.Layers[0])
	}
	if got := c.Size(); got >= a.Size+b.Size {
		t.Errorf("Size = %d, want less than %d + %d: the shared layer is counted once", got, a.Size, b.Size)
	}
	a.Release()
	b.Release()
}

func TestPersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	ref, digest := reg.Push(t, "data:1", dataImage(t, 'p', 1000))
	root := filepath.Join(t.TempDir(), "cache")
	c, err := image.New(image.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	first := get(t, c, ref, nil)
	first.Release()
	if _, err := image.New(image.Options{Root: root}); err == nil {
		t.Errorf("a second Cache opened the same root")
	}
	c.Close()

	// Leftovers of an interrupted run.
	orphan := filepath.Join(root, "layers/sha256", strings.Repeat("0", 64))
	if err := os.MkdirAll(filepath.Join(orphan, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "tmp/layer-123"), 0o755); err != nil {
		t.Fatal(err)
	}
	c2 := newCache(t, image.Options{Root: root})
	reg.Reset()
	again := get(t, c2, reg.Host+"/data@"+digest, nil)
	if got := reg.Requests(); len(got) != 0 {
		t.Errorf("Get after restart made requests %q, want none", got)
	}
	if diff := cmp.Diff(first.Layers, again.Layers); diff != "" {
		t.Errorf("layers after restart differ:\n%s", diff)
	}
	for _, p := range []string{orphan, filepath.Join(root, "tmp/layer-123")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s not removed: %v", p, err)
		}
	}
}

func TestHostileImageRefused(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	evil := imagetest.Image(t, v1.Config{}, imagetest.Layer(t,
		imagetest.Symlink("etc", "/etc"),
		imagetest.Reg("etc/cron.d/evil", "* * * * * root sh", 0o644),
	))
	ref, _ := reg.Push(t, "evil:1", evil)
	root := filepath.Join(t.TempDir(), "cache")
	c := newCache(t, image.Options{Root: root})
	_, err := c.Get(context.Background(), ref, nil)
	if !errors.Is(err, image.ErrUnsafeLayer) {
		t.Fatalf("Get of a hostile image: %v, want ErrUnsafeLayer", err)
	}
	for _, dir := range []string{"layers/sha256", "images/sha256", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(root, dir)); len(ents) != 0 {
			t.Errorf("%s holds %d entries after a refused image, want none", dir, len(ents))
		}
	}
	// The cache still works.
	good, _ := reg.Push(t, "good:1", dataImage(t, 'g', 10))
	get(t, c, good, nil)
}

func TestLayerNotMatchingConfigRefused(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	img := dataImage(t, 'm', 100)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	other, err := imagetest.Layer(t, imagetest.Reg("other", "x", 0o644)).DiffID()
	if err != nil {
		t.Fatal(err)
	}
	cf.RootFS.DiffIDs = []v1.Hash{other}
	lying, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := reg.Push(t, "lying:1", lying)
	c := newCache(t, image.Options{})
	if _, err := c.Get(context.Background(), ref, nil); err == nil || !strings.Contains(err.Error(), "not the diff ID") {
		t.Errorf("Get of an image whose layer does not match its config: %v, want a diff ID mismatch", err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{Username: "ci", Password: "s3cret"})
	ref, digest := reg.Push(t, "private:1", dataImage(t, 'x', 10))

	t.Run("anonymous is refused", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, image.Options{})
		if _, err := c.Get(context.Background(), ref, nil); err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			t.Errorf("Get without credentials: %v, want unauthorized", err)
		}
	})
	t.Run("per job", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, image.Options{})
		img := get(t, c, ref, &image.Auth{Username: "ci", Password: "s3cret"})
		if img.Digest != digest {
			t.Errorf("Digest = %s, want %s", img.Digest, digest)
		}
		if _, err := c.Get(context.Background(), ref, &image.Auth{Username: "ci", Password: "wrong"}); err == nil {
			t.Errorf("Get by tag with wrong credentials succeeded")
		}
	})
	t.Run("docker config file", func(t *testing.T) {
		t.Parallel()
		cfg := filepath.Join(t.TempDir(), "config.json")
		auth := base64.StdEncoding.EncodeToString([]byte("ci:s3cret"))
		if err := os.WriteFile(cfg, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, reg.Host, auth), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newCache(t, image.Options{DockerConfig: cfg})
		if img := get(t, c, ref, nil); img.Digest != digest {
			t.Errorf("Digest = %s, want %s", img.Digest, digest)
		}
	})
}

func TestMirrors(t *testing.T) {
	t.Parallel()
	mirror := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	origin := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	onMirror, mirrorDigest := mirror.Push(t, "lib/tool:1", dataImage(t, 'm', 10))
	_, originDigest := origin.Push(t, "lib/other:1", dataImage(t, 'o', 10))
	_ = onMirror

	t.Run("mirror serves", func(t *testing.T) {
		t.Parallel()
		// Nothing listens on port 1: only the mirror can answer.
		down := "127.0.0.1:1"
		c := newCache(t, image.Options{Mirrors: map[string][]string{down: {mirror.Host}}})
		img := get(t, c, down+"/lib/tool:1", nil)
		if img.Digest != mirrorDigest {
			t.Errorf("Digest = %s, want %s", img.Digest, mirrorDigest)
		}
	})
	t.Run("falls back to the registry", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, image.Options{Mirrors: map[string][]string{origin.Host: {mirror.Host}}})
		img := get(t, c, origin.Host+"/lib/other:1", nil)
		if img.Digest != originDigest {
			t.Errorf("Digest = %s, want %s", img.Digest, originDigest)
		}
	})
}

func TestIndexResolvesToPlatform(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	amd := dataImage(t, '1', 10)
	arm := dataImage(t, '2', 10)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ref, idxDigest := reg.PushIndex(t, "multi:1", idx)
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			t.Parallel()
			want, _ := digestOf(t, map[string]v1.Image{"amd64": amd, "arm64": arm}[arch])
			c := newCache(t, image.Options{Platform: v1.Platform{OS: "linux", Architecture: arch}})
			img := get(t, c, ref, nil)
			if img.Digest != idxDigest || img.ManifestDigest != want {
				t.Errorf("Digest %s ManifestDigest %s, want %s %s", img.Digest, img.ManifestDigest, idxDigest, want)
			}
		})
	}
}

func TestLocalSources(t *testing.T) {
	t.Parallel()
	roots := t.TempDir()
	bb := dataImage(t, 'l', 100)
	manifest, id := digestOf(t, bb)
	imagetest.WriteOCILayout(t, filepath.Join(roots, "layout"), bb, "1.0")
	imagetest.WriteDockerArchive(t, filepath.Join(roots, "saved.tar"), bb, "tools/data:1.0")
	two := filepath.Join(roots, "two")
	imagetest.WriteOCILayout(t, two, bb, "a")
	imagetest.WriteOCILayout(t, two, dataImage(t, 'm', 100), "b")
	c := newCache(t, image.Options{LocalRoots: []string{roots}})

	for _, tc := range []struct {
		ref, digest string
	}{
		{"oci-layout:" + roots + "/layout", manifest},
		{"oci-layout:" + roots + "/layout:1.0", manifest},
		{"oci-layout:" + roots + "/layout@" + manifest, manifest},
		{"oci-layout:" + roots + "/two:a", manifest},
		{"docker-archive:" + roots + "/saved.tar", id},
		{"docker-archive:" + roots + "/saved.tar:tools/data:1.0", id},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			img := get(t, c, tc.ref, nil)
			if img.Digest != tc.digest || img.ID != id {
				t.Errorf("Digest %s ID %s, want %s %s", img.Digest, img.ID, tc.digest, id)
			}
			if b, err := os.ReadFile(filepath.Join(img.Layers[0], "data")); err != nil || len(b) != 100 {
				t.Errorf("data: %d bytes, %v", len(b), err)
			}
		})
	}

	outside := t.TempDir()
	imagetest.WriteOCILayout(t, filepath.Join(outside, "layout"), bb, "")
	if err := os.Symlink(filepath.Join(outside, "layout"), filepath.Join(roots, "sneaky")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref  string
		want error
	}{
		{"oci-layout:" + outside + "/layout", image.ErrLocalNotAllowed},
		{"oci-layout:" + roots + "/sneaky", image.ErrLocalNotAllowed},
		{"oci-layout:relative/layout", nil},
		{"oci-layout:" + roots + "/two", nil},
		{"oci-layout:" + roots + "/layout:2.0", nil},
		{"docker-archive:" + roots + "/saved.tar:other:1", nil},
	} {
		t.Run("refused "+tc.ref, func(t *testing.T) {
			_, err := c.Get(context.Background(), tc.ref, nil)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Get: %v, want an error (%v)", err, tc.want)
			}
		})
	}
	if _, err := newCache(t, image.Options{}).Get(context.Background(), "oci-layout:"+roots+"/layout", nil); !errors.Is(err, image.ErrLocalNotAllowed) {
		t.Errorf("local source without LocalRoots: %v, want ErrLocalNotAllowed", err)
	}
}

func BenchmarkGetCacheHit(b *testing.B) {
	reg := imagetest.NewRegistry(b, imagetest.RegistryOpts{})
	ref, digest := reg.Push(b, "busybox:1", imagetest.Busybox(b))
	byDigest := reg.Host + "/busybox@" + digest
	for _, bc := range []struct {
		name string
		ref  string
		opts image.Options
	}{
		{"digest", byDigest, image.Options{}},
		{"tag-ttl", ref, image.Options{TagTTL: time.Hour}},
		{"tag-head", ref, image.Options{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newCache(b, bc.opts)
			get(b, c, bc.ref, nil).Release()
			ctx := context.Background()
			for b.Loop() {
				img, err := c.Get(ctx, bc.ref, nil)
				if err != nil {
					b.Fatal(err)
				}
				img.Release()
			}
		})
	}
}
