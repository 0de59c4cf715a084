package blobtest

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/blobstore"
)

var putCases = []testCase{
	{"a put blob reads back with its info", func(t *testing.T, h *harness) {
		content := "hello, artifact\n"
		want := infoOf("jobs/1/out.txt", content)
		want.Created = start
		got := h.put("jobs/1/out.txt", content)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Put returned (-want +got):\n%s", diff)
		}
		gotContent, gotInfo := h.get("jobs/1/out.txt")
		if gotContent != content {
			t.Errorf("Get content = %q, want %q", gotContent, content)
		}
		if diff := cmp.Diff(want, gotInfo); diff != "" {
			t.Errorf("Get returned (-want +got):\n%s", diff)
		}
		stat, err := h.store.Stat(h.ctx, "jobs/1/out.txt")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, stat); diff != "" {
			t.Errorf("Stat returned (-want +got):\n%s", diff)
		}
	}},
	{"an empty blob is a blob", func(t *testing.T, h *harness) {
		h.put("empty", "")
		h.wantContent("empty", "")
	}},
	{"a large blob streams through whole", func(t *testing.T, h *harness) {
		// 4 MiB of every byte value, handed over in odd-sized reads.
		var b strings.Builder
		for i := range 4 << 20 {
			b.WriteByte(byte(i * 7))
		}
		content := b.String()
		info, err := h.store.Put(h.ctx, "big", &chunkReader{r: strings.NewReader(content), n: 4093}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := infoOf("big", content); info.Size != want.Size || info.SHA256 != want.SHA256 {
			t.Errorf("Put Info = size %d sha256 %s, want size %d sha256 %s", info.Size, info.SHA256, want.Size, want.SHA256)
		}
		h.wantContent("big", content)
	}},
	{"a put replaces the blob and its info", func(t *testing.T, h *harness) {
		h.put("k", "first version, the longer one")
		h.clock.Advance(time.Hour)
		got := h.put("k", "second")
		want := infoOf("k", "second")
		want.Created = start.Add(time.Hour)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Put returned (-want +got):\n%s", diff)
		}
		h.wantContent("k", "second")
	}},
	{"a missing blob is not found", func(t *testing.T, h *harness) {
		h.put("a/b", "x")
		for _, key := range []string{"nope", "a", "a/b/c", "a/bb", "b"} {
			h.wantAbsent(key)
		}
	}},
	{"created is the store's clock at the put", func(t *testing.T, h *harness) {
		h.clock.Advance(90 * time.Minute)
		if got, want := h.put("k", "x").Created, start.Add(90*time.Minute); !got.Equal(want) {
			t.Errorf("Created = %v, want %v", got, want)
		}
	}},
	{"a reader from get outlives an overwrite and a delete", func(t *testing.T, h *harness) {
		h.put("k", "old content")
		rc, _, err := h.store.Get(h.ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		h.put("k", "new content, different length")
		if err := h.store.Delete(h.ctx, "k"); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("reading the opened blob: %v", err)
		}
		if string(got) != "old content" {
			t.Errorf("opened blob reads %q, want %q", got, "old content")
		}
	}},
}

var limitCases = []testCase{
	{"a blob of exactly the limit is stored", func(t *testing.T, h *harness) {
		if _, err := h.store.Put(h.ctx, "k", strings.NewReader("12345"), 5); err != nil {
			t.Fatalf("Put(5 bytes, limit 5): %v", err)
		}
		h.wantContent("k", "12345")
	}},
	{"a blob over the limit is too large and not stored", func(t *testing.T, h *harness) {
		_, err := h.store.Put(h.ctx, "jobs/1/k", &chunkReader{r: strings.NewReader(strings.Repeat("x", 100_000)), n: 1000}, 4096)
		if !errors.Is(err, blobstore.ErrTooLarge) {
			t.Fatalf("Put(100000 bytes, limit 4096) error = %v, want ErrTooLarge", err)
		}
		for _, want := range []string{"4096", "jobs/1/k"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		}
		h.wantAbsent("jobs/1/k")
		if keys := h.keys("", 0); len(keys) != 0 {
			t.Errorf("List after a refused put = %q, want nothing", keys)
		}
	}},
	{"one byte over the limit is too large", func(t *testing.T, h *harness) {
		if _, err := h.store.Put(h.ctx, "k", strings.NewReader("123456"), 5); !errors.Is(err, blobstore.ErrTooLarge) {
			t.Errorf("Put(6 bytes, limit 5) error = %v, want ErrTooLarge", err)
		}
		h.wantAbsent("k")
	}},
	{"a blob over the limit leaves the previous blob", func(t *testing.T, h *harness) {
		h.put("k", "previous")
		if _, err := h.store.Put(h.ctx, "k", strings.NewReader("much too long"), 10); !errors.Is(err, blobstore.ErrTooLarge) {
			t.Fatalf("Put over the limit error = %v, want ErrTooLarge", err)
		}
		h.wantContent("k", "previous")
	}},
	{"limit 0 means no limit", func(t *testing.T, h *harness) {
		content := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
		if _, err := h.store.Put(h.ctx, "k", strings.NewReader(content), 0); err != nil {
			t.Fatal(err)
		}
		h.wantContent("k", content)
	}},
}

var keyCases = []testCase{
	{"valid keys round-trip", func(t *testing.T, h *harness) {
		keys := []string{
			"a", "jobs/42/artifacts/1.tar.gz", "a b/ü €.txt", "x/y.blob", "last.blob",
			".hidden/.x", "a..b/c...", "-/_/=/+/@/,", strings.Repeat("s", blobstore.MaxSegmentLen),
			strings.Repeat("d/", (blobstore.MaxKeyLen-1)/2) + "e",
		}
		for i, key := range keys {
			if err := blobstore.CheckKey(key); err != nil {
				t.Errorf("CheckKey(%q) = %v, want nil", key, err)
				continue
			}
			h.put(key, strconv.Itoa(i))
		}
		for i, key := range keys {
			h.wantContent(key, strconv.Itoa(i))
		}
		if got := h.keys("", 0); len(got) != len(keys) {
			t.Errorf("List found %d keys, want %d: %q", len(got), len(keys), got)
		}
	}},
	{"bad keys are refused by every method, naming the key", func(t *testing.T, h *harness) {
		h.put("a/b", "x")
		for _, key := range badKeys {
			for name, call := range map[string]func() error{
				"Put": func() error { _, err := h.store.Put(h.ctx, key, strings.NewReader("x"), 0); return err },
				"Get": func() error {
					rc, _, err := h.store.Get(h.ctx, key)
					if err == nil {
						rc.Close()
					}
					return err
				},
				"Stat":   func() error { _, err := h.store.Stat(h.ctx, key); return err },
				"Delete": func() error { return h.store.Delete(h.ctx, key) },
			} {
				err := call()
				if !errors.Is(err, blobstore.ErrInvalidKey) {
					t.Errorf("%s(%q) error = %v, want ErrInvalidKey", name, key, err)
					continue
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", key)) {
					t.Errorf("%s(%q) error %q does not name the key", name, key, err)
				}
			}
		}
		h.wantContent("a/b", "x")
	}},
	{"bad prefixes are refused", func(t *testing.T, h *harness) {
		h.put("a/b", "x")
		for _, prefix := range []string{"/a", "../", "a/../", "a//", "a\x00", "x.blob/", "x.blob/y"} {
			if _, err := h.store.List(h.ctx, blobstore.ListParams{Prefix: prefix}); !errors.Is(err, blobstore.ErrInvalidKey) {
				t.Errorf("List(%q) error = %v, want ErrInvalidKey", prefix, err)
			}
			if _, err := h.store.DeletePrefix(h.ctx, prefix); !errors.Is(err, blobstore.ErrInvalidKey) {
				t.Errorf("DeletePrefix(%q) error = %v, want ErrInvalidKey", prefix, err)
			}
		}
		h.wantContent("a/b", "x")
	}},
}

// badKeys are keys CheckKey refuses.
var badKeys = []string{
	"", "/a", "/", "a/", "a//b", "..", "../a", "a/..", "a/../b", ".", "./a", "a/./b",
	"a\x00b", "a\nb", "a\tb", "a\x7fb", `a\b`, "\xff", "x.blob/y",
	strings.Repeat("a", blobstore.MaxSegmentLen+1),
	strings.Repeat("d/", blobstore.MaxKeyLen/2) + "e",
}

// chunkReader hands out at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}
