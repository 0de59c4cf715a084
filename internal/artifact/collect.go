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
	"syscall"
	"time"
)

// Sentinel errors; callers test with errors.Is.
var (
	// ErrTooLarge: the files exceed the size limit given to Collect or
	// Extract. The error names the limit.
	ErrTooLarge = errors.New("artifacts over the size limit")
	// ErrUnsafe: a path or tar entry that would leave the directory, or a
	// kind of file that is never written (devices, hard links, pipes).
	ErrUnsafe = errors.New("unsafe entry")
)

// Manifest describes what Collect packed or Extract unpacked.
type Manifest struct {
	Files []Entry `json:"files"`
	// Size is the total size of the regular files, uncompressed.
	Size int64 `json:"size"`
	// Skipped lists what the patterns selected but Collect left out.
	Skipped []Skipped `json:"skipped,omitempty"`
	// Unmatched lists the patterns that selected nothing.
	Unmatched []string `json:"unmatched,omitempty"`
}

// Entry is one file or symbolic link.
type Entry struct {
	Path    string      `json:"path"` // slash-separated, relative
	Size    int64       `json:"size"`
	SHA256  string      `json:"sha256,omitempty"` // lowercase hex; regular files only
	Mode    fs.FileMode `json:"mode"`             // permission bits, plus fs.ModeSymlink for a link
	ModTime time.Time   `json:"modTime"`
	Link    string      `json:"link,omitempty"` // a link's target
}

// Skipped is a selected path left out of the artifacts, and why.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Collect writes the files of workspace that globs select to w as a
// gzip-compressed tar stream, in path order, and describes them. It fails
// with ErrTooLarge once the regular files' total size would pass limit (0
// means no limit). On an error, what was written to w is incomplete and must
// be discarded. See the package comment for patterns and for what is
// collected.
func Collect(ctx context.Context, workspace string, globs []string, w io.Writer, limit int64) (Manifest, error) {
	pats, err := compile(globs)
	if err != nil {
		return Manifest{}, fmt.Errorf("collecting artifacts: %w", err)
	}
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return Manifest{}, fmt.Errorf("collecting artifacts: %w", err)
	}
	defer root.Close()

	c := &collector{root: root, limit: limit, matched: make([]bool, len(pats))}
	gz := gzip.NewWriter(w)
	c.tw = tar.NewWriter(gz)
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		segs := strings.Split(p, "/")
		if d.IsDir() {
			for _, pat := range pats {
				if pat.mayReachInto(segs) {
					return nil
				}
			}
			return fs.SkipDir
		}
		selected := false
		for i, pat := range pats {
			if pat.selects(segs) {
				selected, c.matched[i] = true, true
			}
		}
		if !selected {
			return nil
		}
		return c.add(p, d)
	})
	if err == nil {
		err = c.tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("collecting artifacts: %w", err)
	}
	for i, ok := range c.matched {
		if !ok {
			c.m.Unmatched = append(c.m.Unmatched, pats[i].text)
		}
	}
	return c.m, nil
}

type collector struct {
	root    *os.Root
	tw      *tar.Writer
	limit   int64
	m       Manifest
	matched []bool // per pattern
}

// add writes one selected, non-directory entry.
func (c *collector) add(p string, d fs.DirEntry) error {
	switch t := d.Type(); {
	case t.IsRegular():
		return c.addFile(p)
	case t&fs.ModeSymlink != 0:
		return c.addLink(p)
	default:
		c.skip(p, fmt.Sprintf("not a regular file (%v)", t))
		return nil
	}
}

func (c *collector) skip(p, reason string) {
	c.m.Skipped = append(c.m.Skipped, Skipped{Path: p, Reason: reason})
}

func (c *collector) addFile(p string) error {
	// O_NONBLOCK: should the file have become a pipe since it was listed,
	// opening it must not wait for a writer.
	f, err := c.root.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		c.skip(p, fmt.Sprintf("not a regular file (%v)", fi.Mode().Type()))
		return nil
	}
	size := fi.Size()
	if c.limit > 0 && c.m.Size+size > c.limit {
		return fmt.Errorf("%s: %w of %d bytes (%d bytes with this file)", p, ErrTooLarge, c.limit, c.m.Size+size)
	}
	e := Entry{Path: p, Size: size, Mode: fi.Mode().Perm(), ModTime: fi.ModTime()}
	if err := c.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     p,
		Size:     size,
		Mode:     int64(e.Mode),
		ModTime:  e.ModTime,
		Format:   tar.FormatPAX,
	}); err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.CopyN(c.tw, io.TeeReader(f, h), size); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: shrank while being collected", p)
		}
		return fmt.Errorf("%s: %w", p, err)
	}
	e.SHA256 = hex.EncodeToString(h.Sum(nil))
	c.m.Files = append(c.m.Files, e)
	c.m.Size += size
	return nil
}

func (c *collector) addLink(p string) error {
	target, err := c.root.Readlink(p)
	if err != nil {
		return err
	}
	if msg := checkLink(p, target); msg != "" {
		c.skip(p, "symbolic link "+msg)
		return nil
	}
	fi, err := c.root.Lstat(p)
	if err != nil {
		return err
	}
	if err := c.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeSymlink,
		Name:     p,
		Linkname: target,
		Mode:     0o777,
		ModTime:  fi.ModTime(),
		Format:   tar.FormatPAX,
	}); err != nil {
		return err
	}
	c.m.Files = append(c.m.Files, Entry{Path: p, Mode: fs.ModeSymlink | 0o777, ModTime: fi.ModTime(), Link: target})
	return nil
}

// checkLink says what makes a link at p to target unfit, or "" if nothing:
// its target must be relative and, read from the link's directory, stay
// inside the tree.
func checkLink(p, target string) string {
	switch resolved := path.Join(path.Dir(p), target); {
	case target == "":
		return "has an empty target"
	case strings.IndexByte(target, 0) >= 0:
		return "target contains a NUL byte"
	case path.IsAbs(target):
		return fmt.Sprintf("to the absolute path %q", target)
	case resolved == ".." || strings.HasPrefix(resolved, "../"):
		return fmt.Sprintf("to %q leads outside", target)
	}
	return ""
}
