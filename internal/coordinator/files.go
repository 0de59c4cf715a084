package coordinator

// Job files uploaded before the job: a client PUTs a file's content under its
// SHA-256 and then submits a spec whose files name it ({"blob":
// "sha256:…"}); the executor running the job downloads it with its job token.
//
//	HEAD /api/v1/files/sha256:{hex}                     200 when uploaded, 404 when not (client token)
//	PUT  /api/v1/files/sha256:{hex}                     the content → 201 FileUpload (200 if it was there)
//	GET  /api/v1/attempts/{jobID}/{attempt}/files/sha256:{hex}   the content (job token; only a file the job names)
//
// Uploads are content-addressed, so the same file sent for a thousand jobs
// is stored once, and a client asks (HEAD) before sending it. They live in
// the blob store under uploads/sha256/<hex>; the retention sweep deletes
// those no remaining job names once they are old enough (retention.go).
//
// The content is checked against its name before it is stored: it is
// streamed into a temporary file while hashed, and only a match goes into the
// blob store, so a wrong or truncated upload never sits under a name it does
// not match, not even for a moment.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/blobstore"
	"github.com/airlock-run/airlock/internal/job"
)

// uploadPrefix holds every uploaded file.
const uploadPrefix = "uploads/sha256/"

// uploadKey is where the file with this hex digest is kept.
func uploadKey(hexDigest string) string { return uploadPrefix + hexDigest }

// digestFromPath reads {digest} ("sha256:<hex>").
func digestFromPath(r *http.Request) (string, error) {
	h, err := job.ParseBlob(r.PathValue("digest"))
	if err != nil {
		return "", badRequest("%v", err)
	}
	return h, nil
}

func (s *Server) noBlobs(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Blobs != nil {
		return false
	}
	s.writeError(w, r, newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "this coordinator keeps no files"))
	return true
}

func (s *Server) handleHeadFile(w http.ResponseWriter, r *http.Request) {
	if s.noBlobs(w, r) {
		return
	}
	h, err := digestFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	info, err := s.cfg.Blobs.Stat(r.Context(), uploadKey(h))
	if err != nil {
		s.writeError(w, r, fileError(h, err))
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handlePutFile(w http.ResponseWriter, r *http.Request) {
	if s.noBlobs(w, r) {
		return
	}
	h, err := digestFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if info, err := s.cfg.Blobs.Stat(r.Context(), uploadKey(h)); err == nil {
		writeJSON(w, http.StatusOK, api.FileUpload{Digest: job.BlobPrefix + h, Size: info.Size})
		return
	}
	if r.ContentLength > s.cfg.FileLimit {
		s.writeError(w, r, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "",
			"a file of %d bytes exceeds the limit of %d bytes per file", r.ContentLength, s.cfg.FileLimit))
		return
	}
	tmp, err := os.CreateTemp(s.cfg.TempDir, "upload-*")
	if err != nil {
		s.writeError(w, r, fmt.Errorf("staging upload: %w", err))
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, sum), io.LimitReader(r.Body, s.cfg.FileLimit+1))
	switch {
	case err != nil:
		s.writeError(w, r, badRequest("reading the upload: %v", err))
		return
	case n > s.cfg.FileLimit:
		s.writeError(w, r, newHTTPError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, "",
			"the file exceeds the limit of %d bytes per file", s.cfg.FileLimit))
		return
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		s.writeError(w, r, badRequest("the content's SHA-256 is %s, not %s (%d bytes received)", got, h, n))
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		s.writeError(w, r, fmt.Errorf("staging upload: %w", err))
		return
	}
	info, err := s.cfg.Blobs.Put(r.Context(), uploadKey(h), tmp, s.cfg.FileLimit)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("storing upload %s: %w", h, err))
		return
	}
	s.log.Info("file uploaded", "digest", h, "bytes", info.Size)
	writeJSON(w, http.StatusCreated, api.FileUpload{Digest: job.BlobPrefix + h, Size: info.Size})
}

func (s *Server) handleGetJobFile(w http.ResponseWriter, r *http.Request) {
	if s.noBlobs(w, r) {
		return
	}
	ref, err := attemptFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	h, err := digestFromPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.store.Get(r.Context(), ref.JobID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !namesBlob(j.Spec, job.BlobPrefix+h) {
		s.writeError(w, r, forbidden("job %d names no file sha256:%s", ref.JobID, h))
		return
	}
	rc, info, err := s.cfg.Blobs.Get(r.Context(), uploadKey(h))
	if err != nil {
		s.writeError(w, r, fileError(h, err))
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.Header().Set(api.HeaderSHA256, info.SHA256)
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Warn("sending job file", "job_id", ref.JobID, "digest", h, "error", err)
	}
}

// namesBlob reports whether spec has a file with this blob reference.
func namesBlob(spec job.Spec, ref string) bool {
	for _, f := range spec.Files {
		if f.Blob == ref {
			return true
		}
	}
	return false
}

func fileError(h string, err error) error {
	if errors.Is(err, blobstore.ErrNotFound) {
		return newHTTPError(http.StatusNotFound, api.CodeNotFound, "", "no file sha256:%s has been uploaded", h)
	}
	return err
}

// checkFiles refuses a spec naming a file that has not been uploaded, with
// the field of the first such file, and touches the uploads it names.
func (s *Server) checkFiles(r *http.Request, spec job.Spec) error {
	for _, name := range sortedFileNames(spec) {
		f := spec.Files[name]
		if f.Blob == "" {
			continue
		}
		field := job.FieldPath("files", name) + ".blob"
		if s.cfg.Blobs == nil {
			return invalid(field, "this coordinator keeps no uploaded files")
		}
		h, _ := job.ParseBlob(f.Blob) // validated
		// Touched, not only looked at: a retention sweep running now then
		// takes the upload for new (retention.go).
		_, err := s.cfg.Blobs.Touch(r.Context(), uploadKey(h))
		if errors.Is(err, blobstore.ErrNotFound) {
			return invalid(field, "%s has not been uploaded (PUT %s/files/%s first; airlock submit --file does)", f.Blob, api.Prefix, f.Blob)
		} else if err != nil {
			return fmt.Errorf("checking file %s: %w", f.Blob, err)
		}
	}
	return nil
}

func sortedFileNames(spec job.Spec) []string {
	return slices.Sorted(maps.Keys(spec.Files))
}
