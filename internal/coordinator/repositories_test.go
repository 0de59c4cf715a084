package coordinator

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

func TestRepositoriesAreRegisteredListedAndRemoved(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.Secrets["GIT_TOKEN"] = "ghp_the-token-value" })
	ctx := context.Background()
	remote := job.Remote{Name: "acme/api", URL: "https://git.example.com/acme/api.git",
		Credential: &job.Credential{Kind: job.CredentialToken, Secret: "GIT_TOKEN"}}
	got, err := e.client.PutRepository(ctx, remote)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "acme/api" || got.Credential == nil || got.Credential.Secret != "GIT_TOKEN" || got.CreatedAt.IsZero() {
		t.Errorf("PutRepository = %+v", got)
	}
	if _, err := e.client.PutRepository(ctx, job.Remote{Name: "acme/web", URL: "https://git.example.com/acme/web.git"}); err != nil {
		t.Fatal(err)
	}
	list, err := e.client.Repositories(ctx)
	if err != nil || len(list.Repositories) != 2 || list.Repositories[0].Name != "acme/api" {
		t.Fatalf("Repositories = %+v, %v", list, err)
	}
	one, err := e.client.Repository(ctx, "acme/api")
	if err != nil || one.URL != remote.URL {
		t.Fatalf("Repository = %+v, %v", one, err)
	}
	// The credential's value is never returned.
	status, body := e.rawText(http.MethodGet, api.Prefix+"/repositories", clientToken, "")
	if status != http.StatusOK || strings.Contains(body, "ghp_the-token-value") || !strings.Contains(body, `"secret":"GIT_TOKEN"`) {
		t.Errorf("GET /repositories: %d %s", status, body)
	}

	// A job may name a registered repository, and only that.
	spec := testSpec("default")
	spec.Repository = &job.Repository{Name: "acme/api", Commit: strings.Repeat("a", 40)}
	e.submit(spec)
	spec.Repository.Name = "acme/nosuch"
	_, err = e.client.Submit(ctx, spec)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Err.Field != "repository.name" || !strings.Contains(se.Err.Message, `"acme/nosuch" is not registered`) {
		t.Errorf("submitting a job naming an unregistered repository: %v", err)
	}

	if err := e.client.DeleteRepository(ctx, "acme/api"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Repository(ctx, "acme/api"); !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("Repository after removal: %v, want 404", err)
	}
	if err := e.client.DeleteRepository(ctx, "acme/api"); !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("second removal: %v, want 404", err)
	}
}

func TestRepositoryRegistrationsAreValidated(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, tc := range []struct {
		name   string
		remote job.Remote
		field  string
	}{
		{"credentials in the URL", job.Remote{Name: "a", URL: "https://u:p@h/a"}, "url"},
		{"a local path", job.Remote{Name: "a", URL: "file:///etc"}, "url"},
		{"an unknown secret", job.Remote{Name: "a", URL: "https://h/a", Credential: &job.Credential{Kind: "token", Secret: "NOPE"}}, "credential.secret"},
		{"a bad name", job.Remote{Name: "a/../b", URL: "https://h/a"}, "name"},
	} {
		_, err := e.client.PutRepository(context.Background(), tc.remote)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusUnprocessableEntity || se.Err.Field != tc.field {
			t.Errorf("%s: %v, want 422 naming %s", tc.name, err, tc.field)
		}
	}
	// The name in the body must match the path.
	status, body := e.rawText(http.MethodPut, api.Prefix+"/repositories/acme/api", clientToken, `{"name":"acme/web","url":"https://h/a"}`)
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, "differs from the name in the path") {
		t.Errorf("mismatched name: %d %s", status, body)
	}
	// Executors may not touch registrations.
	if status, _ := e.rawText(http.MethodGet, api.Prefix+"/repositories", executorToken, ""); status != http.StatusForbidden && status != http.StatusUnauthorized {
		t.Errorf("an executor token listed repositories: %d", status)
	}
}

// rawText sends a request with a JSON body (if any) and returns the status
// and the body as text.
func (e *env) rawText(method, path, token, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
