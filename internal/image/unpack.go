package image

// Unpacking one layer tar into one directory, safely.
//
// A layer is hostile input: its entry names may be absolute or climb out
// with "..", a symlink entry may point anywhere and be followed by an entry
// that writes "through" it, and a hard link may name a file outside the
// tree. None of that may reach the host. So no path is ever handed to the
// kernel whole: every entry's parent directory is reached from the layer's
// root one component at a time with openat(O_DIRECTORY|O_NOFOLLOW), which
// fails on a symlink or a non-directory instead of following it, and the
// entry itself is created with the *at system calls relative to that parent
// (O_EXCL|O_NOFOLLOW for files, AT_SYMLINK_NOFOLLOW for metadata). Names are
// checked first: absolute paths and ".." components are refused outright.
// Symlink targets are stored as they are and never resolved here; they are
// interpreted inside the container.
//
// The directory is the layer's own (an overlayfs lower directory), so
// whiteouts are written the way overlayfs reads them rather than applied:
// `.wh.NAME` becomes a 0/0 character device, `.wh..wh..opq` the
// overlay.opaque xattr on its directory. An entry repeated later in the tar
// replaces the earlier one, as in `tar -x`. Directory times are set last,
// since creating entries inside a directory changes its mtime.

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnsafeLayer is returned for a layer that tries to write outside its
// directory: an absolute or ".." path, a path through a symlink, or a hard
// link to a file outside the layer.
var ErrUnsafeLayer = errors.New("unsafe layer")

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
)

// unpackOpts say what the unpacker may do.
type unpackOpts struct {
	// privileged: chown entries, create device nodes, set trusted.* and
	// security.capability xattrs. True when running as root.
	privileged bool
}

// unpackReport lists what was not reproduced exactly.
type unpackReport struct {
	Skipped []string // "path: reason"
}

func (r *unpackReport) skip(name, reason string) {
	r.Skipped = append(r.Skipped, name+": "+reason)
}

// dirMeta is applied to a directory after the whole layer is extracted: a
// read-only mode would stop entries below it (when not root), and each entry
// created inside changes its mtime.
type dirMeta struct {
	name         string
	mode         uint32
	atime, mtime time.Time
}

type extractor struct {
	rootFd int
	opts   unpackOpts
	report unpackReport

	// The most recently opened parent directory; entries of one directory
	// usually follow each other in a tar.
	cachedDir string
	cachedFd  int

	dirs []dirMeta
}

// unpack extracts the tar stream r into the existing directory dir.
func unpack(ctx context.Context, r io.Reader, dir string, opts unpackOpts) (unpackReport, error) {
	rootFd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return unpackReport{}, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	x := &extractor{rootFd: rootFd, opts: opts, cachedFd: -1}
	defer x.close()

	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return x.report, context.Cause(ctx)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return x.report, fmt.Errorf("reading tar: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return x.report, err
		}
	}
	// Directory modes and times last, deepest first, so that setting one
	// does not disturb another.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		if err := x.finishDir(x.dirs[i]); err != nil {
			return x.report, err
		}
	}
	return x.report, nil
}

func (x *extractor) close() {
	x.dropCache()
	unix.Close(x.rootFd)
}

func (x *extractor) dropCache() {
	if x.cachedFd >= 0 {
		unix.Close(x.cachedFd)
	}
	x.cachedDir, x.cachedFd = "", -1
}

// cleanName checks a tar path and returns it relative and clean ("." for the
// root).
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty path", ErrUnsafeLayer)
	}
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path %q", ErrUnsafeLayer, name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: path %q contains ..", ErrUnsafeLayer, name)
		}
	}
	return path.Clean(name), nil
}

// parent returns a descriptor for directory dir ("." for the root), walked to
// without following symlinks. With create, missing directories are created
// (mode 0755). The descriptor belongs to the extractor's cache: callers do
// not close it, and it stays valid until the next call.
func (x *extractor) parent(dir string, create bool) (int, error) {
	if dir == "." {
		return x.rootFd, nil
	}
	if dir == x.cachedDir {
		return x.cachedFd, nil
	}
	fd, err := x.walk(dir, create)
	if err != nil {
		return -1, err
	}
	x.dropCache()
	x.cachedDir, x.cachedFd = dir, fd
	return fd, nil
}

// walk opens dir component by component; the caller closes the result.
func (x *extractor) walk(dir string, create bool) (int, error) {
	fd := x.rootFd
	walked := ""
	for _, c := range strings.Split(dir, "/") {
		walked = path.Join(walked, c)
		next, err := openDir(fd, c)
		if err == unix.ENOENT && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || err == unix.EEXIST {
				next, err = openDir(fd, c)
			}
		}
		if fd != x.rootFd {
			unix.Close(fd)
		}
		switch {
		case err == unix.ELOOP || err == unix.ENOTDIR:
			return -1, fmt.Errorf("%w: %q is a symlink or not a directory, and a path may not pass through it", ErrUnsafeLayer, walked)
		case err != nil:
			return -1, &os.PathError{Op: "open", Path: walked, Err: err}
		}
		fd = next
	}
	return fd, nil
}

func openDir(dirFd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// lstat returns the entry's stat, or ok=false when it does not exist.
func lstatAt(dirFd int, name string) (st unix.Stat_t, ok bool, err error) {
	err = unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == unix.ENOENT {
		return st, false, nil
	}
	return st, err == nil, err
}

// clear removes whatever is at name so a new entry can take its place. A
// directory is kept when keepDir (a directory entry over a directory only
// updates its metadata).
func (x *extractor) clear(dirFd int, dir, name string, keepDir bool) error {
	st, ok, err := lstatAt(dirFd, name)
	if err != nil || !ok {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(dirFd, name, 0)
	}
	if keepDir {
		return nil
	}
	// A directory replaced by something else: remove its tree. The cached
	// parent may lie inside it.
	sub, err := openDir(dirFd, name)
	if err != nil {
		return err
	}
	err = removeContents(sub)
	unix.Close(sub)
	if err != nil {
		return fmt.Errorf("removing %s: %w", path.Join(dir, name), err)
	}
	x.dropCache()
	return unix.Unlinkat(dirFd, name, unix.AT_REMOVEDIR)
}

// removeContents empties the directory open as fd without following links.
func removeContents(fd int) error {
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(d), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		err := unix.Unlinkat(fd, n, 0)
		if err == unix.EISDIR || err == unix.EPERM {
			sub, oerr := openDir(fd, n)
			if oerr != nil {
				return oerr
			}
			err = removeContents(sub)
			unix.Close(sub)
			if err == nil {
				err = unix.Unlinkat(fd, n, unix.AT_REMOVEDIR)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(name)
	dir = path.Clean(dir)
	if name == "." {
		// The layer's root: overlayfs takes the root's attributes from
		// the upper directory, so there is nothing to apply.
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return x.whiteout(name, dir, base)
	}
	fail := func(err error) error { return fmt.Errorf("unpacking %q: %w", name, err) }

	switch hdr.Typeflag {
	case tar.TypeDir:
		dirFd, err := x.parent(dir, true)
		if err != nil {
			return fail(err)
		}
		if err := x.clear(dirFd, dir, base, true); err != nil {
			return fail(err)
		}
		if err := unix.Mkdirat(dirFd, base, 0o700); err != nil && err != unix.EEXIST {
			return fail(err)
		}
		fd, err := openDir(dirFd, base)
		if err != nil {
			return fail(err)
		}
		err = x.setAttrs(fd, name, hdr, false)
		unix.Close(fd)
		if err != nil {
			return fail(err)
		}
		x.dirs = append(x.dirs, dirMeta{name, uint32(hdr.Mode & 0o7777), hdr.AccessTime, hdr.ModTime})

	case tar.TypeReg, tar.TypeGNUSparse:
		dirFd, err := x.parent(dir, true)
		if err != nil {
			return fail(err)
		}
		if err := x.clear(dirFd, dir, base, false); err != nil {
			return fail(err)
		}
		fd, err := unix.Openat(dirFd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fail(err)
		}
		f := os.NewFile(uintptr(fd), name)
		_, err = io.Copy(f, r)
		if err == nil {
			err = x.setAttrs(fd, name, hdr, true)
		}
		if err == nil {
			err = unix.UtimesNanoAt(dirFd, base, timespecs(hdr.AccessTime, hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fail(err)
		}

	case tar.TypeSymlink:
		dirFd, err := x.parent(dir, true)
		if err != nil {
			return fail(err)
		}
		if err := x.clear(dirFd, dir, base, false); err != nil {
			return fail(err)
		}
		if err := unix.Symlinkat(hdr.Linkname, dirFd, base); err != nil {
			return fail(err)
		}
		if x.opts.privileged {
			if err := unix.Fchownat(dirFd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fail(err)
			}
		}
		if err := unix.UtimesNanoAt(dirFd, base, timespecs(hdr.AccessTime, hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail(err)
		}

	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil {
			return fail(fmt.Errorf("hard link: %w", err))
		}
		if target == name {
			return nil
		}
		tdir, tbase := path.Split(target)
		tdirFd, err := x.walkExisting(path.Clean(tdir))
		if errors.Is(err, unix.ENOENT) {
			return fail(fmt.Errorf("%w: hard link target %q is not in this layer", ErrUnsafeLayer, target))
		}
		if err != nil {
			return fail(fmt.Errorf("hard link target %q: %w", target, err))
		}
		defer func() {
			if tdirFd != x.rootFd {
				unix.Close(tdirFd)
			}
		}()
		st, ok, err := lstatAt(tdirFd, tbase)
		if err != nil {
			return fail(err)
		}
		if !ok {
			return fail(fmt.Errorf("%w: hard link target %q is not in this layer", ErrUnsafeLayer, target))
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fail(fmt.Errorf("%w: hard link to directory %q", ErrUnsafeLayer, target))
		}
		dirFd, err := x.parent(dir, true)
		if err != nil {
			return fail(err)
		}
		if err := x.clear(dirFd, dir, base, false); err != nil {
			return fail(err)
		}
		if err := unix.Linkat(tdirFd, tbase, dirFd, base, 0); err != nil {
			return fail(err)
		}

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if hdr.Typeflag != tar.TypeFifo && !x.opts.privileged {
			x.report.skip(name, "device node (not running as root)")
			return nil
		}
		dirFd, err := x.parent(dir, true)
		if err != nil {
			return fail(err)
		}
		if err := x.clear(dirFd, dir, base, false); err != nil {
			return fail(err)
		}
		mode := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode = unix.S_IFCHR
		case tar.TypeBlock:
			mode = unix.S_IFBLK
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknodat(dirFd, base, mode|0o600, dev); err != nil {
			return fail(err)
		}
		// The node is ours and not a symlink: opening it could block
		// (fifo) or touch a device, so set its attributes by name.
		if x.opts.privileged {
			if err := unix.Fchownat(dirFd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fail(err)
			}
		}
		if err := unix.Fchmodat(dirFd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
			return fail(err)
		}
		if err := unix.UtimesNanoAt(dirFd, base, timespecs(hdr.AccessTime, hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fail(err)
		}

	case tar.TypeXGlobalHeader:
		return nil

	default:
		x.report.skip(name, fmt.Sprintf("unsupported tar entry type %q", hdr.Typeflag))
	}
	return nil
}

// walkExisting opens an existing directory without creating anything; the
// caller closes the result unless it is the root descriptor.
func (x *extractor) walkExisting(dir string) (int, error) {
	if dir == "." {
		return x.rootFd, nil
	}
	return x.walk(dir, false)
}

// whiteout records a whiteout in overlayfs form.
func (x *extractor) whiteout(name, dir, base string) error {
	fail := func(err error) error { return fmt.Errorf("unpacking whiteout %q: %w", name, err) }
	if base == opaqueMarker {
		// dir itself becomes opaque: nothing below this layer shows through.
		if dir == "." {
			// An opaque root would hide every lower layer; overlayfs
			// ignores the xattr on a layer root, so say so.
			x.report.skip(name, "opaque marker on the layer root")
			return nil
		}
		parent, dbase := path.Split(dir)
		pFd, err := x.parent(path.Clean(parent), true)
		if err != nil {
			return fail(err)
		}
		if err := unix.Mkdirat(pFd, dbase, 0o755); err != nil && err != unix.EEXIST {
			return fail(err)
		}
		fd, err := openDir(pFd, dbase)
		if err != nil {
			return fail(fmt.Errorf("%w: %v", ErrUnsafeLayer, err))
		}
		defer unix.Close(fd)
		key := "user.overlay.opaque"
		if x.opts.privileged {
			key = "trusted.overlay.opaque"
		}
		if err := unix.Fsetxattr(fd, key, []byte("y"), 0); err != nil {
			return fail(err)
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		x.report.skip(name, "unsupported whiteout meta file")
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return fail(fmt.Errorf("%w: bad whiteout name", ErrUnsafeLayer))
	}
	dirFd, err := x.parent(dir, true)
	if err != nil {
		return fail(err)
	}
	// A whiteout hides lower layers only; an entry of this layer by the
	// same name wins (OCI image spec, "Whiteouts").
	if _, ok, err := lstatAt(dirFd, target); err != nil || ok {
		return err
	}
	if err := unix.Mknodat(dirFd, target, unix.S_IFCHR|0o000, 0); err != nil {
		return fail(err)
	}
	return nil
}

// setAttrs applies ownership, mode (with chmod) and xattrs to an open file
// or directory, in that order: chown clears setuid bits and file
// capabilities.
func (x *extractor) setAttrs(fd int, name string, hdr *tar.Header, chmod bool) error {
	if x.opts.privileged {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if chmod {
		if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
			return err
		}
	}
	for key, value := range xattrs(hdr) {
		switch {
		case strings.HasPrefix(key, "user.overlay."):
			x.report.skip(name, "xattr "+key+" (reserved for overlayfs)")
			continue
		case strings.HasPrefix(key, "user."):
		case key == "security.capability" && x.opts.privileged:
		default:
			x.report.skip(name, "xattr "+key)
			continue
		}
		if err := unix.Fsetxattr(fd, key, []byte(value), 0); err != nil {
			if err == unix.ENOTSUP {
				x.report.skip(name, "xattr "+key+" (not supported by the cache's file system)")
				continue
			}
			return fmt.Errorf("setting xattr %s: %w", key, err)
		}
	}
	return nil
}

const paxXattr = "SCHILY.xattr."

func xattrs(hdr *tar.Header) map[string]string {
	var m map[string]string
	for k, v := range hdr.PAXRecords {
		if key, ok := strings.CutPrefix(k, paxXattr); ok {
			if m == nil {
				m = make(map[string]string)
			}
			m[key] = v
		}
	}
	return m
}

func (x *extractor) finishDir(d dirMeta) error {
	dir, base := path.Split(d.name)
	dirFd, err := x.parent(path.Clean(dir), false)
	if err != nil {
		return nil // replaced or removed by a later entry
	}
	fd, err := openDir(dirFd, base)
	if err != nil {
		return nil // likewise
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, d.mode); err != nil {
		return fmt.Errorf("setting mode of %q: %w", d.name, err)
	}
	if err := unix.UtimesNanoAt(dirFd, base, timespecs(d.atime, d.mtime), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %q: %w", d.name, err)
	}
	return nil
}

func timespecs(atime, mtime time.Time) []unix.Timespec {
	if atime.IsZero() {
		atime = mtime
	}
	if mtime.IsZero() {
		return []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	}
	return []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
}
