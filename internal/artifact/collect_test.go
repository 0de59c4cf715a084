package artifact_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/artifact"
)

// tree is a workspace to build: path → content, or "->target" for a link.
type tree map[string]string

func (tr tree) build(t *testing.T, dir string) {
	t.Helper()
	for p, content := range tr {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// collect runs Collect and returns the stream too.
func collect(t *testing.T, workspace string, globs []string, limit int64) (artifact.Manifest, []byte) {
	t.Helper()
	var buf bytes.Buffer
	m, err := artifact.Collect(t.Context(), workspace, globs, &buf, limit)
	if err != nil {
		t.Fatalf("Collect(%q): %v", globs, err)
	}
	return m, buf.Bytes()
}

func paths(m artifact.Manifest) []string {
	var ps []string
	for _, f := range m.Files {
		ps = append(ps, f.Path)
	}
	return ps
}

// tarEntries lists the names in a gzip-compressed tar stream.
func tarEntries(t *testing.T, stream []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
	}
}

var workspace = tree{
	"out/index.scip":   "index",
	"out/sub/a.scip":   "a",
	"out/b.txt":        "b",
	"src/main.go":      "package main",
	"src/pkg/x.go":     "package pkg",
	"src/pkg/deep/y.c": "int y;",
	"README.md":        "# readme",
	".hidden/x":        "hidden",
	"diff.patch":       "--- a\n+++ b\n",
}

func TestCollectPatterns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	workspace.build(t, dir)
	all := []string{".hidden/x", "README.md", "diff.patch", "out/b.txt", "out/index.scip", "out/sub/a.scip", "src/main.go", "src/pkg/deep/y.c", "src/pkg/x.go"}
	for _, c := range []struct {
		name      string
		globs     []string
		want      []string
		unmatched []string
	}{
		{"a file", []string{"diff.patch"}, []string{"diff.patch"}, nil},
		{"star in a segment", []string{"out/*.scip"}, []string{"out/index.scip"}, nil},
		{"star does not cross a slash", []string{"*.go"}, nil, []string{"*.go"}},
		{"double star at any depth", []string{"**/*.scip"}, []string{"out/index.scip", "out/sub/a.scip"}, nil},
		{"double star matches no segment too", []string{"src/**/*.go"}, []string{"src/main.go", "src/pkg/x.go"}, nil},
		{"double star in the middle", []string{"src/**/y.c"}, []string{"src/pkg/deep/y.c"}, nil},
		{"a directory selects what is below", []string{"out"}, []string{"out/b.txt", "out/index.scip", "out/sub/a.scip"}, nil},
		{"dir/** is the directory", []string{"out/**"}, []string{"out/b.txt", "out/index.scip", "out/sub/a.scip"}, nil},
		{"a class and a question mark", []string{"[a-e]iff.pa?ch", "src/pkg/[^x]*"}, []string{"diff.patch", "src/pkg/deep/y.c"}, nil},
		{"star selects every top-level entry", []string{"*"}, all, nil},
		{"double star alone is everything", []string{"**"}, all, nil},
		{"overlapping patterns list a file once", []string{"out", "out/*.scip", "**/index.scip"}, []string{"out/b.txt", "out/index.scip", "out/sub/a.scip"}, nil},
		{"patterns that match nothing are reported", []string{"README.md", "missing/*", "out/none"}, []string{"README.md"}, []string{"missing/*", "out/none"}},
		{"no patterns, no files", nil, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m, stream := collect(t, dir, c.globs, 0)
			if diff := cmp.Diff(c.want, paths(m), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("collected (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.want, tarEntries(t, stream), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("tar entries (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.unmatched, m.Unmatched, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Unmatched (-want +got):\n%s", diff)
			}
			var size int64
			for _, f := range m.Files {
				size += int64(len(workspace[f.Path]))
			}
			if m.Size != size {
				t.Errorf("Size = %d, want %d", m.Size, size)
			}
		})
	}
}

func TestCollectRefusesBadPatterns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, g := range []string{"", "/etc/passwd", "../x", "a/../../x", "./a", "a//b", "out/[", "."} {
		if _, err := artifact.Collect(t.Context(), dir, []string{g}, io.Discard, 0); err == nil {
			t.Errorf("Collect(%q) succeeded, want an error", g)
		}
	}
}

func TestCollectSymlinks(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	outside := filepath.Join(parent, "outside")
	tree{"secret.txt": "TOP SECRET"}.build(t, outside)
	dir := filepath.Join(parent, "ws")
	tree{
		"src/main.go":  "package main",
		"out/inside":   "->../src/main.go",
		"out/linkdir":  "->../src",
		"out/dangling": "->nothing-here",
		"out/up":       "->../../outside/secret.txt",
		"out/abs":      "->" + filepath.Join(outside, "secret.txt"),
		"out/root":     "->/",
		"escape":       "->../outside",
		"out/real.txt": "real",
	}.build(t, dir)

	m, stream := collect(t, dir, []string{"out", "escape/**", "**/secret.txt"}, 0)
	want := []artifact.Entry{
		{Path: "out/dangling", Link: "nothing-here"},
		{Path: "out/inside", Link: "../src/main.go"},
		{Path: "out/linkdir", Link: "../src"},
		{Path: "out/real.txt", Size: 4},
	}
	if diff := cmp.Diff(want, m.Files, cmpopts.IgnoreFields(artifact.Entry{}, "Mode", "ModTime", "SHA256")); diff != "" {
		t.Errorf("collected (-want +got):\n%s", diff)
	}
	var skipped []string
	for _, s := range m.Skipped {
		skipped = append(skipped, s.Path)
	}
	if diff := cmp.Diff([]string{"escape", "out/abs", "out/root", "out/up"}, skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"**/secret.txt"}, m.Unmatched); diff != "" {
		t.Errorf("unmatched (-want +got):\n%s", diff)
	}
	raw := gunzip(t, stream)
	if bytes.Contains(raw, []byte("TOP SECRET")) || bytes.Contains(raw, []byte("package main")) {
		t.Errorf("the stream holds the content of a link's target")
	}

	// The kept links come back as links.
	out := t.TempDir()
	if _, err := artifact.Extract(t.Context(), bytes.NewReader(stream), out, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(out, "out/linkdir")); err != nil || got != "../src" {
		t.Errorf("extracted out/linkdir = %q, %v; want a link to ../src", got, err)
	}
}

func gunzip(t *testing.T, stream []byte) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestCollectSkipsSpecialFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tree{"out/a.txt": "a"}.build(t, dir)
	// A pipe nobody writes to: opening it for reading would block.
	if err := syscall.Mkfifo(filepath.Join(dir, "out/pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, _ := collect(t, dir, []string{"out"}, 0)
	if diff := cmp.Diff([]string{"out/a.txt"}, paths(m)); diff != "" {
		t.Errorf("collected (-want +got):\n%s", diff)
	}
	if len(m.Skipped) != 1 || m.Skipped[0].Path != "out/pipe" {
		t.Errorf("Skipped = %v, want out/pipe", m.Skipped)
	}
}

func TestCollectSizeLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tree{"out/a": strings.Repeat("a", 600), "out/b": strings.Repeat("b", 400), "out/c": ""}.build(t, dir)
	if m, _ := collect(t, dir, []string{"out"}, 1000); m.Size != 1000 {
		t.Errorf("Collect at exactly the limit: Size = %d, want 1000", m.Size)
	}
	_, err := artifact.Collect(t.Context(), dir, []string{"out"}, io.Discard, 999)
	if !errors.Is(err, artifact.ErrTooLarge) {
		t.Fatalf("Collect over the limit error = %v, want ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "999") {
		t.Errorf("error %q does not name the limit", err)
	}
	// Compression does not count: the limit is on the files' own size.
	tree{"big/zeros": strings.Repeat("\x00", 1<<20)}.build(t, dir)
	if _, err := artifact.Collect(t.Context(), dir, []string{"big"}, io.Discard, 1<<20-1); !errors.Is(err, artifact.ErrTooLarge) {
		t.Errorf("Collect of 1 MiB of zeros with a limit 1 byte under error = %v, want ErrTooLarge", err)
	}
}

func TestCollectStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	workspace.build(t, dir)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := artifact.Collect(ctx, dir, []string{"**"}, io.Discard, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Collect with a cancelled context error = %v, want context.Canceled", err)
	}
}

func TestModesAndTimesRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := []struct {
		path  string
		mode  fs.FileMode
		mtime time.Time
	}{
		{"bin/tool", 0o755, time.Date(2021, 5, 6, 7, 8, 9, 123456789, time.UTC)},
		{"secret", 0o600, time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)},
		{"group", 0o640, time.Date(2030, 1, 2, 3, 4, 5, 500_000_000, time.UTC)},
		{"readonly", 0o444, time.Date(2010, 1, 1, 0, 0, 0, 1, time.UTC)},
		{"setuid", 0o4755 | fs.ModeSetuid, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, f := range files {
		full := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(f.path), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, f.mtime, f.mtime); err != nil {
			t.Fatal(err)
		}
	}
	m, stream := collect(t, dir, []string{"**"}, 0)
	out := t.TempDir()
	got, err := artifact.Extract(t.Context(), bytes.NewReader(stream), out, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m.Files, got.Files); diff != "" {
		t.Errorf("Extract's manifest differs from Collect's (-collect +extract):\n%s", diff)
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(out, f.path))
		if err != nil {
			t.Fatal(err)
		}
		if want := f.mode.Perm(); fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", f.path, fi.Mode(), want)
		}
		if !fi.ModTime().Equal(f.mtime) {
			t.Errorf("%s: mtime %v, want %v", f.path, fi.ModTime(), f.mtime)
		}
		b, err := os.ReadFile(filepath.Join(out, f.path))
		if err != nil || string(b) != f.path {
			t.Errorf("%s: content %q, %v; want %q", f.path, b, err, f.path)
		}
	}
	if i := slices.IndexFunc(m.Files, func(e artifact.Entry) bool { return e.Path == "setuid" }); i < 0 || m.Files[i].Mode != 0o755 {
		t.Errorf("manifest entry of a setuid file = %v, want mode 0755", m.Files)
	}
}
