package coordinator

// Client routes for the repositories registered on the coordinator. A
// registration names the coordinator secret that authenticates to the
// remote; the secret's value stays in the coordinator's configuration and is
// never stored with the registration nor returned.

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

func (s *Server) handlePutRepository(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var remote job.Remote
	if err := decodeJSON(w, r, s.cfg.MaxRequestBytes, &remote); err != nil {
		s.writeError(w, r, err)
		return
	}
	switch {
	case remote.Name == "":
		remote.Name = name
	case remote.Name != name:
		s.writeError(w, r, invalid("name", "%q differs from the name in the path, %q", remote.Name, name))
		return
	}
	if err := job.ValidateRemote(remote); err != nil {
		s.writeError(w, r, err)
		return
	}
	if c := remote.Credential; c != nil {
		if _, ok := s.cfg.Secrets[c.Secret]; !ok {
			s.writeError(w, r, invalid("credential.secret", "secret %q is not configured on the coordinator", c.Secret))
			return
		}
	}
	repo, err := s.store.PutRepository(r.Context(), remote)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("registering repository: %w", err))
		return
	}
	s.log.Info("repository registered", "repository", repo.Name, "url", repo.URL)
	writeJSON(w, http.StatusOK, repo)
}

func (s *Server) handleGetRepository(w http.ResponseWriter, r *http.Request) {
	repo, err := s.store.Repository(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, repo)
}

func (s *Server) handleListRepositories(w http.ResponseWriter, r *http.Request) {
	list, err := s.store.Repositories(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.RepositoryList{Repositories: list}
	if out.Repositories == nil {
		out.Repositories = []api.Repository{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteRepository(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.store.DeleteRepository(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("repository removed", "repository", name)
	w.WriteHeader(http.StatusNoContent)
}

// checkRepository refuses a spec naming a repository that is not
// registered.
func (s *Server) checkRepository(r *http.Request, spec job.Spec) error {
	if spec.Repository == nil || spec.Repository.Name == "" {
		return nil
	}
	_, err := s.store.Repository(r.Context(), spec.Repository.Name)
	if errors.Is(err, queue.ErrNotFound) {
		return invalid("repository.name", "repository %q is not registered on the coordinator (airlock repos add)", spec.Repository.Name)
	}
	return err
}
