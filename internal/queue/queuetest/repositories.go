package queuetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

var repositoryCases = []testCase{
	{"a registration is kept, listed by name, replaced and removed", func(t *testing.T, h *harness) {
		api := job.Remote{Name: "acme/api", URL: "https://git.example.com/acme/api.git",
			Credential: &job.Credential{Kind: job.CredentialToken, Secret: "GIT_TOKEN"}}
		web := job.Remote{Name: "acme/web", URL: "https://git.example.com/acme/web.git"}
		created := h.clock.Now()
		for _, r := range []job.Remote{web, api} {
			got, err := h.store.PutRepository(h.ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			want := &queue.Repository{Remote: r, CreatedAt: created, UpdatedAt: created}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("PutRepository(%s) (-want +got):\n%s", r.Name, diff)
			}
		}
		list, err := h.store.Repositories(h.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Name != "acme/api" || list[1].Name != "acme/web" {
			t.Errorf("Repositories = %+v, want acme/api then acme/web", list)
		}

		h.clock.Advance(time.Minute)
		moved := api
		moved.URL = "https://git2.example.com/acme/api.git"
		moved.Credential = nil
		got, err := h.store.PutRepository(h.ctx, moved)
		if err != nil {
			t.Fatal(err)
		}
		want := &queue.Repository{Remote: moved, CreatedAt: created, UpdatedAt: h.clock.Now()}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("replacing (-want +got):\n%s", diff)
		}
		if got, err := h.store.Repository(h.ctx, "acme/api"); err != nil || got.URL != moved.URL || got.Credential != nil {
			t.Errorf("Repository after replacing = %+v, %v", got, err)
		}

		if err := h.store.DeleteRepository(h.ctx, "acme/api"); err != nil {
			t.Fatal(err)
		}
		if _, err := h.store.Repository(h.ctx, "acme/api"); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Repository after removal: %v, want ErrNotFound", err)
		}
		if err := h.store.DeleteRepository(h.ctx, "acme/api"); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("second removal: %v, want ErrNotFound", err)
		}
		if list, _ := h.store.Repositories(h.ctx); len(list) != 1 || list[0].Name != "acme/web" {
			t.Errorf("Repositories after removal = %+v", list)
		}
	}},
}
