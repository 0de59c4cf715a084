package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/artifact"
	"github.com/airlock-run/airlock/internal/job"
)

// writeFiles writes the job's files into the workspace (after the checkout,
// so a job file wins over a checked-out one at the same path), inline ones
// from the spec and uploaded ones from the coordinator, each checked against
// its digest while it is written; done reports that the job ends with fin.
func (r *jobRun) writeFiles(ctx context.Context, dir string, spec job.Spec, timeout time.Duration) (fin api.FinishRequest, done bool) {
	if len(spec.Files) == 0 {
		return api.FinishRequest{}, false
	}
	r.printf("==> writing %d job files\n", len(spec.Files))
	var uploaded int64
	for _, name := range slices.Sorted(maps.Keys(spec.Files)) {
		f := spec.Files[name]
		af := artifact.File{Path: name, Mode: f.Mode.Perm(), ModTime: f.ModTime}
		if f.Blob == "" {
			af.Content = strings.NewReader(f.Content)
			if err := artifact.WriteFiles(ctx, dir, []artifact.File{af}); err != nil {
				return r.fileFailed(ctx, timeout, err)
			}
			continue
		}
		n, err := r.writeUploadedFile(ctx, dir, af, f.Blob)
		if err != nil {
			return r.fileFailed(ctx, timeout, err)
		}
		uploaded += n
	}
	if uploaded > 0 {
		r.printf("==> downloaded %s of uploaded job files\n", job.ByteSize(uploaded))
	}
	return api.FinishRequest{}, false
}

func (r *jobRun) fileFailed(ctx context.Context, timeout time.Duration, err error) (api.FinishRequest, bool) {
	if ctx.Err() != nil {
		return r.interrupted(ctx, "", timeout), true
	}
	r.printf("==> %v\n", err)
	if errors.Is(err, artifact.ErrUnsafe) {
		// The workspace (a checked-out link, say) is in the way: the job's doing.
		return api.FinishRequest{Outcome: job.OutcomeFailed, Reason: job.ReasonCheckout, Message: err.Error()}, true
	}
	return systemError(err.Error()), true
}

// writeUploadedFile downloads one uploaded file into place, retrying
// transient failures, and returns its size.
func (r *jobRun) writeUploadedFile(ctx context.Context, dir string, f artifact.File, digest string) (int64, error) {
	want := strings.TrimPrefix(digest, job.BlobPrefix)
	var n int64
	err := r.withRetries(ctx, "downloading a job file", func() error {
		body, _, err := r.e.c.JobFile(ctx, r.claim.Token, r.ref, digest)
		if err != nil {
			return err
		}
		defer body.Close()
		v := &verifier{r: body, h: sha256.New(), want: want}
		f.Content = v
		if err := artifact.WriteFiles(ctx, dir, []artifact.File{f}); err != nil {
			if errors.Is(err, artifact.ErrUnsafe) {
				return permanent(err) // the workspace is in the way: another try meets it again
			}
			return err // a short read or a digest mismatch: fetch again
		}
		n = v.n
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("job file %q (%s): %w", f.Path, digest, err)
	}
	return n, nil
}

// errDigest is a downloaded file whose content is not what its digest says.
var errDigest = errors.New("content does not match its digest")

// verifier passes r through, hashing it, and turns its end into errDigest
// when the content does not hash to want.
type verifier struct {
	r    io.Reader
	h    hash.Hash
	want string
	n    int64
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("%w: got sha256:%s after %d bytes", errDigest, got, v.n)
		}
	}
	return n, err
}
