package e2e

import (
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/api"
)

func TestTokensAreRequiredAndScoped(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	claim := `{"executor":{"name":"x"},"queues":["default"],"waitMs":1}`
	cases := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"no token on a client route", "GET", "/api/v1/jobs", "", "", 401},
		{"an unknown token on a client route", "GET", "/api/v1/jobs", "alc_not-a-real-token-0000000000", "", 401},
		{"an executor token on a client route", "GET", "/api/v1/jobs", executorToken, "", 403},
		{"a client token on an executor route", "POST", "/api/v1/executor/claim", clientToken, claim, 403},
		{"no token on an executor route", "POST", "/api/v1/executor/claim", "", claim, 401},
		{"a client token on an attempt route", "POST", "/api/v1/attempts/1/1/finish", clientToken, `{}`, 403},
		{"an unknown job token on an attempt route", "POST", "/api/v1/attempts/1/1/finish", "alj_unknown-0000000000000000", `{}`, 401},
		{"the client token where it belongs", "GET", "/api/v1/jobs", clientToken, "", 200},
	}
	for _, tc := range cases {
		status, body := c.rawRequest(tc.method, tc.path, tc.token, strings.NewReader(tc.body))
		if status != tc.want {
			t.Errorf("%s: status %d, want %d (%s)", tc.name, status, tc.want, body)
		}
		if status >= 400 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s: body is not a JSON error: %s", tc.name, body)
		}
	}
}

func TestOversizedAndMalformedRequestsAreRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	huge := `{"spec":{"version":1,"steps":[{"run":"` + strings.Repeat("x", 3<<20) + `"}]}}`
	cases := []struct {
		name, body string
		want       int
		mention    string
	}{
		{"a body over the request limit", huge, 413, ""},
		{"malformed JSON", `{"spec": {`, 400, ""},
		{"an unknown envelope field", `{"spec":{"version":1,"steps":[{"run":"true"}]},"extra":1}`, 400, "extra"},
		{"an unknown spec field", `{"spec":{"version":1,"steps":[{"run":"true","imagee":"x"}]}}`, 422, "steps[0].imagee"},
		{"a bad duration", `{"spec":{"version":1,"steps":[{"run":"true"},{"run":"true"},{"run":"true","timeout":"10x"}]}}`, 422, "steps[2].timeout"},
		{"no steps", `{"spec":{"version":1,"steps":[]}}`, 422, "steps"},
		{"an unknown secret", `{"spec":{"version":1,"steps":[{"run":"true"}],"secrets":["NOPE"]}}`, 422, "secrets[0]"},
	}
	for _, tc := range cases {
		status, body := c.rawRequest("POST", "/api/v1/jobs", clientToken, strings.NewReader(tc.body))
		if status != tc.want {
			t.Errorf("%s: status %d, want %d (%.300s)", tc.name, status, tc.want, body)
		}
		if tc.mention != "" && !strings.Contains(body, tc.mention) {
			t.Errorf("%s: error does not name %q: %.300s", tc.name, tc.mention, body)
		}
	}
	for _, q := range []string{"cursor=%21%21not-a-cursor", "state=bogus", "limit=abc"} {
		if status, body := c.rawRequest("GET", "/api/v1/jobs?"+q, clientToken, nil); status != 400 {
			t.Errorf("GET /api/v1/jobs?%s: status %d, want 400 (%s)", q, status, body)
		}
	}
	// Nothing refused was stored.
	list, err := c.client.List(t.Context(), apiListAll())
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != 0 {
		t.Errorf("%d refused jobs were stored", len(list.Jobs))
	}
	// A bad CLI spec file names the field too.
	_, stderr, code := c.cli("submit", "testdata/bad-duration.yaml")
	if code != 2 || !strings.Contains(stderr, "steps[1].timeout") {
		t.Errorf("submit of a bad spec: exit %d, stderr %q; want 2 naming steps[1].timeout", code, stderr)
	}
}

func apiListAll() api.ListOptions { return api.ListOptions{Limit: 100} }
