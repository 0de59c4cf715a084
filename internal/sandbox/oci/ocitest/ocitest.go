// Package ocitest holds the fixtures that the tests of the oci and gvisor
// runtimes share: a root filesystem made of a static busybox, a static
// container init, a check that a runtime left nothing behind, a test
// network (testnet.go), and an image cache fed by a loopback registry with
// the checks of steps over real image overlays (images.go). It is imported
// by tests only.
package ocitest

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
)

// BusyboxRootfs makes, in dir, a root filesystem of Debian's busybox-static:
// /bin/busybox, a symlink per applet, an /etc/passwd with root, builder
// (1000) and nobody, and an /etc/group with a wheel group that builder is a
// member of. It returns dir.
func BusyboxRootfs(dir string) (string, error) {
	src, err := exec.LookPath("busybox")
	if err != nil {
		return "", err
	}
	if out, err := exec.Command("file", "-L", src).Output(); err == nil && !bytes.Contains(out, []byte("statically linked")) {
		return "", fmt.Errorf("%s is not statically linked", src)
	}
	for _, d := range []string{"bin", "etc", "tmp", "work", "proc", "sys", "dev", "home/builder"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755); err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(dir, "bin", "busybox"), "--list").Output()
	if err != nil {
		return "", err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			return "", err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nbuilder:x:1000:\nwheel:x:10:builder\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	return dir, os.Chmod(dir, 0o755)
}

// StaticInit returns the container init for runtimes under test: "" (the
// test binary itself) when the test binary is statically linked, else a
// static build of ./ociinit written into dir (a race-enabled test binary is
// always dynamic).
func StaticInit(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	if static, _ := oci.IsStatic(self); static {
		return "", nil
	}
	path := filepath.Join(dir, "airlock-oci-init")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "build", "-o", path, "github.com/airlock-run/airlock/internal/sandbox/oci/ociinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building a static init: %v: %s", err, out)
	}
	return path, nil
}

// Leftovers lists what remains of any attempt under a runtime's root and
// cgroup parent: directories (but the runtime's own, whose names start with
// a dot), mounts (but those in the runtime's own directories) and cgroups.
func Leftovers(root, cgParent string) ([]string, error) {
	var left []string
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			left = append(left, "directory "+filepath.Join(root, e.Name()))
		}
	}
	mps, err := hostfs.MountsUnder(root)
	if err != nil {
		return nil, err
	}
	for _, mp := range mps {
		if rel, _ := filepath.Rel(root, mp); !strings.HasPrefix(rel, ".") {
			left = append(left, "mount "+mp)
		}
	}
	mnts, err := CgroupMounts()
	if err != nil {
		return nil, err
	}
	for _, mnt := range mnts {
		sub, _ := os.ReadDir(filepath.Join(mnt, cgParent))
		for _, e := range sub {
			if e.IsDir() {
				left = append(left, "cgroup "+filepath.Join(mnt, cgParent, e.Name()))
			}
		}
	}
	return left, nil
}

// CgroupMounts returns the mount points of every cgroup hierarchy.
func CgroupMounts() ([]string, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mnts []string
	for line := range strings.SplitSeq(string(mi), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if f, g := strings.Fields(pre), strings.Fields(post); ok && len(f) > 4 && len(g) > 0 && strings.HasPrefix(g[0], "cgroup") {
			mnts = append(mnts, f[4])
		}
	}
	return mnts, nil
}

// RemoveCgroupParent removes a runtime's cgroup parent from every hierarchy.
func RemoveCgroupParent(cgParent string) error {
	mnts, err := CgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, mnt := range mnts {
		if err := os.Remove(filepath.Join(mnt, cgParent)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing cgroup parent: %w", err))
		}
	}
	return errors.Join(errs...)
}

// RemoveRoot unmounts what is mounted under a runtime's root (runsc's null
// network namespace, when nothing else is left) and removes it.
func RemoveRoot(root string) error {
	mps, err := hostfs.MountsUnder(root)
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	return os.RemoveAll(root)
}
