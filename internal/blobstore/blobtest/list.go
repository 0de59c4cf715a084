package blobtest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/airlock-run/airlock/internal/blobstore"
)

var listCases = []testCase{
	{"an empty store lists nothing", func(t *testing.T, h *harness) {
		page, err := h.store.List(h.ctx, blobstore.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(blobstore.ListPage{}, page, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("List returned (-want +got):\n%s", diff)
		}
	}},
	{"keys list in ascending byte order", func(t *testing.T, h *harness) {
		keys := []string{"b", "a/b/c", "a", "a-c", "A", "a/b", "a.b", "a/b-", "a/a/z/z", "ü", "a0"}
		for _, k := range keys {
			h.put(k, k)
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		if diff := cmp.Diff(want, h.keys("", 0)); diff != "" {
			t.Errorf("List (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, h.keys("", 1)); diff != "" {
			t.Errorf("List one at a time (-want +got):\n%s", diff)
		}
	}},
	{"the prefix is a plain string prefix", func(t *testing.T, h *harness) {
		for _, k := range []string{"jobs/4/a", "jobs/4/b/c", "jobs/42/a", "jobs/5/a", "jobs/4", "jobsx", "other/jobs/4/a"} {
			h.put(k, k)
		}
		for _, c := range []struct {
			prefix string
			want   []string
		}{
			{"jobs/4/", []string{"jobs/4/a", "jobs/4/b/c"}},
			{"jobs/4", []string{"jobs/4", "jobs/4/a", "jobs/4/b/c", "jobs/42/a"}},
			{"jobs/4/b", []string{"jobs/4/b/c"}},
			{"jobs/", []string{"jobs/4", "jobs/4/a", "jobs/4/b/c", "jobs/42/a", "jobs/5/a"}},
			{"jobs", []string{"jobs/4", "jobs/4/a", "jobs/4/b/c", "jobs/42/a", "jobs/5/a", "jobsx"}},
			{"jobs/6/", nil},
			{"nothing", nil},
		} {
			if diff := cmp.Diff(c.want, h.keys(c.prefix, 2), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("List(%q) (-want +got):\n%s", c.prefix, diff)
			}
		}
	}},
	{"pages cover every key once, in order", func(t *testing.T, h *harness) {
		var want []string
		for i := range 23 {
			k := fmt.Sprintf("p/%d/%02d", i%3, i)
			h.put(k, k)
			want = append(want, k)
		}
		slices.Sort(want)
		for _, size := range []int{1, 5, 7, 22, 23, 24, 0} {
			if diff := cmp.Diff(want, h.keys("p/", size)); diff != "" {
				t.Errorf("List in pages of %d (-want +got):\n%s", size, diff)
			}
		}
	}},
	{"after need not be a key", func(t *testing.T, h *harness) {
		for _, k := range []string{"a/1", "a/3", "b/1", "c"} {
			h.put(k, k)
		}
		for _, c := range []struct {
			after string
			want  []string
		}{
			{"a/2", []string{"a/3", "b/1", "c"}},
			{"a/", []string{"a/1", "a/3", "b/1", "c"}},
			{"a/3", []string{"b/1", "c"}},
			{"b", []string{"b/1", "c"}},
			{"b/1", []string{"c"}},
			{"c", nil},
			{"z", nil},
		} {
			page, err := h.store.List(h.ctx, blobstore.ListParams{After: c.after})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range page.Blobs {
				got = append(got, b.Key)
			}
			if diff := cmp.Diff(c.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("List(after %q) (-want +got):\n%s", c.after, diff)
			}
		}
	}},
	{"listed infos are the blobs' infos", func(t *testing.T, h *harness) {
		a := h.put("a", "one")
		h.clock.Advance(time.Minute)
		b := h.put("b/c", "two two")
		page, err := h.store.List(h.ctx, blobstore.ListParams{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]blobstore.Info{a, b}, page.Blobs); diff != "" {
			t.Errorf("List (-want +got):\n%s", diff)
		}
		if page.Next != "" {
			t.Errorf("Next of the only page = %q, want empty", page.Next)
		}
	}},
	{"All iterates over every page", func(t *testing.T, h *harness) {
		var want []string
		for i := range 12 {
			k := fmt.Sprintf("k%02d", i)
			h.put(k, k)
			want = append(want, k)
		}
		var got []string
		for b, err := range blobstore.All(h.ctx, h.store, "k") {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b.Key)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("All (-want +got):\n%s", diff)
		}
	}},
}

var deleteCases = []testCase{
	{"a deleted blob is gone and its neighbours stay", func(t *testing.T, h *harness) {
		for _, k := range []string{"a", "a/b", "a/c", "a/b/d"} {
			h.put(k, k)
		}
		if err := h.store.Delete(h.ctx, "a/b"); err != nil {
			t.Fatal(err)
		}
		h.wantAbsent("a/b")
		for _, k := range []string{"a", "a/c", "a/b/d"} {
			h.wantContent(k, k)
		}
		if diff := cmp.Diff([]string{"a", "a/b/d", "a/c"}, h.keys("", 0)); diff != "" {
			t.Errorf("List after Delete (-want +got):\n%s", diff)
		}
	}},
	{"deleting a missing blob is not an error", func(t *testing.T, h *harness) {
		h.put("a/b", "x")
		for _, k := range []string{"missing", "a", "a/b/c", "a/b"} {
			if err := h.store.Delete(h.ctx, k); err != nil {
				t.Errorf("Delete(%q) = %v, want nil", k, err)
			}
		}
		if err := h.store.Delete(h.ctx, "a/b"); err != nil {
			t.Errorf("second Delete(a/b) = %v, want nil", err)
		}
	}},
	{"a key can be put again after its delete", func(t *testing.T, h *harness) {
		h.put("jobs/1/a", "1")
		if err := h.store.Delete(h.ctx, "jobs/1/a"); err != nil {
			t.Fatal(err)
		}
		h.put("jobs/1/a", "2")
		h.wantContent("jobs/1/a", "2")
	}},
	{"delete prefix removes exactly the keys with the prefix", func(t *testing.T, h *harness) {
		for _, k := range []string{"jobs/4/a", "jobs/4/b/c", "jobs/42/a", "jobs/4", "jobs/5/a"} {
			h.put(k, k)
		}
		n, err := h.store.DeletePrefix(h.ctx, "jobs/4/")
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("DeletePrefix(jobs/4/) = %d, want 2", n)
		}
		if diff := cmp.Diff([]string{"jobs/4", "jobs/42/a", "jobs/5/a"}, h.keys("", 0)); diff != "" {
			t.Errorf("List after DeletePrefix (-want +got):\n%s", diff)
		}
		if n, err := h.store.DeletePrefix(h.ctx, "jobs/4/"); err != nil || n != 0 {
			t.Errorf("second DeletePrefix(jobs/4/) = %d, %v; want 0, nil", n, err)
		}
		h.put("jobs/4/a", "again")
		h.wantContent("jobs/4/a", "again")
	}},
	{"delete prefix is a plain string prefix", func(t *testing.T, h *harness) {
		for _, k := range []string{"jobs/4/a", "jobs/42/a", "jobs/4", "jobs/5/a"} {
			h.put(k, k)
		}
		n, err := h.store.DeletePrefix(h.ctx, "jobs/4")
		if err != nil {
			t.Fatal(err)
		}
		if n != 3 {
			t.Errorf("DeletePrefix(jobs/4) = %d, want 3", n)
		}
		if diff := cmp.Diff([]string{"jobs/5/a"}, h.keys("", 0)); diff != "" {
			t.Errorf("List after DeletePrefix (-want +got):\n%s", diff)
		}
	}},
	{"delete prefix of nothing empties the store", func(t *testing.T, h *harness) {
		for _, k := range []string{"a", "b/c", "d/e/f"} {
			h.put(k, k)
		}
		if n, err := h.store.DeletePrefix(h.ctx, ""); err != nil || n != 3 {
			t.Errorf("DeletePrefix(\"\") = %d, %v; want 3, nil", n, err)
		}
		if keys := h.keys("", 0); len(keys) != 0 {
			t.Errorf("List after DeletePrefix(\"\") = %q, want nothing", keys)
		}
	}},
	{"sweep deletes the blobs created before the cut-off under the prefix", func(t *testing.T, h *harness) {
		h.put("jobs/1/old", "x")
		h.put("uploads/old", "x")
		h.clock.Advance(2 * time.Hour)
		h.put("uploads/new", "x")
		cutoff := start.Add(time.Hour)
		n, err := blobstore.Sweep(h.ctx, h.store, "uploads/", cutoff)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("Sweep = %d, want 1", n)
		}
		if diff := cmp.Diff([]string{"jobs/1/old", "uploads/new"}, h.keys("", 0)); diff != "" {
			t.Errorf("List after Sweep (-want +got):\n%s", diff)
		}
		// A blob created exactly at the cut-off stays.
		if n, err := blobstore.Sweep(h.ctx, h.store, "", start.Add(2*time.Hour)); err != nil || n != 1 {
			t.Errorf("Sweep(all, at the newest blob's time) = %d, %v; want 1, nil", n, err)
		}
		if diff := cmp.Diff([]string{"uploads/new"}, h.keys("", 0)); diff != "" {
			t.Errorf("List after the second Sweep (-want +got):\n%s", diff)
		}
	}},
	{"sweep with a bad prefix fails", func(t *testing.T, h *harness) {
		if _, err := blobstore.Sweep(h.ctx, h.store, "../", start); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Sweep(../) error = %v, want ErrInvalidKey", err)
		}
	}},
}
