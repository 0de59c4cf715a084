package job

import (
	"net/url"
	"strings"
)

// Remote is a repository registered on the coordinator: the name jobs give
// as repository.name, the URL the coordinator fetches it from, and how the
// coordinator authenticates. A credential's value is a coordinator secret,
// named here: it is never stored with the repository, never returned, and
// never leaves the coordinator.
type Remote struct {
	Name       string      `json:"name"`
	URL        string      `json:"url"`
	Credential *Credential `json:"credential,omitempty"`
}

// Credential says how the coordinator authenticates to a remote.
type Credential struct {
	// Kind is CredentialToken (an HTTPS access token, sent as the password
	// of Username, default "x-access-token"), CredentialBasic (an HTTPS
	// username and password) or CredentialSSH (an SSH private key).
	Kind     string `json:"kind"`
	Username string `json:"username,omitempty"`
	// Secret names the coordinator secret holding the token, password or
	// private key.
	Secret string `json:"secret"`
}

// Credential kinds.
const (
	CredentialToken = "token"
	CredentialBasic = "basic"
	CredentialSSH   = "ssh"
)

// ValidateRemote checks a repository registration and reports every
// problem by field, as Validate does for specs.
func ValidateRemote(r Remote) error {
	var p problems
	switch {
	case r.Name == "":
		p.add("name", "is required")
	case len(r.Name) > MaxRepoNameLen:
		p.addf("name", "%d characters, the limit is %d", len(r.Name), MaxRepoNameLen)
	case !validRepoName(r.Name):
		p.addf("name", "%s is not a valid repository name (path segments of letters, digits, '.', '_' and '-', such as \"acme/api\")", quote(r.Name))
	}
	var scheme string
	if r.URL == "" {
		p.add("url", "is required")
	} else if msg := checkURL(r.URL); msg != "" {
		p.add("url", msg)
	} else if u, err := url.Parse(r.URL); err == nil {
		scheme = u.Scheme
	}
	if c := r.Credential; c != nil {
		switch c.Kind {
		case CredentialToken, CredentialBasic:
			if scheme != "" && scheme != "https" && scheme != "http" {
				p.addf("credential.kind", "%s needs an http(s) URL, not %s://", quote(c.Kind), scheme)
			}
		case CredentialSSH:
			if scheme != "" && scheme != "ssh" {
				p.addf("credential.kind", "%s needs an ssh:// URL, not %s://", quote(c.Kind), scheme)
			}
		case "":
			p.add("credential.kind", "is required (token, basic or ssh)")
		default:
			p.addf("credential.kind", "%s is not a credential kind (token, basic or ssh)", quote(c.Kind))
		}
		switch {
		case c.Kind == CredentialBasic && c.Username == "":
			p.add("credential.username", "is required for basic credentials")
		case c.Kind == CredentialSSH && c.Username != "":
			p.add("credential.username", "is taken from the ssh:// URL, not set here")
		case strings.ContainsAny(c.Username, ":@/ \t\r\n\x00"):
			p.addf("credential.username", "%s is not a valid username", quote(c.Username))
		}
		switch {
		case c.Secret == "":
			p.add("credential.secret", "is required: the name of the coordinator secret holding the credential")
		case !validEnvName(c.Secret):
			p.addf("credential.secret", "%s is not a secret name ([A-Za-z_][A-Za-z0-9_]*)", quote(c.Secret))
		}
	}
	return p.err()
}
