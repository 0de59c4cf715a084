package imagetest

// The Debian image: a glibc root file system made by `debootstrap
// --variant=minbase`, for tests that need more than busybox (a dynamic
// loader, bash, coreutils, apt's view of a real distribution).
//
// Building it takes a minute or more and needs the Debian mirror, so the
// result is kept between runs in a cache directory (CacheDir): one OCI image
// layout per suite, architecture and recipe version. Several test binaries
// (one per package, run in parallel by `go test ./...`) may ask for it at
// once, so the check-and-build runs under an exclusive flock on a lock file
// beside the layout, and the layout is built in a temporary directory and
// renamed into place: a reader sees a whole layout or none. debootstrap runs
// in a mount namespace of its own, so the /proc and /sys it mounts in the
// target vanish with it even when it fails half-way.
//
// The image has one layer: the debootstrapped tree with apt's downloaded
// packages and lists, /dev's device nodes and the machine ID removed, a user
// builder (1000:1000, home /home/builder) added, and every time stamp set to
// Epoch. The layer is gzip-compressed once when built; loading the cached
// layout later copies nothing.

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
	"github.com/airlock-run/airlock/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// Environment variables that steer the Debian image.
const (
	// CacheEnv names the directory where slow-to-build test images are kept
	// between runs; unset means DefaultCacheDir.
	CacheEnv = "AIRLOCK_TEST_CACHE"
	// MirrorEnv overrides the Debian mirror debootstrap downloads from;
	// unset means the first non-security URI in the host's apt sources.
	MirrorEnv = "AIRLOCK_TEST_DEBIAN_MIRROR"
)

// DefaultCacheDir is the cache directory when CacheEnv is unset.
const DefaultCacheDir = "/var/cache/airlock-test"

// DebianSuite is the suite Debian builds when DebianOpts.Suite is empty.
const DebianSuite = "bookworm"

// debianRecipe is the version of how the image is made; bump it when the
// build changes so that older cached layouts are not used.
const debianRecipe = "v1"

// debianBuildTimeout bounds one debootstrap run.
const debianBuildTimeout = 20 * time.Minute

// DebianUser is the unprivileged user the Debian image has besides root;
// DebianOpts.User may name it.
const (
	DebianUser = "builder"
	DebianUID  = 1000
)

// DebianPath is the PATH in the Debian image's config.
const DebianPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DebianOpts choose a Debian image.
type DebianOpts struct {
	// Suite is a Debian suite debootstrap knows; "" is DebianSuite.
	Suite string
	// User is the config's User ("", root, or DebianUser, "1000:1000", ...).
	// It changes only the config: every variant of a suite shares one
	// cached build and one layer.
	User string
}

// CacheDir returns the directory where slow-to-build test images are kept:
// $AIRLOCK_TEST_CACHE, else DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv(CacheEnv); d != "" {
		return d
	}
	return DefaultCacheDir
}

// Debian returns the Debian bookworm minbase image, running as root. See
// DebianWith.
func Debian(t testing.TB) v1.Image {
	t.Helper()
	return DebianWith(t, DebianOpts{})
}

// debianMemo keeps this process's answer per suite: the image (or error)
// and how long getting it took.
var (
	debianMu   sync.Mutex
	debianMemo = map[string]*debianResult{}
)

type debianResult struct {
	once  sync.Once
	img   v1.Image
	built bool
	took  time.Duration
	err   error
	// missing is set when what failed is the host's (no debootstrap, no
	// root, mirror unreachable) rather than this code's.
	missing bool
}

// DebianWith returns a Debian image made with `debootstrap
// --variant=minbase` for the host's architecture: glibc, bash, coreutils,
// apt, /usr/bin/env, a user builder (1000:1000), PATH set in the config.
// The first call on a host builds it (a minute or two; needs root,
// debootstrap and the Debian mirror) and caches it under CacheDir; later
// calls, in any process, load the cached OCI layout. The test log says
// which happened and how long it took. A missing debootstrap, root or mirror
// ends the test through testenv.Missing.
func DebianWith(t testing.TB, opts DebianOpts) v1.Image {
	t.Helper()
	suite := opts.Suite
	if suite == "" {
		suite = DebianSuite
	}
	debianMu.Lock()
	r := debianMemo[suite]
	if r == nil {
		r = &debianResult{}
		debianMemo[suite] = r
	}
	debianMu.Unlock()
	r.once.Do(func() {
		start := time.Now()
		r.img, r.built, r.missing, r.err = loadOrBuildDebian(suite, CacheDir(), t.Logf)
		r.took = time.Since(start)
		if r.err == nil {
			how := "loaded from the cache"
			if r.built {
				how = "built with debootstrap"
			}
			t.Logf("debian %s image %s in %v (cache %s)", suite, how, r.took.Round(time.Millisecond), CacheDir())
		}
	})
	switch {
	case r.err != nil && r.missing:
		testenv.Missing(t, "debootstrap image", r.err)
	case r.err != nil:
		t.Fatalf("debian %s image: %v", suite, r.err)
	}
	if opts.User == "" {
		return r.img
	}
	cf, err := r.img.ConfigFile()
	if err != nil {
		t.Fatalf("debian %s image: %v", suite, err)
	}
	cf = cf.DeepCopy()
	cf.Config.User = opts.User
	img, err := mutate.ConfigFile(r.img, cf)
	if err != nil {
		t.Fatalf("debian %s image: %v", suite, err)
	}
	return img
}

// debianKey names the suite's cached layout (and its lock file).
func debianKey(suite string) string {
	return fmt.Sprintf("debian-%s-minbase-%s-%s", suite, dpkgArch(), debianRecipe)
}

func dpkgArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	}
	return runtime.GOARCH // amd64, arm64, riscv64, s390x, mips64le
}

// loadOrBuildDebian returns the cached image of suite, building it first if
// the cache lacks it. missing reports that the error is the host's.
func loadOrBuildDebian(suite, cache string, logf func(string, ...any)) (img v1.Image, built, missing bool, err error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, false, true, fmt.Errorf("creating the test image cache: %w", err)
	}
	key := debianKey(suite)
	dir := filepath.Join(cache, key)
	lock, err := os.OpenFile(dir+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, true, fmt.Errorf("opening the cache lock: %w", err)
	}
	defer lock.Close() // closing releases the flock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, false, false, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	if img, err := loadLayout(dir); err == nil {
		return img, false, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		logf("rebuilding the cached debian image: %v", err)
		if err := hostfs.RemoveTree(dir); err != nil {
			return nil, false, false, err
		}
	}
	logf("building the debian %s image with debootstrap (once per host; cached in %s)", suite, cache)
	missing, err = buildDebian(suite, cache, dir)
	if err != nil {
		return nil, false, missing, err
	}
	img, err = loadLayout(dir)
	return img, true, false, err
}

// loadLayout returns the one image of the OCI layout at dir, its layers
// checked to be present.
func loadLayout(dir string) (v1.Image, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(im.Manifests) != 1 {
		return nil, fmt.Errorf("layout %s holds %d images, want 1", dir, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(dir, "blobs", d.Algorithm, d.Hex)); err != nil {
			return nil, fmt.Errorf("layout %s: layer %s: %w", dir, d, err)
		}
	}
	return img, nil
}

// buildDebian debootstraps suite in a temporary directory under cache and
// renames the finished layout to dir.
func buildDebian(suite, cache, dir string) (missing bool, err error) {
	if os.Geteuid() != 0 {
		return true, errors.New("debootstrap needs root")
	}
	bin, err := exec.LookPath("debootstrap")
	if err != nil {
		return true, fmt.Errorf("%w (apt-get install debootstrap)", err)
	}
	mirror, err := DebianMirror()
	if err != nil {
		return true, err
	}
	tmp, err := os.MkdirTemp(cache, filepath.Base(dir)+".tmp-")
	if err != nil {
		return false, err
	}
	defer func() {
		if rerr := hostfs.RemoveTree(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("removing the build directory: %w", rerr)
		}
	}()
	rootfs := filepath.Join(tmp, "rootfs")
	ctx, cancel := context.WithTimeout(context.Background(), debianBuildTimeout)
	defer cancel()
	logPath := filepath.Join(tmp, "debootstrap.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return false, err
	}
	cmd := exec.CommandContext(ctx, bin, "--variant=minbase", "--arch="+dpkgArch(), "--components=main",
		suite, rootfs, mirror)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A mount namespace of its own (Go makes its mounts private): what
	// debootstrap mounts in the target goes when it exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	runErr := cmd.Run()
	logf.Close()
	if runErr != nil {
		// Most failures are the host's: no mirror, no space, no keyring.
		return true, fmt.Errorf("debootstrap %s from %s: %w: %s", suite, mirror, runErr, tail(logPath, 12))
	}
	if err := trimRootfs(rootfs); err != nil {
		return false, fmt.Errorf("preparing the root filesystem: %w", err)
	}
	layerPath := filepath.Join(tmp, "layer.tar.gz")
	if err := writeLayer(rootfs, layerPath); err != nil {
		return false, fmt.Errorf("writing the layer: %w", err)
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return false, err
	}
	img, err := imageOf(v1.Config{
		Env:    []string{DebianPath, "LANG=C.UTF-8"},
		Cmd:    []string{"/bin/bash"},
		Labels: map[string]string{"org.opencontainers.image.title": "airlock test image: debian " + suite + " minbase"},
	}, []v1.Layer{layer})
	if err != nil {
		return false, err
	}
	out := filepath.Join(tmp, "oci")
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return false, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": suite})); err != nil {
		return false, err
	}
	if err := syncTree(out); err != nil {
		return false, err
	}
	// The layout appears whole or not at all.
	if err := os.Rename(out, dir); err != nil {
		return false, err
	}
	return false, nil
}

// DebianMirror returns the mirror debootstrap uses: $AIRLOCK_TEST_DEBIAN_MIRROR,
// else the first URI of the host's apt sources (one-line or deb822 format)
// that is not a security archive.
func DebianMirror() (string, error) {
	if m := os.Getenv(MirrorEnv); m != "" {
		return m, nil
	}
	files := []string{"/etc/apt/sources.list"}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, uri := range aptURIs(string(b)) {
			if !strings.Contains(uri, "security") && strings.HasPrefix(uri, "http") {
				return uri, nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror in the apt sources (set %s)", MirrorEnv)
}

// aptURIs returns the archive URIs of an apt sources file, in order: "deb
// URI ..." lines and deb822 "URIs:" fields of Types: deb stanzas.
func aptURIs(text string) []string {
	var uris []string
	isDeb := true // a deb822 stanza's Types, until its end
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			isDeb = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch {
		case f[0] == "deb" && len(f) >= 2:
			u := f[1]
			if strings.HasPrefix(u, "[") { // deb [options] URI
				for i := 1; i < len(f); i++ {
					if strings.HasSuffix(f[i], "]") && i+1 < len(f) {
						u = f[i+1]
						break
					}
				}
			}
			uris = append(uris, u)
		case strings.EqualFold(f[0], "Types:"):
			isDeb = false
			for _, ty := range f[1:] {
				if ty == "deb" {
					isDeb = true
				}
			}
		case strings.EqualFold(f[0], "URIs:") && isDeb:
			uris = append(uris, f[1:]...)
		}
	}
	return uris
}

// trimRootfs removes what an image should not carry and adds the test user.
func trimRootfs(rootfs string) error {
	for _, pat := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", "dev/*", "var/log/*.log", "var/log/apt/*"} {
		m, err := filepath.Glob(filepath.Join(rootfs, pat))
		if err != nil {
			return err
		}
		for _, p := range m {
			if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
				continue // keep lists/partial, archives/partial
			}
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	// An empty machine ID, as Debian's container images have: systemd
	// tools make one at first boot.
	if err := os.WriteFile(filepath.Join(rootfs, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	for _, f := range []struct{ name, line string }{
		{"etc/passwd", fmt.Sprintf("%s:x:%d:%d::/home/%s:/bin/bash\n", DebianUser, DebianUID, DebianUID, DebianUser)},
		{"etc/group", fmt.Sprintf("%s:x:%d:\n", DebianUser, DebianUID)},
		{"etc/shadow", DebianUser + ":*:19000:0:99999:7:::\n"},
	} {
		fh, err := os.OpenFile(filepath.Join(rootfs, f.name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = io.WriteString(fh, f.line)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	for _, d := range []string{"home/" + DebianUser, "work"} {
		p := filepath.Join(rootfs, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	return os.Chown(filepath.Join(rootfs, "home", DebianUser), DebianUID, DebianUID)
}

// writeLayer writes rootfs as a gzip-compressed tar at path: entries in
// lexical order with names relative to rootfs, numeric owners, every time
// Epoch, hard links kept, the security.capability xattr kept.
func writeLayer(rootfs, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	links := make(map[[2]uint64]string) // (dev, ino) → first name
	err = filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == rootfs {
			return nil
		}
		name, err := filepath.Rel(rootfs, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		target := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		hdr.Name = name
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		hdr.Uname, hdr.Gname = "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = Epoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[key] = name
			}
		}
		if fi.Mode().IsRegular() {
			buf := make([]byte, 256)
			if n, err := unix.Lgetxattr(p, "security.capability", buf); err == nil {
				hdr.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string(buf[:n])}
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// syncTree fsyncs every file and directory under dir, so that a layout
// renamed into place survives a crash whole.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
