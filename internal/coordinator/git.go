package coordinator

// The read-only git endpoint: an executor fetches its job's repository from
// the coordinator's mirror with the attempt's job token, so that neither the
// executor host nor the sandbox ever holds the remote's credentials.
//
//	GET  /api/v1/attempts/{jobID}/{attempt}/git/{name}.git/info/refs?service=git-upload-pack
//	POST /api/v1/attempts/{jobID}/{attempt}/git/{name}.git/git-upload-pack
//
// The token is bound to its attempt (the path must name it) and so to the
// repository its job names: any other name is 403. The job's commit is
// fetched into the mirror on the first request (many requests for one
// repository cause one fetch; a submitted job's commit is prefetched). When the remote lacks the commit, the mirror
// is served all the same: the executor's fetch of the commit fails, as git
// reports a missing object, and the executor fails the job saying so.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/gitmirror"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// errNoSuchCommit: the remote does not have the job's commit.
var errNoSuchCommit = errors.New("no such commit")

// ensureTimeout bounds the fetch that the first request of an attempt may
// wait for.
const ensureTimeout = 10 * time.Minute

func (s *Server) handleGit(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Mirrors == nil {
		s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "this coordinator serves no repositories"))
		return
	}
	name, _, ok := strings.Cut(r.PathValue("path"), ".git/")
	if !ok {
		s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "not a repository path: want {name}.git/..."))
		return
	}
	ref, err := attemptFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Get(r.Context(), ref.JobID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	repo := j.Spec.Repository
	if repo == nil || repo.Name == "" {
		s.writeError(w, r, forbidden("job %d names no registered repository", ref.JobID))
		return
	}
	if repo.Name != name {
		s.writeError(w, r, forbidden("this job token is for repository %q, not %q", repo.Name, name))
		return
	}
	// Every fetch starts with the ref advertisement: the commit is ensured
	// there, not again for each upload-pack exchange that follows — unless
	// replicas share the store, when a load balancer may send the exchanges
	// of one fetch to replicas whose (local) mirrors have not seen the commit.
	if !strings.HasSuffix(r.URL.Path, "/info/refs") && s.cfg.Peers == nil {
		s.cfg.Mirrors.ServeUploadPack(w, r, name)
		return
	}
	if err := s.ensureCommit(r.Context(), repo); err != nil {
		if !errors.Is(err, errNoSuchCommit) {
			s.writeError(w, r, err)
			return
		}
		// Serve the mirror all the same: the executor's fetch of the
		// commit then fails as git reports a missing object ("not our
		// ref"), which it turns into the job's failure.
		s.log.Info("a job's commit is not in its repository", "repository", repo.Name, "commit", repo.Commit)
	}
	s.cfg.Mirrors.ServeUploadPack(w, r, name)
}

// ensureCommit makes sure the job's commit is in the repository's mirror.
func (s *Server) ensureCommit(ctx context.Context, repo *job.Repository) error {
	reg, err := s.store.Repository(ctx, repo.Name)
	if errors.Is(err, queue.ErrNotFound) {
		return newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "repository %q is no longer registered", repo.Name)
	}
	if err != nil {
		return err
	}
	remote, err := s.mirrorRemote(reg.Remote)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	err = s.cfg.Mirrors.Ensure(ctx, remote, repo.Commit)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gitmirror.ErrCommitNotFound):
		return fmt.Errorf("repository %q has no commit %s: %w", repo.Name, repo.Commit, errNoSuchCommit)
	case errors.Is(err, gitmirror.ErrAuthentication):
		s.log.Error("the remote refused the coordinator's credentials", "repository", repo.Name, "error", err)
		return newHTTPError(http.StatusBadGateway, api.CodeInternal, "", "the remote of repository %q refused the coordinator's credentials", repo.Name)
	}
	s.log.Error("fetching a repository", "repository", repo.Name, "error", err)
	return newHTTPError(http.StatusBadGateway, api.CodeInternal, "", "fetching repository %q: %v", repo.Name, err)
}

// mirrorRemote resolves a registration's credential from the coordinator's
// secrets.
func (s *Server) mirrorRemote(r job.Remote) (gitmirror.Remote, error) {
	out := gitmirror.Remote{Name: r.Name, URL: r.URL}
	c := r.Credential
	if c == nil {
		return out, nil
	}
	value, ok := s.cfg.Secrets[c.Secret]
	if !ok {
		return out, fmt.Errorf("repository %q: its credential's secret %q is not configured on this coordinator", r.Name, c.Secret)
	}
	switch c.Kind {
	case job.CredentialSSH:
		out.Credentials.SSHKey = value
	default:
		out.Credentials.Username, out.Credentials.Password = c.Username, value
	}
	return out, nil
}

// prefetch starts fetching a submitted job's commit into its repository's
// mirror, so that the executor that claims the job finds it there. It gives
// up when the server stops; a failure is only logged: the executor's fetch
// tries again and reports it.
func (s *Server) prefetch(repo *job.Repository) {
	if s.cfg.Mirrors == nil || repo == nil || repo.Name == "" {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan struct{})
	go func() {
		select {
		case <-s.closing:
		case <-stop:
		}
		cancel()
	}()
	go func() {
		defer close(stop)
		if err := s.ensureCommit(ctx, repo); err != nil && ctx.Err() == nil {
			s.log.Warn("prefetching a job's commit", "repository", repo.Name, "commit", repo.Commit, "error", err)
		}
	}()
}
