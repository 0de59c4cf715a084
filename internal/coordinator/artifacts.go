package coordinator

// Artifacts: an attempt uploads what the job's `artifacts` globs collected,
// as one gzip-compressed tar, with its job token; clients list and download
// them. They live in the blob store under jobs/<id>/attempts/<n>/.
//
//	PUT  /api/v1/attempts/{jobID}/{attempt}/artifacts      tar.gz body (job token)
//	GET  /api/v1/jobs/{id}/artifacts                       → ArtifactList
//	GET  /api/v1/jobs/{id}/artifacts/{attempt}             → the tar.gz

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/blobstore"
)

// artifactKey is where an attempt's artifacts are kept.
func artifactKey(jobID int64, attempt int) string {
	return fmt.Sprintf("jobs/%d/attempts/%d/artifacts.tar.gz", jobID, attempt)
}

func (s *Server) handlePutArtifacts(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Blobs == nil {
		s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "this coordinator keeps no artifacts"))
		return
	}
	ref, err := attemptFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The blob store enforces the limit while streaming; a declared length
	// over it is refused before reading.
	if r.ContentLength > s.cfg.ArtifactLimit {
		s.writeError(w, r, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "",
			"artifacts of %d bytes exceed the limit of %d bytes per attempt", r.ContentLength, s.cfg.ArtifactLimit))
		return
	}
	info, err := s.cfg.Blobs.Put(r.Context(), artifactKey(ref.JobID, ref.Attempt), r.Body, s.cfg.ArtifactLimit)
	switch {
	case errors.Is(err, blobstore.ErrTooLarge):
		s.writeError(w, r, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "",
			"artifacts exceed the limit of %d bytes per attempt (compressed)", s.cfg.ArtifactLimit))
		return
	case err != nil:
		s.writeError(w, r, fmt.Errorf("storing artifacts of job %d attempt %d: %w", ref.JobID, ref.Attempt, err))
		return
	}
	s.log.Info("artifacts stored", "job_id", ref.JobID, "attempt", ref.Attempt, "bytes", info.Size)
	writeJSON(w, http.StatusOK, toArtifact(ref.JobID, ref.Attempt, info))
}

func (s *Server) handleListArtifacts(w http.ResponseWriter, r *http.Request) {
	id, err := jobIDFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.store.Get(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.ArtifactList{Artifacts: []api.Artifact{}}
	if s.cfg.Blobs != nil {
		for info, err := range blobstore.All(r.Context(), s.cfg.Blobs, fmt.Sprintf("jobs/%d/attempts/", id)) {
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			var attempt int
			if _, err := fmt.Sscanf(strings.TrimPrefix(info.Key, fmt.Sprintf("jobs/%d/attempts/", id)), "%d/artifacts.tar.gz", &attempt); err != nil {
				continue
			}
			out.Artifacts = append(out.Artifacts, toArtifact(id, attempt, info))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetArtifacts(w http.ResponseWriter, r *http.Request) {
	id, err := jobIDFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	attempt, err := strconv.Atoi(r.PathValue("attempt"))
	if err != nil || attempt <= 0 {
		s.writeError(w, r, badRequest("attempt %q is not a positive integer", r.PathValue("attempt")))
		return
	}
	if s.cfg.Blobs == nil {
		s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "this coordinator keeps no artifacts"))
		return
	}
	rc, info, err := s.cfg.Blobs.Get(r.Context(), artifactKey(id, attempt))
	if errors.Is(err, blobstore.ErrNotFound) {
		s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "job %d attempt %d has no artifacts", id, attempt))
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="job-%d-attempt-%d-artifacts.tar.gz"`, id, attempt))
	w.Header().Set(api.HeaderSHA256, info.SHA256)
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Warn("sending artifacts", "job_id", id, "attempt", attempt, "error", err)
	}
}

func toArtifact(jobID int64, attempt int, info blobstore.Info) api.Artifact {
	return api.Artifact{JobID: jobID, Attempt: attempt, Size: info.Size, SHA256: info.SHA256, CreatedAt: info.Created}
}
