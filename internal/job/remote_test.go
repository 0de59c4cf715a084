package job

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidateRemote(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Remote
		want []FieldError
	}{
		{"public https", Remote{Name: "acme/api", URL: "https://git.example.com/acme/api.git"}, nil},
		{"token", Remote{Name: "acme/api", URL: "https://git.example.com/acme/api.git",
			Credential: &Credential{Kind: CredentialToken, Secret: "GIT_TOKEN"}}, nil},
		{"basic", Remote{Name: "a", URL: "http://git.example.com/a", Credential: &Credential{Kind: CredentialBasic, Username: "ci", Secret: "PW"}}, nil},
		{"ssh", Remote{Name: "a", URL: "ssh://git@git.example.com/a.git", Credential: &Credential{Kind: CredentialSSH, Secret: "DEPLOY_KEY"}}, nil},
		{"empty", Remote{}, []FieldError{{"name", "is required"}, {"url", "is required"}}},
		{"bad name and url", Remote{Name: "../etc", URL: "file:///etc"}, []FieldError{
			{"name", `"../etc" is not a valid repository name (path segments of letters, digits, '.', '_' and '-', such as "acme/api")`},
			{"url", `"file:///etc" is not a valid repository URL (use https://, http://, ssh:// or git://)`}}},
		{"credentials in the URL", Remote{Name: "a", URL: "https://ci:hunter2@git.example.com/a"}, []FieldError{
			{"url", "must not contain credentials; the coordinator holds them"}}},
		{"kind and scheme disagree", Remote{Name: "a", URL: "ssh://git@h/a", Credential: &Credential{Kind: CredentialToken, Secret: "T"}},
			[]FieldError{{"credential.kind", `"token" needs an http(s) URL, not ssh://`}}},
		{"ssh over https", Remote{Name: "a", URL: "https://h/a", Credential: &Credential{Kind: CredentialSSH, Secret: "K"}},
			[]FieldError{{"credential.kind", `"ssh" needs an ssh:// URL, not https://`}}},
		{"bad credential", Remote{Name: "a", URL: "https://h/a", Credential: &Credential{Kind: "oauth", Username: "a b", Secret: "1X"}},
			[]FieldError{{"credential.kind", `"oauth" is not a credential kind (token, basic or ssh)`},
				{"credential.username", `"a b" is not a valid username`},
				{"credential.secret", `"1X" is not a secret name ([A-Za-z_][A-Za-z0-9_]*)`}}},
		{"basic without a username or secret", Remote{Name: "a", URL: "https://h/a", Credential: &Credential{Kind: CredentialBasic}},
			[]FieldError{{"credential.username", "is required for basic credentials"},
				{"credential.secret", "is required: the name of the coordinator secret holding the credential"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateRemote(tc.r)
			var got []FieldError
			var ve *ValidationError
			if errors.As(err, &ve) {
				got = ve.Problems
			} else if err != nil {
				t.Fatalf("ValidateRemote: %v, want a *ValidationError", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
