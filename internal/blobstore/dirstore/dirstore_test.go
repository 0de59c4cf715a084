package dirstore_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/blobstore"
	"github.com/airlock-run/airlock/internal/blobstore/blobtest"
	"github.com/airlock-run/airlock/internal/blobstore/dirstore"
)

func TestStore(t *testing.T) {
	t.Parallel()
	blobtest.Exercise(t, func(t *testing.T, clock *blobtest.Clock) blobstore.Store {
		return open(t, t.TempDir(), clock.Now)
	})
}

func open(t *testing.T, dir string, now func() time.Time) *dirstore.Store {
	t.Helper()
	s, err := dirstore.Open(dir, dirstore.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s blobstore.Store, key, content string) {
	t.Helper()
	if _, err := s.Put(t.Context(), key, strings.NewReader(content), 0); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// files lists the files and links under dir, relative to it, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			got = append(got, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func TestLayout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, nil)
	put(t, s, "jobs/42/a.tar.gz", "x")
	put(t, s, "jobs/42", "y")
	want := []string{"blobs/jobs/42.blob", "blobs/jobs/42/a.tar.gz.blob"}
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Errorf("files in the store (-want +got):\n%s", diff)
	}
	if err := s.Delete(t.Context(), "jobs/42/a.tar.gz"); err != nil {
		t.Fatal(err)
	}
	// The emptied directory goes with its last blob.
	if _, err := os.Stat(filepath.Join(dir, "blobs/jobs/42")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blobs/jobs/42 after deleting its only blob: %v, want it gone", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "blobs/jobs/42.blob"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("blob file mode = %v, want 0600", got)
	}
}

func TestFailedPutLeavesNoTemporaryFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, nil)
	ctx, cancel := context.WithCancel(t.Context())
	r := &cancelAfter{n: 100_000, cancel: cancel}
	if _, err := s.Put(ctx, "k", r, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put error = %v, want context.Canceled", err)
	}
	if _, err := s.Put(t.Context(), "k", strings.NewReader(strings.Repeat("x", 100)), 10); !errors.Is(err, blobstore.ErrTooLarge) {
		t.Fatalf("Put error = %v, want ErrTooLarge", err)
	}
	if got := files(t, dir); len(got) != 0 {
		t.Errorf("files after failed puts = %q, want none", got)
	}
}

// cancelAfter yields n bytes and then cancels the Put's context while
// still offering more, as when the client of an upload goes away.
type cancelAfter struct {
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	n := min(len(p), 4096)
	c.n -= n
	clear(p[:n])
	return n, nil
}

func TestOpenRemovesStaleTemporaryFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, nil)
	put(t, s, "k", "kept")
	s.Close()

	stale := filepath.Join(dir, "tmp", "crashed")
	fresh := filepath.Join(dir, "tmp", "in-progress")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, nil)
	want := []string{"blobs/k.blob", "tmp/in-progress"}
	if diff := cmp.Diff(want, files(t, dir)); diff != "" {
		t.Errorf("files after Open (-want +got):\n%s", diff)
	}
	rc, _, err := s.Get(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
}

func TestCorruptBlobIsAnError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := open(t, dir, nil)
	put(t, s, "k", "the original content")
	p := filepath.Join(dir, "blobs/k.blob")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Get(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("reading a damaged blob: error = %v, want corrupt", err)
	}

	// A truncated file and a file that is no blob at all are errors too.
	if err := os.WriteFile(p, b[:70], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(t.Context(), "k"); err == nil || errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat of a truncated blob error = %v, want corrupt", err)
	}
	if err := os.WriteFile(p, []byte("not a blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(t.Context(), "k"); err == nil || errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat of a foreign file error = %v, want an error", err)
	}
}

// TestSymlinksCannotLeadOutside plants links in the store's directory, as
// someone with write access to it might, and checks that no operation reads,
// writes or deletes outside the store through them.
func TestSymlinksCannotLeadOutside(t *testing.T) {
	t.Parallel()
	dir, outside := t.TempDir(), t.TempDir()
	s := open(t, dir, nil)
	ctx := t.Context()

	// A file outside that looks like a blob, and one to protect.
	victim := filepath.Join(outside, "victim.blob")
	if err := os.WriteFile(victim, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, outside, filepath.Join(dir, "blobs", "jobs"))         // a directory link
	mustSymlink(t, victim, filepath.Join(dir, "blobs", "file.blob"))     // a blob file link
	mustSymlink(t, "../../..", filepath.Join(dir, "blobs", "up"))        // a relative link
	mustSymlink(t, outside, filepath.Join(dir, "tmp", "planted"))        // in tmp
	mustSymlink(t, "../tmp", filepath.Join(dir, "blobs", "inside.blob")) // inside, but no blob

	if _, err := s.Put(ctx, "jobs/victim", strings.NewReader("overwritten"), 0); err == nil {
		t.Errorf("Put through a link to outside succeeded")
	}
	if _, err := s.Put(ctx, "up/x", strings.NewReader("escaped"), 0); err == nil {
		t.Errorf("Put through a relative link to outside succeeded")
	}
	for _, key := range []string{"jobs/victim", "file", "up/victim", "inside"} {
		if rc, _, err := s.Get(ctx, key); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("Get(%q) through a link = %q, want an error", key, b)
		}
	}
	for _, key := range []string{"jobs/victim", "file"} {
		s.Delete(ctx, key)
	}
	page, err := s.List(ctx, blobstore.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Blobs) != 0 {
		t.Errorf("List = %v, want nothing (links are not blobs)", page.Blobs)
	}
	s.DeletePrefix(ctx, "jobs/")
	if _, err := s.DeletePrefix(ctx, ""); err != nil {
		t.Errorf("DeletePrefix(\"\") = %v", err)
	}

	if b, err := os.ReadFile(victim); err != nil || string(b) != "secret" {
		t.Errorf("the file outside = %q, %v; want it untouched", b, err)
	}
	if diff := cmp.Diff([]string{"victim.blob"}, files(t, outside)); diff != "" {
		t.Errorf("files outside the store (-want +got):\n%s", diff)
	}

	// The store still works for keys the links do not shadow.
	put(t, s, "ok/k", "fine")
	if _, err := s.Stat(ctx, "ok/k"); err != nil {
		t.Errorf("Stat(ok/k): %v", err)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
