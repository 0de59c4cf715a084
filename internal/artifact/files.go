package artifact

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// File is one job file to write into a workspace.
type File struct {
	Path    string      // slash-separated, relative to the workspace, clean
	Mode    fs.FileMode // permission bits (others are ignored); 0 means 0644
	ModTime time.Time   // zero leaves the time of writing
	Content io.Reader   // nil for an empty file
}

// WriteFiles writes files into dir, in order, making parent directories
// (mode 0755) as needed. A path that is absolute, not clean or leads outside
// dir fails with ErrUnsafe; one that would leave dir through a symbolic link
// already there (a checked-out repository may hold any) fails too. A file
// replaces what is at its path, a link included (the link, not its target);
// a directory there is an error. Cancelling ctx stops between reads of a
// file's Content.
func WriteFiles(ctx context.Context, dir string, files []File) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("writing job files: %w", err)
	}
	defer root.Close()
	for _, f := range files {
		if err := writeFile(ctx, root, f); err != nil {
			return fmt.Errorf("writing job file %q: %w", f.Path, err)
		}
	}
	return nil
}

func writeFile(ctx context.Context, root *os.Root, f File) error {
	if msg := checkPath(f.Path); msg != "" {
		return fmt.Errorf("%w: path %s", ErrUnsafe, msg)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := mkdirParent(root, f.Path); err != nil {
		return err
	}
	// Remove what is there so that a link is replaced, not written through.
	switch fi, err := root.Lstat(f.Path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case fi.IsDir():
		return errors.New("a directory is in the way")
	default:
		if err := root.Remove(f.Path); err != nil {
			return err
		}
	}
	mode := f.Mode.Perm()
	if f.Mode == 0 {
		mode = 0o644
	}
	out, err := root.OpenFile(f.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if f.Content != nil {
		_, err = io.Copy(out, ctxReader{ctx, f.Content})
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := root.Chmod(f.Path, mode); err != nil {
		return err
	}
	if !f.ModTime.IsZero() {
		if err := root.Chtimes(f.Path, f.ModTime, f.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
