package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/blobstore/dirstore"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
)

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return job.BlobPrefix + hex.EncodeToString(h[:])
}

func TestUploadedFilesAreCheckedStoredOnceAndServedOnlyToTheirJobs(t *testing.T) {
	t.Parallel()
	blobs, err := dirstore.Open(t.TempDir(), dirstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	e := setup(t, func(c *Config) { c.Blobs = blobs; c.FileLimit = 100; c.TempDir = t.TempDir() })
	ctx := context.Background()
	content := []byte("#!/bin/sh\necho tool\n")
	d := digestOf(content)
	var se *api.StatusError

	if have, err := e.client.HasFile(ctx, d); err != nil || have {
		t.Fatalf("HasFile before the upload = %v, %v; want false", have, err)
	}
	// Content that does not hash to its name is refused and not kept.
	if _, err := e.client.UploadFile(ctx, d, strings.NewReader("something else"), 14); !errors.As(err, &se) || se.Status != 400 || !strings.Contains(se.Err.Message, "SHA-256") {
		t.Errorf("uploading content under another digest: %v, want 400 naming the SHA-256", err)
	}
	if have, _ := e.client.HasFile(ctx, d); have {
		t.Error("a mismatched upload was kept")
	}
	big := bytes.Repeat([]byte("x"), 101)
	if _, err := e.client.UploadFile(ctx, digestOf(big), bytes.NewReader(big), 101); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("uploading 101 bytes over a limit of 100: %v, want ErrTooLarge", err)
	}
	// The size is checked while streaming too, whatever Content-Length says.
	if _, err := e.client.UploadFile(ctx, digestOf(big), bytes.NewReader(big), -1); !errors.Is(err, api.ErrTooLarge) {
		t.Errorf("uploading 101 bytes of unknown length over a limit of 100: %v, want ErrTooLarge", err)
	}
	if _, err := e.client.UploadFile(ctx, "sha256:abc", bytes.NewReader(content), int64(len(content))); !errors.As(err, &se) || se.Status != 400 {
		t.Errorf("uploading under a malformed digest: %v, want 400", err)
	}
	up, err := e.client.UploadFile(ctx, d, bytes.NewReader(content), int64(len(content)))
	if err != nil || up.Digest != d || up.Size != int64(len(content)) {
		t.Fatalf("UploadFile = %+v, %v", up, err)
	}
	if have, err := e.client.HasFile(ctx, d); err != nil || !have {
		t.Errorf("HasFile after the upload = %v, %v; want true", have, err)
	}
	if _, err := e.exec.UploadFile(ctx, d, bytes.NewReader(content), int64(len(content))); !errors.As(err, &se) || se.Status != 403 {
		t.Errorf("an executor token uploaded a file: %v, want 403", err)
	}

	spec := testSpec("default")
	spec.Files = map[string]job.File{"bin/tool": {Blob: d, Mode: 0o755}}
	j := e.submit(spec)
	other := e.submit(testSpec("default"))
	c := e.claim("exec-1", "default")
	ref := queue.AttemptRef{JobID: j.ID, Attempt: 1}
	rc, _, err := e.exec.JobFile(ctx, c.Token, ref, d)
	if err != nil {
		t.Fatalf("JobFile: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content) {
		t.Errorf("JobFile = %q, want %q", got, content)
	}
	// Another job's token cannot fetch it, nor a client token.
	oc := e.claim("exec-1", "default")
	oref := queue.AttemptRef{JobID: other.ID, Attempt: 1}
	if _, _, err := e.exec.JobFile(ctx, oc.Token, oref, d); !errors.As(err, &se) || se.Status != 403 {
		t.Errorf("a job that names no such file fetched it: %v, want 403", err)
	}
	if _, _, err := e.exec.JobFile(ctx, clientToken, ref, d); !errors.As(err, &se) || se.Status != 403 {
		t.Errorf("a client token fetching a job file: %v, want 403", err)
	}
}
