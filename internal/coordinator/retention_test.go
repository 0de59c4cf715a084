package coordinator

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/blobstore"
	"github.com/airlock-run/airlock/internal/blobstore/dirstore"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

func TestRetentionDeletesOldJobsWithTheirBlobsAndUnnamedUploads(t *testing.T) {
	t.Parallel()
	var blobs *dirstore.Store
	e := setup(t, func(c *Config) {
		var err error
		blobs, err = dirstore.Open(t.TempDir(), dirstore.Options{Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { blobs.Close() })
		c.Blobs = blobs
		c.Retention = 30 * 24 * time.Hour
		c.UploadGrace = 24 * time.Hour
	})
	ctx := context.Background()
	upload := func(content string) string {
		d := digestOf([]byte(content))
		if _, err := e.client.UploadFile(ctx, d, bytes.NewReader([]byte(content)), int64(len(content))); err != nil {
			t.Fatal(err)
		}
		return d
	}
	withFile := func(d string) job.Spec {
		s := testSpec("default")
		s.Files = map[string]job.File{"f": {Blob: d}}
		return s
	}
	finish := func(j *api.Job, artifacts bool) {
		c := e.claim("exec-1", "default")
		if c.Job.ID != j.ID {
			t.Fatalf("claimed job %d, want %d", c.Job.ID, j.ID)
		}
		ref := queue.AttemptRef{JobID: j.ID, Attempt: c.Attempt}
		if artifacts {
			if _, err := e.exec.UploadArtifacts(ctx, c.Token, ref, bytes.NewReader([]byte("tgz"))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.exec.Finish(ctx, c.Token, ref, api.FinishRequest{Outcome: job.OutcomeSucceeded, Reason: job.ReasonSuccess}); err != nil {
			t.Fatal(err)
		}
	}

	// Day 0: an old job with a file and artifacts, an old job without, and
	// an upload nobody ever names.
	shared, onlyOld, never := upload("shared"), upload("only-old"), upload("never named")
	old := e.submit(withFile(onlyOld))
	finish(old, true)
	oldPlain := e.submit(testSpec("default"))
	finish(oldPlain, false)
	oldShared := e.submit(withFile(shared))
	finish(oldShared, true)

	// Day 40: a recent finished job and a queued one, both naming the shared
	// upload (which submit touches: a sweep running meanwhile takes it for
	// new), and a fresh upload not yet named.
	e.clock.Advance(40 * 24 * time.Hour)
	recent := e.submit(withFile(shared))
	if info, err := blobs.Stat(ctx, uploadKey(strings.TrimPrefix(shared, job.BlobPrefix))); err != nil || !info.Created.Equal(e.clock.Now()) {
		t.Errorf("the shared upload after a submit naming it: %+v, %v; want it touched (created %v)", info, err, e.clock.Now())
	}
	finish(recent, true)
	queued := e.submit(withFile(shared))
	fresh := upload("fresh")

	res, err := e.srv.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(SweepResult{Jobs: 3, Blobs: 2, Uploads: 2}, res); diff != "" {
		t.Errorf("sweep (-want +got):\n%s", diff)
	}
	for _, id := range []int64{old.ID, oldPlain.ID, oldShared.ID} {
		var se *api.StatusError
		if _, err := e.client.Get(ctx, id); !errors.As(err, &se) || se.Status != 404 {
			t.Errorf("job %d past retention: Get = %v, want 404", id, err)
		}
		if n, _ := blobs.List(ctx, blobstore.ListParams{Prefix: jobPrefix(id)}); len(n.Blobs) != 0 {
			t.Errorf("job %d past retention kept blobs %v", id, n.Blobs)
		}
	}
	for _, id := range []int64{recent.ID, queued.ID} {
		if _, err := e.client.Get(ctx, id); err != nil {
			t.Errorf("job %d within retention: %v", id, err)
		}
	}
	if list, err := e.client.Artifacts(ctx, recent.ID); err != nil || len(list.Artifacts) != 1 {
		t.Errorf("artifacts of the recent job: %+v, %v", list, err)
	}
	for d, want := range map[string]bool{shared: true, fresh: true, onlyOld: false, never: false} {
		if have, err := e.client.HasFile(ctx, d); err != nil || have != want {
			t.Errorf("upload %s: kept = %v, %v; want %v", d, have, err, want)
		}
	}

	// A second sweep finds nothing more; the shared upload stays while the
	// queued job names it, however old it grows.
	e.clock.Advance(10 * 24 * time.Hour)
	if res, err := e.srv.Sweep(ctx); err != nil || res.Jobs != 0 || res.Uploads != 1 {
		t.Errorf("second sweep = %+v, %v; want only the fresh upload, now old and unnamed", res, err)
	}
	if have, _ := e.client.HasFile(ctx, shared); !have {
		t.Error("an upload a queued job names was deleted")
	}
}

func TestRetentionRefusesANegativeSetting(t *testing.T) {
	t.Parallel()
	cfg := Config{Store: nil, Retention: -time.Hour}
	if err := cfg.Validate(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("retention -1h0m0s is negative")) {
		t.Errorf("Validate = %v, want the negative retention named", err)
	}
}
