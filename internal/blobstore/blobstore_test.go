package blobstore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/blobstore"
)

func TestCheckKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		key  string
		want string // "" for valid, else a part of the message
	}{
		{"jobs/42/artifacts/1.tar.gz", ""},
		{"a b/ü.txt", ""},
		{"x/y.blob", ""},
		{"", "is empty"},
		{"/etc/passwd", "must not begin with a slash"},
		{"a/../b", `".." segment`},
		{"a/./b", `"." segment`},
		{"a//b", "empty segment"},
		{"a/", "empty segment"},
		{"a\x00b", "NUL"},
		{"a\rb", "control character U+000D"},
		{`a\b`, "backslash"},
		{"\xffa", "UTF-8"},
		{"x.blob/y", `ending in ".blob"`},
		{strings.Repeat("a", 201), "segment of 201 bytes"},
		{strings.Repeat("a/", 600), "1200 bytes, the limit is 1024"},
	} {
		err := blobstore.CheckKey(c.key)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("CheckKey(%q) = %v, want nil", c.key, err)
		case c.want != "" && !errors.Is(err, blobstore.ErrInvalidKey):
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey", c.key, err)
		case c.want != "" && !strings.Contains(err.Error(), c.want):
			t.Errorf("CheckKey(%q) = %q, want it to say %q", c.key, err, c.want)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "jobs/", "jobs/4", "jobs/4/", "a.blob"} {
		if err := blobstore.CheckPrefix(p); err != nil {
			t.Errorf("CheckPrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"/", "/jobs", "../", "jobs//", "a.blob/", "a\x00"} {
		if err := blobstore.CheckPrefix(p); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("CheckPrefix(%q) = %v, want ErrInvalidKey", p, err)
		}
	}
}
