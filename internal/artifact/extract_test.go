package artifact_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/artifact"
)

// entry is one tar entry of a hand-made stream.
type entry struct {
	name, content, link string
	typ                 byte
}

func file(name, content string) entry { return entry{name: name, content: content, typ: tar.TypeReg} }
func link(name, target string) entry  { return entry{name: name, link: target, typ: tar.TypeSymlink} }

// stream makes a gzip-compressed tar stream of entries.
func stream(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: e.typ, Name: e.name, Linkname: e.link, Mode: 0o644, Size: int64(len(e.content)), ModTime: time.Unix(1e9, 0)}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestExtractRefusesHostileStreams extracts each stream into parent/dir and
// checks that it fails as it should and that nothing lands outside dir.
func TestExtractRefusesHostileStreams(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		entries []entry
		want    error // nil: any error
	}{
		{"parent path", []entry{file("../evil", "x")}, artifact.ErrUnsafe},
		{"parent path inside a path", []entry{file("a/../../evil", "x")}, artifact.ErrUnsafe},
		{"dot slash parent path", []entry{file("./../evil", "x")}, artifact.ErrUnsafe},
		{"absolute path", []entry{file("/tmp/evil", "x")}, artifact.ErrUnsafe},
		{"empty name", []entry{file("", "x")}, artifact.ErrUnsafe},
		{"absolute link", []entry{link("l", "/etc")}, artifact.ErrUnsafe},
		{"link to the parent", []entry{link("l", "..")}, artifact.ErrUnsafe},
		{"link out from a subdirectory", []entry{link("a/b/l", "../../../x")}, artifact.ErrUnsafe},
		{"link then a file through it", []entry{link("l", "../.."), file("l/evil", "x")}, artifact.ErrUnsafe},
		// Each link stays inside on its own; together they lead out, which
		// os.Root refuses when the file is written.
		{"links that escape together", []entry{link("a", "."), link("a/b", ".."), file("b/evil", "x")}, nil},
		{"hard link", []entry{{name: "h", link: "/etc/passwd", typ: tar.TypeLink}}, artifact.ErrUnsafe},
		{"character device", []entry{{name: "null", typ: tar.TypeChar}}, artifact.ErrUnsafe},
		{"block device", []entry{{name: "sda", typ: tar.TypeBlock}}, artifact.ErrUnsafe},
		{"named pipe", []entry{{name: "p", typ: tar.TypeFifo}}, artifact.ErrUnsafe},
		{"a file twice", []entry{file("a", "1"), file("a", "2")}, artifact.ErrUnsafe},
		{"a link over a file", []entry{file("a", "1"), link("a", "b")}, artifact.ErrUnsafe},
		{"over the limit", []entry{file("a", strings.Repeat("a", 600)), file("b", strings.Repeat("b", 600))}, artifact.ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			dir := filepath.Join(parent, "dir")
			_, err := artifact.Extract(t.Context(), bytes.NewReader(stream(t, c.entries...)), dir, 1000)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Errorf("Extract error = %v, want %v", err, c.want)
			}
			var outside []string
			filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
				if p != parent && p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
					outside = append(outside, p)
				}
				return err
			})
			if len(outside) != 0 {
				t.Errorf("Extract wrote outside its directory: %q", outside)
			}
		})
	}
}

func TestExtractRefusesCorruptStreams(t *testing.T) {
	t.Parallel()
	good := stream(t, file("a", strings.Repeat("content ", 1000)))
	flipped := bytes.Clone(good)
	flipped[len(flipped)-6] ^= 0xff // inside the gzip trailer's checksum
	for name, s := range map[string][]byte{
		"not gzip":   []byte("plain text, not a stream"),
		"truncated":  good[:len(good)/2],
		"bad crc":    flipped,
		"gzip noise": gzipOf(t, "not a tar stream at all, but long enough to look like a header block? no."),
	} {
		if _, err := artifact.Extract(t.Context(), bytes.NewReader(s), t.TempDir(), 0); err == nil {
			t.Errorf("Extract(%s) succeeded, want an error", name)
		}
	}
}

func gzipOf(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write([]byte(strings.Repeat(s, 20)))
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractTarsOfOtherTools(t *testing.T) {
	t.Parallel()
	// GNU tar writes "./" prefixes and directory entries; both are fine.
	s := stream(t,
		entry{name: "./", typ: tar.TypeDir},
		entry{name: "empty/", typ: tar.TypeDir},
		file("./a/b.txt", "b"),
		link("a/l", "b.txt"),
	)
	dir := t.TempDir()
	m, err := artifact.Extract(t.Context(), bytes.NewReader(s), dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a/b.txt", "a/l"}, paths(m)); diff != "" {
		t.Errorf("extracted (-want +got):\n%s", diff)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a/l")); err != nil || string(b) != "b" {
		t.Errorf("reading through the extracted link = %q, %v; want %q", b, err, "b")
	}
	if fi, err := os.Stat(filepath.Join(dir, "empty")); err != nil || !fi.IsDir() {
		t.Errorf("empty directory entry: %v, %v", fi, err)
	}
	if _, err := artifact.Extract(t.Context(), bytes.NewReader(nil), t.TempDir(), 0); err == nil {
		t.Errorf("Extract of an empty input succeeded, want an error")
	}
}
