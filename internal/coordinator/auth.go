package coordinator

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/airlock-run/airlock/internal/queue"
)

// tokenKind is the kind of credential a request carries, or a route wants.
type tokenKind int

const (
	kindNone tokenKind = iota
	kindClient
	kindExecutor
	kindJob
)

func (k tokenKind) String() string {
	switch k {
	case kindClient:
		return "client"
	case kindExecutor:
		return "executor"
	case kindJob:
		return "job"
	}
	return "no"
}

// credential is who a request is.
type credential struct {
	kind    tokenKind
	attempt queue.AttemptRef // for kindJob
}

// tokenSet holds the SHA-256 hashes of the configured tokens.
type tokenSet struct {
	client   [][]byte
	executor [][]byte
}

func hashToken(t string) []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}

func newTokenSet(client, executor []string) tokenSet {
	var ts tokenSet
	for _, t := range client {
		ts.client = append(ts.client, hashToken(t))
	}
	for _, t := range executor {
		ts.executor = append(ts.executor, hashToken(t))
	}
	return ts
}

// match compares h with every configured hash in constant time, without
// stopping at the first match, and says which kind matched.
func (ts tokenSet) match(h []byte) tokenKind {
	client, executor := 0, 0
	for _, c := range ts.client {
		client |= subtle.ConstantTimeCompare(h, c)
	}
	for _, e := range ts.executor {
		executor |= subtle.ConstantTimeCompare(h, e)
	}
	switch {
	case client == 1:
		return kindClient
	case executor == 1:
		return kindExecutor
	}
	return kindNone
}

// newJobToken mints a job token: "alj_" and 32 random bytes, base64url. Only
// its hash is kept.
func newJobToken() (token string, hash []byte) {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	token = jobTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	return token, hashToken(token)
}

// bearer extracts the bearer token of r, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// authenticate says who r is: errUnauthorized for a missing or unknown token.
func (s *Server) authenticate(r *http.Request) (credential, error) {
	tok := bearer(r)
	if tok == "" {
		return credential{}, errUnauthorized
	}
	if strings.HasPrefix(tok, jobTokenPrefix) {
		ref, err := s.store.AttemptForToken(r.Context(), hashToken(tok))
		if errors.Is(err, queue.ErrUnknownToken) {
			return credential{}, errUnauthorized
		}
		if err != nil {
			return credential{}, err
		}
		return credential{kind: kindJob, attempt: ref}, nil
	}
	if k := s.tokens.match(hashToken(tok)); k != kindNone {
		return credential{kind: k}, nil
	}
	return credential{}, errUnauthorized
}
