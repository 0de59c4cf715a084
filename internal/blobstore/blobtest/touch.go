package blobtest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/blobstore"
)

var touchCases = []testCase{
	{"touching a blob moves its creation time to now and nothing else", func(t *testing.T, h *harness) {
		before := h.put("uploads/a", "content")
		h.clock.Advance(time.Hour)
		got, err := h.store.Touch(h.ctx, "uploads/a")
		if err != nil {
			t.Fatal(err)
		}
		want := before
		want.Created = h.clock.Now()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Touch (-want +got):\n%s", diff)
		}
		if info, err := h.store.Stat(h.ctx, "uploads/a"); err != nil || !info.Created.Equal(want.Created) {
			t.Errorf("Stat after Touch = %+v, %v; want Created %v", info, err, want.Created)
		}
		h.wantContent("uploads/a", "content")
	}},
	{"touching a missing blob is ErrNotFound", func(t *testing.T, h *harness) {
		h.put("a/b", "x")
		for _, k := range []string{"missing", "a", "a/b/c"} {
			if _, err := h.store.Touch(h.ctx, k); !errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("Touch(%q) = %v, want ErrNotFound", k, err)
			}
		}
		if _, err := h.store.Touch(h.ctx, "../x"); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Touch(../x) = %v, want ErrInvalidKey", err)
		}
	}},
}
