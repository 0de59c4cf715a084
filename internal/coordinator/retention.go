package coordinator

// Retention: finished jobs older than Config.Retention are deleted with
// their attempts, logs and artifacts; uploaded files that no remaining job
// names are deleted once they are older than Config.UploadGrace.
//
// # Jobs
//
// The sweep lists finished jobs whose FinishedAt is before now-Retention and,
// for each, deletes the job from the store and then its blobs (the prefix
// jobs/<id>/). In that order a crash in between leaves blobs without a job —
// never a job whose artifacts are gone — and a job a user retries at that
// very moment is refused by the store (it is no longer finished) and kept
// whole. Every replica may sweep at once: deleting what another replica
// deleted is a no-op.
//
// # Uploads
//
// Uploads are shared by content (files.go), so one may serve many jobs. The
// sweep marks every file that a job still in the store names, then deletes
// the unmarked uploads older than UploadGrace. Two races are closed:
//
//   - a client uploads a file and has not submitted its job yet: the upload
//     is younger than the grace, so it is kept;
//   - a job naming an old upload is submitted while a sweep runs (after the
//     mark passed it by): submit touches every upload it names
//     (blobstore.Store.Touch resets its creation time) before the job exists,
//     and the sweep looks at an upload's age again just before deleting it.
//     What remains is the moment between that look and the delete; a job
//     that loses its upload there fails to download it (a system error)
//     and must be submitted again.
//
// The mark reads every job's spec, once per sweep (hourly): linear in the
// number of jobs kept, which retention bounds.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/airlock-run/airlock/internal/blobstore"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

// jobPrefix holds a job's blobs.
func jobPrefix(id int64) string { return fmt.Sprintf("jobs/%d/", id) }

// retentionLoop sweeps at start and then every RetentionInterval until ctx ends.
func (s *Server) retentionLoop(ctx context.Context) {
	if s.cfg.Retention <= 0 && s.cfg.Blobs == nil {
		return
	}
	t := time.NewTicker(s.cfg.RetentionInterval)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("retention sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SweepResult says what one retention sweep deleted.
type SweepResult struct {
	Jobs    int // finished jobs past retention, with their logs and artifacts
	Blobs   int // blobs of those jobs
	Uploads int // uploaded files no job names any more
}

// Sweep runs one retention sweep now (the coordinator also runs one every
// RetentionInterval once started).
func (s *Server) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	if s.cfg.Retention > 0 {
		if err := s.sweepJobs(ctx, &res); err != nil {
			return res, err
		}
	}
	if s.cfg.Blobs != nil {
		if err := s.sweepUploads(ctx, &res); err != nil {
			return res, err
		}
	}
	if res != (SweepResult{}) {
		s.log.Info("retention sweep", "jobs", res.Jobs, "job_blobs", res.Blobs, "uploads", res.Uploads)
	}
	return res, nil
}

func (s *Server) sweepJobs(ctx context.Context, res *SweepResult) error {
	cutoff := s.now().Add(-s.cfg.Retention)
	p := queue.ListParams{FinishedBefore: cutoff, Limit: 500}
	for {
		page, err := s.store.List(ctx, p)
		if err != nil {
			return fmt.Errorf("listing jobs past retention: %w", err)
		}
		for _, j := range page.Jobs {
			err := s.store.DeleteJob(ctx, j.ID)
			switch {
			case errors.Is(err, queue.ErrNotFound):
				// Another replica got there first, or a crash came between
				// an earlier sweep's two deletes: delete the blobs all the same.
			case errors.Is(err, queue.ErrInvalidState):
				continue // retried just now: keep everything
			case err != nil:
				return err
			default:
				res.Jobs++
			}
			if s.cfg.Blobs != nil {
				n, err := s.cfg.Blobs.DeletePrefix(ctx, jobPrefix(j.ID))
				if err != nil {
					return fmt.Errorf("deleting the blobs of job %d: %w", j.ID, err)
				}
				res.Blobs += n
			}
			s.watch.wake(j.ID)
		}
		if page.NextCursor == "" {
			return nil
		}
		p.Cursor = page.NextCursor
	}
}

func (s *Server) sweepUploads(ctx context.Context, res *SweepResult) error {
	// Candidates first, then the mark: an upload that becomes named after
	// its job was passed by the mark is young (see checkFiles).
	cutoff := s.now().Add(-s.cfg.UploadGrace)
	var old []blobstore.Info
	for info, err := range blobstore.All(ctx, s.cfg.Blobs, uploadPrefix) {
		if err != nil {
			return fmt.Errorf("listing uploads: %w", err)
		}
		if info.Created.Before(cutoff) {
			old = append(old, info)
		}
	}
	if len(old) == 0 {
		return nil
	}
	named := make(map[string]bool)
	p := queue.ListParams{Limit: 1000}
	for {
		page, err := s.store.List(ctx, p)
		if err != nil {
			return fmt.Errorf("listing jobs: %w", err)
		}
		for _, j := range page.Jobs {
			for _, f := range j.Spec.Files {
				if h, err := job.ParseBlob(f.Blob); err == nil {
					named[h] = true
				}
			}
		}
		if page.NextCursor == "" {
			break
		}
		p.Cursor = page.NextCursor
	}
	for _, info := range old {
		h := info.Key[len(uploadPrefix):]
		if named[h] {
			continue
		}
		// Submit may have touched it since it was listed.
		if cur, err := s.cfg.Blobs.Stat(ctx, info.Key); err != nil || !cur.Created.Before(cutoff) {
			continue
		}
		if err := s.cfg.Blobs.Delete(ctx, info.Key); err != nil {
			return fmt.Errorf("deleting upload %s: %w", h, err)
		}
		res.Uploads++
	}
	return nil
}
