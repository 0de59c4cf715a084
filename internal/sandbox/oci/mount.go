// Host mounts of a sandbox: ID-mapped mounts, image overlays, and the
// workspace's disk.
//
// With a user namespace, root in the container is an unprivileged host user
// (Options.IDBase), and a file's owner is shown inside as the host owner
// minus IDBase — or as nobody when the host owner is outside the mapped range,
// as root (0) is. A workspace the executor fills as root would then be
// read-only to the step. An ID-mapped mount (mount_setattr(2),
// MOUNT_ATTR_IDMAP, Linux 5.12) fixes that without touching the files: the
// runtime mounts the workspace a second time, ID-mapped with the container's
// mapping, and binds that mount at /work. Through it, host root's files belong
// to the container's root, and what the container's root creates is stored
// as host root: executor and step see the same tree as their own.
//
// A step's image comes as the cached layer directories (Image.Layers), which
// are host root's, and the runtime makes the attempt's copy-on-write root
// filesystem over them, once per attempt and image, in images/<key>/: an
// overlay (image.MountLayers) whose lower layers are read-only ID-mapped
// clones of the cache's directories and whose upper layer, the root
// directory, belongs to the container's root. An overlayfs mount cannot be
// ID-mapped itself, but its layers can (Linux 5.19), as containerd does it
// for user namespaces; so the image's files keep their owners in the
// container — root's 0700 directories stay root's, a file of user 1000
// stays 1000's — and the cache is neither written nor re-owned. A RootFS
// directory (DirImage) is ID-mapped as a whole when its filesystem allows
// it; else its files show as owned by nobody (with a warning).
//
// A mapping comes from a user namespace that the runtime creates, in a child
// stopped by ptrace before it runs anything, once per mapping, and keeps
// open.
//
// The disk limit is an ext4 filesystem in a sparse file of Resources.Disk
// bytes, loop-mounted on the workspace: mkfs.ext4 takes tens of
// milliseconds, needs no quota support from the host filesystem, and a full
// workspace gives the step ENOSPC without affecting the host.
//
// All these mounts live in the host's mount namespace under the attempt's
// directory, so Close and the janitor find them there, unmount them deepest
// first, and check that nothing is mounted before deleting the directory.
package oci

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/sandbox/hostfs"
)

// idMap is the container's user and group ID mapping: container IDs
// 0..size-1 are host IDs base..base+size-1.
type idMap struct {
	base, size uint32
}

// host returns the host ID of container ID id.
func (m idMap) host(id uint32) uint32 { return m.base + id }

// shift returns the mapping of m as one range.
func (m idMap) shift() []syscall.SysProcIDMap {
	return []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(m.base), Size: int(m.size)}}
}

// swap returns the mapping of m with IDs 0 and id exchanged: through a mount
// ID-mapped with it, files that host root owns belong to container ID id,
// and what id creates is stored as host root.
func (m idMap) swap(id uint32) []syscall.SysProcIDMap {
	if id == 0 {
		return m.shift()
	}
	b, i, n := int(m.base), int(id), int(m.size)
	out := []syscall.SysProcIDMap{{ContainerID: 0, HostID: b + i, Size: 1}}
	if i > 1 {
		out = append(out, syscall.SysProcIDMap{ContainerID: 1, HostID: b + 1, Size: i - 1})
	}
	out = append(out, syscall.SysProcIDMap{ContainerID: i, HostID: b, Size: 1})
	if i < n-1 {
		out = append(out, syscall.SysProcIDMap{ContainerID: i + 1, HostID: b + i + 1, Size: n - i - 1})
	}
	return out
}

// newUserns returns a user namespace with the given mappings, for ID-mapped
// mounts.
func newUserns(uids, gids []syscall.SysProcIDMap) (*os.File, error) {
	// The child stops at its execve (PTRACE_TRACEME), so it runs nothing;
	// its namespace stays alive as long as the returned file is open.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{"airlock-oci-userns"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: uids,
		GidMappings: gids,
		Ptrace:      true,
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("creating a user namespace: %w", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("opening the user namespace: %w", err)
	}
	return f, nil
}

// idmapMount mounts src, ID-mapped with userns, on the existing directory dst.
// With readOnly the new mount is read-only.
func idmapMount(src, dst string, userns *os.File, readOnly bool) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cloning mount %s: %w", src, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Userns_fd: uint64(userns.Fd())}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("ID-mapping mount %s: %w", src, err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", src, dst, err)
	}
	runtime.KeepAlive(userns)
	return nil
}

// unmountAll unmounts everything mounted under dir, and fails if anything is
// left, so that a later removal cannot reach through a mount.
func unmountAll(dir string) error {
	mps, err := hostfs.MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		// MNT_DETACH: a process of a container being torn down may still
		// hold the mount busy; it goes when they do. The tree is detached
		// at once, so a later removal of dir cannot reach into it.
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	if left, err := hostfs.MountsUnder(dir); err != nil || len(left) > 0 {
		errs = append(errs, fmt.Errorf("mounts left under %s: %q %v", dir, left, err))
	}
	return errors.Join(errs...)
}

// minDisk is the smallest workspace disk: ext4's metadata takes a few
// hundred kilobytes.
const minDisk = 4 << 20

// mountDisk creates a sparse file img of size bytes, makes an ext4
// filesystem in it and loop-mounts it on dir, leaving its root directory
// empty, owned by root and mode 0755.
func mountDisk(ctx context.Context, img, dir string, size int64) error {
	if size < minDisk {
		return fmt.Errorf("a workspace disk limit of %d bytes is below the minimum of %d", size, minDisk)
	}
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating workspace disk: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sizing workspace disk: %w", err)
	}
	// No journal (the workspace is scratch), no reserved blocks, lazy
	// inode tables: formatting stays in the tens of milliseconds.
	mkfs := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
		"-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", img)
	if out, err := mkfs.CombinedOutput(); err != nil {
		return fmt.Errorf("formatting workspace disk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	mnt := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", img, dir)
	if out, err := mnt.CombinedOutput(); err != nil {
		return fmt.Errorf("mounting workspace disk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Remove(filepath.Join(dir, "lost+found")); err != nil {
		return fmt.Errorf("preparing workspace disk: %w", err)
	}
	return os.Chmod(dir, 0o755)
}

// chownFd makes the pipe or file f owned by the host IDs uid and gid, so
// that a step reopening it by path (/dev/stdout, /proc/self/fd/1) may.
func chownFd(f *os.File, uid, gid uint32) error {
	if err := f.Chown(int(uid), int(gid)); err != nil {
		return fmt.Errorf("handing the output pipe to uid %s: %w", strconv.FormatUint(uint64(uid), 10), err)
	}
	return nil
}
