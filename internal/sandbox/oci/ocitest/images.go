package ocitest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/rootfs"
)

// ImageCache is an image cache directory holding the owners image, pulled
// from a loopback registry: busybox, plus an /etc/passwd and /etc/group
// with root, builder (1000) and nobody, root's /root/secret (mode 0600 in
// a 0700 /root), and builder's /home/builder/own (mode 0600 in a 0700
// /home/builder, both owned by 1000:1000).
type ImageCache struct {
	// Dir holds the cache (Dir/cache) and the Provider's root (Dir/rootfs).
	// One process at a time may use it: Open it, or give it to a helper
	// process's OpenImages.
	Dir string
	// Root is the owners image, run as root; Builder is the same image
	// (the same layers) run as builder.
	Root, Builder string

	layers      []string
	fingerprint string
}

// NewImageCache makes an ImageCache in a directory of its own under dir.
func NewImageCache(t *testing.T, dir string) *ImageCache {
	t.Helper()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	owners := imagetest.Layer(t,
		imagetest.Reg("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
		imagetest.Reg("etc/group", "root:x:0:\nbuilder:x:1000:\nnogroup:x:65534:\n", 0o644),
		imagetest.Dir("root", 0o700),
		imagetest.Reg("root/secret", "root only\n", 0o600),
		imagetest.Dir("home", 0o755),
		imagetest.File{Name: "home/builder", Type: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000},
		imagetest.File{Name: "home/builder/own", Mode: 0o600, Uid: 1000, Gid: 1000, Body: "mine\n"},
	)
	img, err := mutate.AppendLayers(imagetest.Busybox(t), owners)
	if err != nil {
		t.Fatal(err)
	}
	asRoot, err := mutate.Config(img, v1.Config{Env: []string{imagetest.DefaultPath}})
	if err != nil {
		t.Fatal(err)
	}
	asBuilder, err := mutate.Config(img, v1.Config{Env: []string{imagetest.DefaultPath}, User: "builder"})
	if err != nil {
		t.Fatal(err)
	}
	c := &ImageCache{Dir: filepath.Join(dir, fmt.Sprintf("images-%d", cacheSeq.Add(1)))}
	c.Root, _ = reg.Push(t, "owners:root", asRoot)
	c.Builder, _ = reg.Push(t, "owners:builder", asBuilder)

	cache, err := image.New(image.Options{Root: filepath.Join(c.Dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	for _, ref := range []string{c.Root, c.Builder} {
		got, err := cache.Get(context.Background(), ref, nil)
		if err != nil {
			t.Fatalf("pulling %s: %v", ref, err)
		}
		c.layers = got.Layers
		got.Release()
	}
	if c.fingerprint, err = Fingerprint(c.layers); err != nil {
		t.Fatal(err)
	}
	return c
}

var cacheSeq atomic.Int64

// Open opens the cache, until the test ends, and returns a Provider over it.
func (c *ImageCache) Open(t *testing.T) *rootfs.Provider {
	t.Helper()
	p, closeCache, err := OpenImages(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := closeCache(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// OpenImages opens the image cache of an ImageCache's Dir and returns a
// Provider over it, and a function that closes the cache: for helper
// processes, which have no testing.T.
func OpenImages(dir string) (*rootfs.Provider, func() error, error) {
	cache, err := image.New(image.Options{Root: filepath.Join(dir, "cache")})
	if err != nil {
		return nil, nil, err
	}
	p, err := rootfs.New(rootfs.Options{Cache: cache, Root: filepath.Join(dir, "rootfs")})
	if err != nil {
		return nil, nil, errors.Join(err, cache.Close())
	}
	return p, cache.Close, nil
}

// CheckUnchanged fails the test if a file of the image's cached layers
// changed — content, mode, owner or times — since NewImageCache.
func (c *ImageCache) CheckUnchanged(t *testing.T) {
	t.Helper()
	got, err := Fingerprint(c.layers)
	if err != nil {
		t.Fatal(err)
	}
	if got != c.fingerprint {
		t.Errorf("the cached layers changed:\nbefore:\n%s\nafter:\n%s", c.fingerprint, got)
	}
}

// Fingerprint describes the trees dirs: every path with its type, mode,
// owner, size, modification time, link target and content hash.
func Fingerprint(dirs []string) (string, error) {
	var lines []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			line := fmt.Sprintf("%s %v %d:%d %d %d", p, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				line += " -> " + target
			case fi.Mode().IsRegular():
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				line += fmt.Sprintf(" %x", sha256.Sum256(b))
			}
			lines = append(lines, line)
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

var imageSandboxSeq atomic.Int64

// ExerciseImages checks a runtime over the real image overlays the executor
// uses (a rootfs.Provider over an ImageCache): in the owners image, files
// keep their owners (root's show as root's, builder's as 1000's) and modes;
// root reads root's 0700 directory; the root filesystem is read-only; a
// step running as the image's user builder reads builder's files, writes
// /work and /tmp, and cannot read root's; both images share one overlay;
// and after Close and Release nothing is mounted under the runtime's root
// and the cached layers are unchanged. newRuntime returns a runtime under
// test with images as its Options.Images (which checks, at the end of the
// test, that the runtime left nothing behind); dir is where the image cache
// goes.
func ExerciseImages(t *testing.T, dir string, newRuntime func(t *testing.T, images oci.ImageFunc) sandbox.Runtime) {
	c := NewImageCache(t, dir)
	p := c.Open(t)
	rt := newRuntime(t, p.ImageFunc())
	name := fmt.Sprintf("img-%d-%d", os.Getpid(), imageSandboxSeq.Add(1))
	ctx := context.Background()
	// With a pids limit, as the executor always sets one: the runtimes take
	// another path to the step's user then (gVisor's init switches users).
	sb, err := rt.Open(ctx, sandbox.OpenParams{Name: name, Resources: job.Resources{Pids: 256}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			sb.Close(ctx)
		}
		p.Release(name)
	})
	// As the executor does: pull every step's image for the attempt first.
	for _, ref := range []string{c.Root, c.Builder} {
		if _, err := p.Pull(ctx, name, ref, ""); err != nil {
			t.Fatalf("Pull(%s): %v", ref, err)
		}
	}
	steps := []struct {
		name, image, user, script, want string
	}{
		{"files keep their owners", c.Root, "",
			`stat -c '%u:%g %a %n' / /etc/passwd /bin/busybox /root /root/secret /home/builder /home/builder/own; cat /root/secret`,
			"0:0 755 /\n0:0 644 /etc/passwd\n0:0 755 /bin/busybox\n0:0 700 /root\n0:0 600 /root/secret\n" +
				"1000:1000 700 /home/builder\n1000:1000 600 /home/builder/own\nroot only\n"},
		{"the root filesystem is read-only", c.Root, "",
			`touch /etc/passwd 2>&1; touch /bin/x 2>&1; mkdir /new 2>&1; echo written > /work/root-file && cat /work/root-file`,
			"touch: /etc/passwd: Read-only file system\ntouch: /bin/x: Read-only file system\n" +
				"mkdir: can't create directory '/new': Read-only file system\nwritten\n"},
		{"the image's user", c.Builder, "",
			`id; cat /home/builder/own; echo w > /work/f && cat /work/f; echo t > /tmp/f && cat /tmp/f; cat /root/secret 2>&1; stat -c '%u:%g %n' /work/f`,
			"uid=1000(builder) gid=1000(builder)\nmine\nw\nt\ncat: can't open '/root/secret': Permission denied\n1000:1000 /work/f\n"},
		{"the step's user over the image's", c.Root, "builder",
			`id; cat /home/builder/own; cat /root/secret 2>&1 || true`,
			"uid=1000(builder) gid=1000(builder)\nmine\ncat: can't open '/root/secret': Permission denied\n"},
	}
	for _, s := range steps {
		var out bytes.Buffer
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		res, err := sb.Run(rctx, sandbox.Step{Image: s.image, User: s.user, Run: s.script, Stdout: &out, Stderr: &out})
		cancel()
		if err != nil {
			t.Fatalf("%s: Run: %v (output %q)", s.name, err, out.String())
		}
		if !res.Success() || out.String() != s.want {
			t.Errorf("%s: Result %+v, output %q; want success and %q", s.name, res, out.String(), s.want)
		}
	}
	// A step user the image lacks is the job's mistake, reported as such.
	if _, err := sb.Run(ctx, sandbox.Step{Image: c.Root, User: "nosuchuser", Run: "true"}); !errors.Is(err, sandbox.ErrImage) {
		t.Errorf("a step user the image lacks: Run = %v, want ErrImage", err)
	}
	// The executor sees the steps' files as its own.
	for _, f := range []string{"root-file", "f"} {
		fi, err := os.Stat(filepath.Join(sb.WorkDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			t.Errorf("/work/%s is host %d:%d, want 0:0", f, st.Uid, st.Gid)
		}
	}
	var root string
	if r, ok := rt.(interface{ Root() string }); ok {
		root = r.Root()
		if mps, err := hostfs.MountsUnder(filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		} else if n := countOverlays(mps); n != 1 {
			t.Errorf("the attempt has %d overlays mounted, want 1 for both images (same layers):\n%s", n, strings.Join(mps, "\n"))
		}
	}

	closed = true
	if err := sb.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := p.Release(name); err != nil {
		t.Errorf("Release: %v", err)
	}
	if root != "" {
		if mps, err := hostfs.MountsUnder(root); err != nil || slices.ContainsFunc(mps, func(mp string) bool { return strings.Contains(mp, name) }) {
			t.Errorf("mounted after Close: %q (%v)", mps, err)
		}
	}
	c.CheckUnchanged(t)
}

// countOverlays counts the image overlays among mount points of an attempt.
func countOverlays(mps []string) int {
	n := 0
	for _, mp := range mps {
		if strings.Contains(mp, "/images/") && strings.HasSuffix(mp, "/rootfs") {
			n++
		}
	}
	return n
}
