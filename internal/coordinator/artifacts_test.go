package coordinator

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/blobstore/dirstore"
	"github.com/airlock-run/airlock/internal/queue"
)

func TestArtifactsAreStoredPerAttemptCappedListedAndDownloaded(t *testing.T) {
	t.Parallel()
	blobs, err := dirstore.Open(t.TempDir(), dirstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	e := setup(t, func(c *Config) { c.Blobs = blobs; c.ArtifactLimit = 100 })
	ctx := context.Background()
	j := e.submit(testSpec("default"))
	c := e.claim("exec-1", "default")
	ref := queue.AttemptRef{JobID: j.ID, Attempt: 1}

	if _, err := e.exec.UploadArtifacts(ctx, c.Token, ref, strings.NewReader(strings.Repeat("x", 101))); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("uploading 101 bytes over a limit of 100: %v, want ErrTooLarge", err)
	}
	body := []byte("pretend this is a tar.gz")
	a, err := e.exec.UploadArtifacts(ctx, c.Token, ref, bytes.NewReader(body))
	if err != nil || a.Size != int64(len(body)) || a.Attempt != 1 {
		t.Fatalf("UploadArtifacts = %+v, %v", a, err)
	}
	// Only the attempt's own token uploads, and only its own attempt.
	var se *api.StatusError
	if _, err := e.client.UploadArtifacts(ctx, clientToken, ref, bytes.NewReader(body)); !errors.As(err, &se) || se.Status != 403 {
		t.Errorf("a client token uploading artifacts: %v, want 403", err)
	}

	list, err := e.client.Artifacts(ctx, j.ID)
	if err != nil || len(list.Artifacts) != 1 || list.Artifacts[0].SHA256 != a.SHA256 {
		t.Fatalf("Artifacts = %+v, %v", list, err)
	}
	var got bytes.Buffer
	if _, err := e.client.DownloadArtifacts(ctx, j.ID, 1, &got); err != nil || !bytes.Equal(got.Bytes(), body) {
		t.Errorf("DownloadArtifacts = %q, %v", got.Bytes(), err)
	}
	if _, err := e.client.DownloadArtifacts(ctx, j.ID, 2, &got); !errors.As(err, &se) || se.Status != 404 {
		t.Errorf("downloading an attempt without artifacts: %v, want 404", err)
	}
	if _, err := e.client.Artifacts(ctx, 999); !errors.As(err, &se) || se.Status != 404 {
		t.Errorf("artifacts of an unknown job: %v, want 404", err)
	}
}
