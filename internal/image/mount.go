package image

// A job's root file system is an overlayfs: the image's cached layer
// directories are its read-only lower layers, and a directory of the job's
// own is the upper layer that takes every write. Overlayfs never writes to
// a lower layer, so the cache cannot be changed through the mount.
//
// The layers are passed with the new mount API (fsopen/fsconfig/fsmount,
// with "lowerdir+" per layer, Linux 6.8), which has no limit on the number
// of layers beyond overlayfs's own; on older kernels Mount falls back to
// mount(2), whose options must fit in one page (a few dozen layers).
// Mount options: index=off and metacopy=off because lower layers are shared
// by many mounts and the per-job upper layer is thrown away;
// redirect_dir=nofollow so no lower layer can redirect a lookup elsewhere
// (the unpacker also drops overlay xattrs from images); volatile because a
// job's writes need not survive a host crash (the janitor removes them), and
// without it every unmount syncs the upper file system: measured here,
// unmounting after an 8 MB write took ≈ 27 ms without volatile, ≈ 3 ms with.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Layer is a job's copy-on-write root file system.
type Layer struct {
	Dir    string // the directory holding the layer; Unmount removes it
	Rootfs string // the overlay mount: the job's root file system
	Upper  string // where the job's writes land
}

// Mount makes a copy-on-write root file system for img in dir, which must
// not exist yet (its parent is created if needed): dir/rootfs is the mount,
// dir/upper and dir/work belong to overlayfs. It needs root (or
// CAP_SYS_ADMIN) and overlayfs; when mounting fails, the error says why
// and nothing is left behind. Keep img leased until the Layer is unmounted.
// Name dir after the job attempt so a janitor can find it (see Unmount).
func Mount(ctx context.Context, img *Image, dir string) (*Layer, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	l := &Layer{
		Dir:    dir,
		Rootfs: filepath.Join(dir, "rootfs"),
		Upper:  filepath.Join(dir, "upper"),
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, fmt.Errorf("mounting image %s: %w", img.Digest, err)
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, fmt.Errorf("mounting image %s: %w", img.Digest, err)
	}
	err := func() error {
		// The upper directory's root is the root of the file system.
		for _, d := range []struct {
			path string
			mode os.FileMode
		}{{l.Upper, 0o755}, {work, 0o700}, {l.Rootfs, 0o755}} {
			if err := os.Mkdir(d.path, d.mode); err != nil {
				return err
			}
			if err := os.Chmod(d.path, d.mode); err != nil {
				return err
			}
		}
		return mountOverlay(lowerDirs(img.Layers), l.Upper, work, l.Rootfs)
	}()
	if err != nil {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, fmt.Errorf("mounting image %s: %w", img.Digest, err)
	}
	return l, nil
}

// Unmount unmounts the layer and removes its directory with the job's
// writes.
func (l *Layer) Unmount() error { return Unmount(l.Dir) }

// Unmount unmounts dir/rootfs if it is mounted and removes dir; dir is a
// directory Mount made, possibly by an earlier process (a janitor removes
// leftovers with it). A mount still in use is detached lazily. dir is not
// removed when unmounting fails, so nothing is deleted through a live mount.
func Unmount(dir string) error {
	rootfs := filepath.Join(dir, "rootfs")
	for range 8 { // mounts may be stacked
		err := unix.Unmount(rootfs, 0)
		if err == unix.EBUSY {
			err = unix.Unmount(rootfs, unix.MNT_DETACH)
		}
		if err == unix.EINVAL || err == unix.ENOENT {
			break // not (or no longer) a mount point
		}
		if err != nil {
			return fmt.Errorf("unmounting %s: %w", rootfs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing layer %s: %w", dir, err)
	}
	return nil
}

// lowerDirs orders layers (bottom first) as overlayfs wants them, top
// first, keeping only the topmost copy of a layer listed twice: the upper
// copy hides everything the lower one holds.
func lowerDirs(layers []string) []string {
	seen := make(map[string]bool, len(layers))
	var out []string
	for i := len(layers) - 1; i >= 0; i-- {
		if !seen[layers[i]] {
			seen[layers[i]] = true
			out = append(out, layers[i])
		}
	}
	return out
}

// errNoLowerdirPlus: the kernel predates "lowerdir+" (Linux 6.8).
var errNoLowerdirPlus = errors.New("overlayfs has no lowerdir+ option")

// forceLegacyMount makes mountOverlay use mount(2); for tests.
var forceLegacyMount bool

func mountOverlay(lowers []string, upper, work, target string) error {
	if !forceLegacyMount {
		err := mountOverlayFsconfig(lowers, upper, work, target)
		if !errors.Is(err, errNoLowerdirPlus) && !errors.Is(err, unix.ENOSYS) {
			return err
		}
	}
	return mountOverlayLegacy(lowers, upper, work, target)
}

func overlayOptions() [][2]string {
	opts := [][2]string{{"index", "off"}, {"metacopy", "off"}, {"redirect_dir", "nofollow"}}
	if os.Geteuid() != 0 {
		opts = append(opts, [2]string{"userxattr", ""})
	}
	return opts
}

func mountOverlayFsconfig(lowers []string, upper, work, target string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	fail := func(what string, err error) error {
		return fmt.Errorf("overlay %s: %w%s", what, err, fsLog(fd))
	}
	for i, l := range lowers {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			if i == 0 && err == unix.EINVAL {
				return errNoLowerdirPlus
			}
			return fail("lower layer "+l, err)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return fail("upperdir", err)
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return fail("workdir", err)
	}
	for _, o := range overlayOptions() {
		if o[1] == "" {
			err = unix.FsconfigSetFlag(fd, o[0])
		} else {
			err = unix.FsconfigSetString(fd, o[0], o[1])
		}
		if err != nil {
			return fail("option "+o[0], err)
		}
	}
	if err := unix.FsconfigSetFlag(fd, "volatile"); err != nil {
		return fail("option volatile", err)
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail("create", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching overlay at %s: %w", target, err)
	}
	return nil
}

// fsLog returns what the kernel said about a failed fsconfig, if anything.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 16 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, string(bytes.TrimSpace(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (kernel: " + strings.Join(msgs, "; ") + ")"
}

func mountOverlayLegacy(lowers []string, upper, work, target string) error {
	for _, p := range append([]string{upper, work}, lowers...) {
		if strings.ContainsAny(p, ",:") {
			return fmt.Errorf("overlay path %q contains ',' or ':', which mount(2) options cannot carry", p)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	for _, o := range overlayOptions() {
		opts += "," + o[0]
		if o[1] != "" {
			opts += "=" + o[1]
		}
	}
	if len(opts)+len(",volatile") >= os.Getpagesize() {
		return fmt.Errorf("overlay of %d layers: mount options are %d bytes, over the %d-byte limit of mount(2) (Linux 6.8 lifts it)",
			len(lowers), len(opts), os.Getpagesize()-1)
	}
	err := unix.Mount("overlay", target, "overlay", 0, opts+",volatile")
	if err == unix.EINVAL { // before Linux 5.10
		err = unix.Mount("overlay", target, "overlay", 0, opts)
	}
	if err != nil {
		return fmt.Errorf("mount overlay at %s: %w", target, err)
	}
	return nil
}
