package artifact_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/artifact"
)

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tree{"existing.txt": "old", "config/target.json": "target", "config/link.json": "->target.json"}.build(t, dir)
	mtime := time.Date(2024, 2, 29, 12, 0, 0, 250_000_000, time.UTC)
	files := []artifact.File{
		{Path: "config/input.json", Mode: 0o640, ModTime: mtime, Content: strings.NewReader(`{"a":1}`)},
		{Path: "bin/run.sh", Mode: 0o755, Content: strings.NewReader("#!/bin/sh\n")},
		{Path: "deep/er/empty"},
		{Path: "existing.txt", Content: strings.NewReader("new")},
		{Path: "config/link.json", Content: strings.NewReader("replaces the link")},
		{Path: "suid", Mode: 0o4755 | fs.ModeSetuid, Content: strings.NewReader("x")},
	}
	if err := artifact.WriteFiles(t.Context(), dir, files); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, content string
		mode          fs.FileMode
		mtime         time.Time
	}{
		{"config/input.json", `{"a":1}`, 0o640, mtime},
		{"bin/run.sh", "#!/bin/sh\n", 0o755, time.Time{}},
		{"deep/er/empty", "", 0o644, time.Time{}},
		{"existing.txt", "new", 0o644, time.Time{}},
		{"config/link.json", "replaces the link", 0o644, time.Time{}},
		{"config/target.json", "target", 0o644, time.Time{}},
		{"suid", "x", 0o755, time.Time{}},
	} {
		full := filepath.Join(dir, c.path)
		fi, err := os.Lstat(full)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if fi.Mode() != c.mode {
			t.Errorf("%s: mode %v, want %v", c.path, fi.Mode(), c.mode)
		}
		if !c.mtime.IsZero() && !fi.ModTime().Equal(c.mtime) {
			t.Errorf("%s: mtime %v, want %v", c.path, fi.ModTime(), c.mtime)
		}
		if b, err := os.ReadFile(full); err != nil || string(b) != c.content {
			t.Errorf("%s: content %q, %v; want %q", c.path, b, err, c.content)
		}
	}
}

func TestWriteFilesRefusesEscapes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		path string
		want error // nil: any error
	}{
		{"parent", "../evil", artifact.ErrUnsafe},
		{"parent inside", "a/../../evil", artifact.ErrUnsafe},
		{"absolute", "/tmp/evil", artifact.ErrUnsafe},
		{"empty", "", artifact.ErrUnsafe},
		{"the directory", ".", artifact.ErrUnsafe},
		{"not clean", "a//b", artifact.ErrUnsafe},
		{"NUL", "a\x00b", artifact.ErrUnsafe},
		{"through a directory link to outside", "repo/config/evil", nil},
		{"through a relative link to outside", "up/evil", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			outside := filepath.Join(parent, "outside")
			dir := filepath.Join(parent, "ws")
			tree{"victim": "safe"}.build(t, outside)
			tree{"repo/config": "->" + outside, "up": "->../outside"}.build(t, dir)
			err := artifact.WriteFiles(t.Context(), dir, []artifact.File{{Path: c.path, Content: strings.NewReader("evil")}})
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Errorf("WriteFiles(%q) error = %v, want %v", c.path, err, c.want)
			}
			ents, err := os.ReadDir(outside)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != 1 {
				t.Errorf("files outside after WriteFiles(%q): %v, want only victim", c.path, ents)
			}
			if b, err := os.ReadFile(filepath.Join(outside, "victim")); err != nil || string(b) != "safe" {
				t.Errorf("victim = %q, %v; want it untouched", b, err)
			}
			if _, err := os.Lstat(filepath.Join(parent, "evil")); err == nil {
				t.Errorf("WriteFiles(%q) wrote %s", c.path, filepath.Join(parent, "evil"))
			}
		})
	}
}

func TestWriteFilesReplacesALinkToOutside(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside")
	dir := filepath.Join(parent, "ws")
	tree{"victim": "safe"}.build(t, outside)
	tree{"repo/config": "->" + outside, "passwd": "->" + filepath.Join(outside, "victim")}.build(t, dir)
	err := artifact.WriteFiles(t.Context(), dir, []artifact.File{
		{Path: "repo/config", Content: strings.NewReader("file")},
		{Path: "passwd", Content: strings.NewReader("file")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"repo/config", "passwd"} {
		if fi, err := os.Lstat(filepath.Join(dir, p)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s after WriteFiles: %v, %v; want a regular file in place of the link", p, fi, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(outside, "victim")); err != nil || string(b) != "safe" {
		t.Errorf("victim = %q, %v; want it untouched", b, err)
	}
}

func TestWriteFilesDirectoryInTheWay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tree{"d/x": "x"}.build(t, dir)
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d", "empty"} {
		if err := artifact.WriteFiles(t.Context(), dir, []artifact.File{{Path: p}}); err == nil {
			t.Errorf("WriteFiles(%q) over a directory succeeded, want an error", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "d/x")); err != nil {
		t.Errorf("d/x after refused writes: %v", err)
	}
}

func TestWriteFilesStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	// The content cancels the context after its first read, as a download
	// cut short would.
	r := io.MultiReader(strings.NewReader("first part"), readFunc(func([]byte) (int, error) {
		cancel()
		return 0, nil
	}), strings.NewReader("never read"))
	err := artifact.WriteFiles(ctx, dir, []artifact.File{{Path: "f", Content: r}, {Path: "g"}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("WriteFiles error = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "g")); err == nil {
		t.Errorf("WriteFiles went on to the next file after cancellation")
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }
