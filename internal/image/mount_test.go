package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/airlock-run/airlock/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"
)

// requireOverlay ends the test unless overlayfs can be mounted here.
func requireOverlay(t *testing.T) {
	t.Helper()
	requireRoot(t)
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !bytes.Contains(b, []byte("\toverlay\n")) {
		testenv.Missing(t, "overlayfs", fmt.Errorf("not in /proc/filesystems (%v)", err))
	}
}

// fingerprint describes a tree: every path with its type, mode, owner, size,
// mtime, link target and content hash.
func fingerprint(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d %d %d", strings.TrimPrefix(p, dir), fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
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
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// layeredImage is busybox plus two layers: the first adds /home/old and
// /etc/extra, the second whites out /etc/group and /etc/extra and makes
// /home opaque with /home/new.
func layeredImage(t *testing.T) v1.Image {
	img, err := mutate.AppendLayers(imagetest.Busybox(t),
		imagetest.Layer(t, imagetest.Dir("home", 0o755), imagetest.Reg("home/old", "old", 0o644),
			imagetest.Reg("etc/extra", "extra", 0o644)),
		imagetest.Layer(t, imagetest.Reg("etc/.wh.group", "", 0o644), imagetest.Reg("etc/.wh.extra", "", 0o644),
			imagetest.Reg("home/.wh..wh..opq", "", 0o644), imagetest.Reg("home/new", "new", 0o644)),
	)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestMount(t *testing.T) {
	requireOverlay(t)
	// Not parallel: the legacy subtest sets forceLegacyMount.
	root := t.TempDir()
	imagetest.WriteOCILayout(t, filepath.Join(root, "src"), layeredImage(t), "")
	c, err := New(Options{Root: filepath.Join(root, "cache"), LocalRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	img, err := c.Get(context.Background(), "oci-layout:"+filepath.Join(root, "src"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Release()
	if len(img.Layers) != 3 {
		t.Fatalf("Layers = %q, want 3", img.Layers)
	}
	before := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		before[i] = fingerprint(t, l)
	}

	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			forceLegacyMount = legacy
			defer func() { forceLegacyMount = false }()
			dir := filepath.Join(t.TempDir(), "airlock-7-1")
			layer, err := Mount(context.Background(), img, dir)
			if err != nil {
				t.Fatalf("Mount: %v", err)
			}
			if !mounted(t, layer.Rootfs) {
				t.Fatalf("%s is not a mount point", layer.Rootfs)
			}

			// The image's whiteouts and opaque directory hold in the
			// stacked view.
			for p, want := range map[string]bool{"etc/passwd": true, "etc/group": false, "etc/extra": false,
				"home/new": true, "home/old": false, "bin/sh": true} {
				_, err := os.Lstat(filepath.Join(layer.Rootfs, p))
				if got := err == nil; got != want {
					t.Errorf("%s exists = %v, want %v (%v)", p, got, want, err)
				}
			}

			// A job writes, deletes and modifies files of the image, from
			// the image's own shell.
			cmd := exec.Command("/bin/sh", "-c", `echo hello > /tmp/out && rm /etc/passwd && echo more >> /home/new && mkdir /work/w && cat /tmp/out`)
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: layer.Rootfs}
			cmd.Dir = "/"
			cmd.Env = []string{imagetest.DefaultPath}
			out, err := cmd.CombinedOutput()
			if err != nil || string(out) != "hello\n" {
				t.Fatalf("running the image's shell: %v, output %q", err, out)
			}
			// So does a user other than root; the cache's own 0700
			// directory is no obstacle through the mount.
			cmd = exec.Command("/bin/cat", "/home/new")
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: layer.Rootfs, Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			cmd.Dir = "/"
			if out, err := cmd.CombinedOutput(); err != nil || string(out) != "newmore\n" {
				t.Errorf("reading as nobody: %v, output %q", err, out)
			}
			if b, err := os.ReadFile(filepath.Join(layer.Upper, "tmp/out")); err != nil || string(b) != "hello\n" {
				t.Errorf("upper tmp/out = %q, %v; want the job's write", b, err)
			}
			if st := lstat(t, filepath.Join(layer.Upper, "etc/passwd")); st.Mode&unix.S_IFMT != unix.S_IFCHR {
				t.Errorf("upper etc/passwd mode %o, want a whiteout", st.Mode)
			}
			for i, l := range img.Layers {
				if got := fingerprint(t, l); got != before[i] {
					t.Errorf("cached layer %d changed through the mount", i)
				}
			}

			if err := layer.Unmount(); err != nil {
				t.Fatalf("Unmount: %v", err)
			}
			if mounted(t, layer.Rootfs) {
				t.Errorf("%s still mounted", layer.Rootfs)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s not removed: %v", dir, err)
			}
			if err := Unmount(dir); err != nil {
				t.Errorf("Unmount of a removed layer: %v, want nil", err)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "job")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := Mount(context.Background(), img, dir); err == nil {
			t.Errorf("Mount into an existing directory succeeded")
		}
		missing := &Image{Digest: "sha256:x", Layers: []string{filepath.Join(root, "no-such-layer")}}
		dir2 := filepath.Join(t.TempDir(), "job")
		_, err := Mount(context.Background(), missing, dir2)
		if err == nil || !strings.Contains(err.Error(), "no-such-layer") {
			t.Errorf("Mount of a missing layer: %v, want an error naming it", err)
		}
		if _, serr := os.Stat(dir2); !os.IsNotExist(serr) {
			t.Errorf("failed Mount left %s behind", dir2)
		}
	})
}

// BenchmarkMount measures what a step pays for its copy-on-write root on a
// cache hit: mounting and unmounting the overlay.
func BenchmarkMount(b *testing.B) {
	if os.Geteuid() != 0 {
		testenv.Missing(b, "root", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
	root := b.TempDir()
	imagetest.WriteOCILayout(b, filepath.Join(root, "src"), imagetest.Busybox(b), "")
	c, err := New(Options{Root: filepath.Join(root, "cache"), LocalRoots: []string{root}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	img, err := c.Get(context.Background(), "oci-layout:"+filepath.Join(root, "src"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer img.Release()
	i := 0
	for b.Loop() {
		i++
		l, err := Mount(context.Background(), img, filepath.Join(root, "jobs", fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Unmount(); err != nil {
			b.Fatal(err)
		}
	}
}

// bindReadOnly mounts src on dst read-only: MountLayers' IDMap hook without
// the mapping, which the container runtimes' tests cover.
func bindReadOnly(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
}

// mountsUnder lists the mount points under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mps = append(mps, f[4])
		}
	}
	return mps
}

func TestMountLayersThroughTheIDMapHook(t *testing.T) {
	requireOverlay(t)
	root := t.TempDir()
	var layers []string
	for i, files := range []map[string]string{{"a": "bottom", "b": "bottom"}, {"b": "top"}} {
		l := filepath.Join(root, fmt.Sprintf("layer%d", i))
		if err := os.Mkdir(l, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(l, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		layers = append(layers, l)
	}
	before := fingerprint(t, root)

	t.Run("mounted", func(t *testing.T) {
		var mapped []string
		hook := func(src, dst string) error {
			mapped = append(mapped, src)
			return bindReadOnly(src, dst)
		}
		dir := filepath.Join(t.TempDir(), "airlock-7-1")
		l, err := MountLayers(context.Background(), layers, dir, MountOpts{IDMap: hook, UID: 4242, GID: 4343})
		if err != nil {
			t.Fatalf("MountLayers: %v", err)
		}
		if want := []string{layers[1], layers[0]}; strings.Join(mapped, ",") != strings.Join(want, ",") {
			t.Errorf("the hook mapped %q, want every layer, top first: %q", mapped, want)
		}
		// The ID-mapped mounts are detached once the overlay holds them.
		if got := mountsUnder(t, dir); len(got) != 1 || got[0] != l.Rootfs {
			t.Errorf("mounted under the layer: %q, want only %s", got, l.Rootfs)
		}
		for name, want := range map[string]string{"a": "bottom", "b": "top"} {
			if b, err := os.ReadFile(filepath.Join(l.Rootfs, name)); err != nil || string(b) != want {
				t.Errorf("%s = %q, %v; want %q", name, b, err, want)
			}
		}
		if err := os.WriteFile(filepath.Join(l.Rootfs, "a"), []byte("job"), 0o644); err != nil {
			t.Errorf("writing through the overlay: %v", err)
		}
		if st := lstat(t, l.Rootfs); st.Uid != 4242 || st.Gid != 4343 {
			t.Errorf("the root directory is %d:%d, want the container root's 4242:4343", st.Uid, st.Gid)
		}
		if err := l.Unmount(); err != nil {
			t.Fatalf("Unmount: %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", dir, err)
		}
	})

	t.Run("the hook fails", func(t *testing.T) {
		calls := 0
		hook := func(src, dst string) error {
			if calls++; calls == 2 {
				return errors.New("no mapping today")
			}
			return bindReadOnly(src, dst)
		}
		dir := filepath.Join(t.TempDir(), "airlock-7-2")
		_, err := MountLayers(context.Background(), layers, dir, MountOpts{IDMap: hook})
		if err == nil || !strings.Contains(err.Error(), layers[0]) || !strings.Contains(err.Error(), "no mapping today") {
			t.Errorf("MountLayers = %v, want the hook's error naming the layer", err)
		}
		if got := mountsUnder(t, filepath.Dir(dir)); len(got) > 0 {
			t.Errorf("mounted after a failed MountLayers: %q", got)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("a failed MountLayers left %s: %v", dir, err)
		}
	})

	t.Run("a crash left mapped layers", func(t *testing.T) {
		// A process that died between mapping the layers and mounting the
		// overlay leaves dir/lower/N mounted; Unmount, the janitors' tool,
		// detaches them before removing anything.
		dir := filepath.Join(t.TempDir(), "airlock-7-3")
		for i, l := range layers {
			mp := filepath.Join(dir, "lower", fmt.Sprint(i))
			if err := os.MkdirAll(mp, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := bindReadOnly(l, mp); err != nil {
				t.Fatal(err)
			}
		}
		if err := Unmount(dir); err != nil {
			t.Fatalf("Unmount: %v", err)
		}
		if got := mountsUnder(t, dir); len(got) > 0 {
			t.Errorf("mounted after Unmount: %q", got)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s not removed: %v", dir, err)
		}
	})

	if got := fingerprint(t, root); got != before {
		t.Errorf("the layers changed:\nbefore:\n%s\nafter:\n%s", before, got)
	}
}
