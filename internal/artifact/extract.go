package artifact

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Extract unpacks a gzip-compressed tar stream, as Collect writes it, into dir
// (created if missing) and describes what it wrote. It is strict, because the
// stream may be hostile: an entry whose path is absolute, not clean or leads
// outside dir, a symbolic link whose target does so, a hard link, a device, a
// pipe, or an entry for a path that already exists fails with ErrUnsafe;
// regular files over limit bytes in total (0 means no limit) fail with
// ErrTooLarge. Files get the entry's permission bits (without setuid, setgid
// and sticky) and modification time. On an error dir may hold part of the
// stream; the caller removes it.
func Extract(ctx context.Context, r io.Reader, dir string, limit int64) (Manifest, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("extracting artifacts: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Manifest{}, fmt.Errorf("extracting artifacts: %w", err)
	}
	defer root.Close()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Manifest{}, fmt.Errorf("extracting artifacts: %w", err)
	}
	var m Manifest
	tr := tar.NewReader(gz)
	for {
		if err := ctx.Err(); err != nil {
			return Manifest{}, fmt.Errorf("extracting artifacts: %w", err)
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Manifest{}, fmt.Errorf("extracting artifacts: %w", err)
		}
		if err := extractEntry(ctx, root, tr, hdr, &m, limit); err != nil {
			return Manifest{}, fmt.Errorf("extracting artifacts: %q: %w", hdr.Name, err)
		}
	}
	// Read to the end so that gzip checks its checksum.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return Manifest{}, fmt.Errorf("extracting artifacts: %w", err)
	}
	return m, nil
}

func extractEntry(ctx context.Context, root *os.Root, tr *tar.Reader, hdr *tar.Header, m *Manifest, limit int64) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name := strings.TrimPrefix(hdr.Name, "./")
	if hdr.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
		if name == "" || name == "." {
			return nil
		}
	}
	if msg := checkPath(name); msg != "" {
		return fmt.Errorf("%w: path %s", ErrUnsafe, msg)
	}
	mode := fs.FileMode(hdr.Mode).Perm()
	switch hdr.Typeflag {
	case tar.TypeDir:
		return root.MkdirAll(name, 0o755)
	case tar.TypeReg:
		if limit > 0 && m.Size+hdr.Size > limit {
			return fmt.Errorf("%w of %d bytes (%d bytes with this file)", ErrTooLarge, limit, m.Size+hdr.Size)
		}
		if err := mkdirParent(root, name); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: the path exists already", ErrUnsafe)
		}
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(io.MultiWriter(f, h), ctxReader{ctx, tr})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := root.Chmod(name, mode); err != nil {
			return err
		}
		if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
			return err
		}
		m.Files = append(m.Files, Entry{Path: name, Size: hdr.Size, SHA256: hex.EncodeToString(h.Sum(nil)), Mode: mode, ModTime: hdr.ModTime})
		m.Size += hdr.Size
		return nil
	case tar.TypeSymlink:
		if msg := checkLink(name, hdr.Linkname); msg != "" {
			return fmt.Errorf("%w: symbolic link %s", ErrUnsafe, msg)
		}
		if err := mkdirParent(root, name); err != nil {
			return err
		}
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: the path exists already", ErrUnsafe)
			}
			return err
		}
		m.Files = append(m.Files, Entry{Path: name, Mode: fs.ModeSymlink | 0o777, ModTime: hdr.ModTime, Link: hdr.Linkname})
		return nil
	case tar.TypeLink:
		return fmt.Errorf("%w: hard link", ErrUnsafe)
	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("%w: device", ErrUnsafe)
	case tar.TypeFifo:
		return fmt.Errorf("%w: named pipe", ErrUnsafe)
	default:
		return fmt.Errorf("%w: entry of type %q", ErrUnsafe, hdr.Typeflag)
	}
}

func mkdirParent(root *os.Root, name string) error {
	if dir := path.Dir(name); dir != "." {
		return root.MkdirAll(dir, 0o755)
	}
	return nil
}
