package executor

// What the executor does around the sandbox: resource limits, images,
// and the janitor.

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/rootfs"
	"github.com/airlock-run/airlock/internal/testenv"
)

// openRecorder is a runtime that records what the executor opens sandboxes
// with, and opens them with the real one.
type openRecorder struct {
	sandbox.Runtime
	mu     sync.Mutex
	params []sandbox.OpenParams
}

func (r *openRecorder) Open(ctx context.Context, p sandbox.OpenParams) (sandbox.Sandbox, error) {
	r.mu.Lock()
	r.params = append(r.params, p)
	r.mu.Unlock()
	return r.Runtime.Open(ctx, p)
}

func TestResourcesAreDefaultedAndCappedBeforeTheSandboxOpens(t *testing.T) {
	t.Parallel()
	rec := &openRecorder{}
	env := setup(t, func(c *Config) {
		rec.Runtime = c.Runtime
		c.Runtime = rec
		c.DefaultResources = job.Resources{CPUs: 1, Memory: 512 << 20, Pids: 256, Disk: 1 << 30}
		c.MaxResources = job.Resources{CPUs: 2, Memory: 1 << 30, Pids: 1024, Disk: 2 << 30}
	})
	fits := spec(step("hi", "echo fits"))
	fits.Resources = job.Resources{CPUs: 2, Pids: 100}
	tooBig := spec(step("hi", "echo never-run"))
	tooBig.Resources = job.Resources{Memory: 8 << 30}
	jFits := env.fake.push(fits, nil)
	jBig := env.fake.push(tooBig, nil)
	env.start()

	if fin := env.fake.waitFinished(jFits); fin.Outcome != job.OutcomeSucceeded {
		t.Fatalf("a job within the offer: %s %s", fin.Outcome, fin.Message)
	}
	fin := env.fake.waitFinished(jBig)
	if fin.Outcome != job.OutcomeFailed || fin.Reason != job.ReasonResources ||
		!strings.Contains(fin.Message, "resources.memory: 8GiB asked, at most 1GiB offered") {
		t.Errorf("a job asking too much: got %s/%s %q, want failed/resources naming the field and both sizes", fin.Outcome, fin.Reason, fin.Message)
	}
	if log := env.fake.logOf(jBig); strings.Contains(log, "never-run") || !strings.Contains(log, "refused") {
		t.Errorf("log of the refused job:\n%s", log)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.params) != 1 {
		t.Fatalf("sandboxes opened: %+v, want only the fitting job's", rec.params)
	}
	want := job.Resources{CPUs: 2, Memory: 512 << 20, Pids: 100, Disk: 1 << 30}
	if got := rec.params[0].Resources; got != want {
		t.Errorf("resources opened with: got %+v, want %+v (the job's, defaults for the rest)", got, want)
	}
	if got := rec.params[0].Network; got != job.NetworkInternet {
		t.Errorf("network opened with: got %q, want the default %q", got, job.NetworkInternet)
	}
}

func TestConfigRefusesDefaultsAboveTheMaximum(t *testing.T) {
	c := Config{Queues: []string{"q"}, Runtime: &openRecorder{},
		DefaultResources: job.Resources{Memory: 2 << 30}, MaxResources: job.Resources{Memory: 1 << 30}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "resources.memory") {
		t.Errorf("Validate = %v, want an error naming resources.memory", err)
	}
}

// imageEnv is an executor whose steps' images come from a real image cache
// fed by an in-process registry.
func imageEnv(t *testing.T, reg *imagetest.Registry, defaultImage string) *testEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root (overlay mounts)", errors.New("not running as root"))
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := image.New(image.Options{Root: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p, err := rootfs.New(rootfs.Options{Cache: c, Root: filepath.Join(dir, "rootfs")})
	if err != nil {
		t.Fatal(err)
	}
	return setup(t, func(c *Config) {
		c.Images = p
		c.DefaultImage = defaultImage
	})
}

func pushImage(t *testing.T, reg *imagetest.Registry, repoTag, content string) (ref, digest string) {
	t.Helper()
	img := imagetest.Image(t, v1.Config{}, imagetest.Layer(t, imagetest.Reg("content", content, 0o644)))
	return reg.Push(t, repoTag, img)
}

func TestEveryStepsImageIsPulledFirstAndItsDigestRecorded(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	tools, toolsDigest := pushImage(t, reg, "tools:1", "tools")
	base, baseDigest := pushImage(t, reg, "base:1", "base")
	env := imageEnv(t, reg, base)
	s := spec(step("one", "echo one"), step("two", "echo two"), step("three", "echo three"))
	s.Steps[0].Image = tools
	s.Steps[1].Image = tools
	j := env.fake.push(s, nil)
	env.start()

	fin := env.fake.waitFinished(j)
	if fin.Outcome != job.OutcomeSucceeded {
		t.Fatalf("outcome %s: %s", fin.Outcome, fin.Message)
	}
	var got [][2]string
	for _, sr := range fin.Steps {
		got = append(got, [2]string{sr.Image, sr.ImageDigest})
	}
	want := [][2]string{{tools, toolsDigest}, {tools, toolsDigest}, {base, baseDigest}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("steps' images: got %v, want %v", got, want)
	}
	log := env.fake.logOf(j)
	if i, k := strings.Index(log, "==> image "+base+": "+baseDigest), strings.Index(log, "==> step one"); i < 0 || k < i {
		t.Errorf("log: want every image pulled (with its digest) before the first step; log:\n%s", log)
	}
}

func TestAnUnusableImageFailsTheJobBeforeAnyStep(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{})
	tools, _ := pushImage(t, reg, "tools:1", "tools")
	env := imageEnv(t, reg, "")
	missing := spec(step("first", "echo never-run"), step("second", "true"))
	missing.Steps[0].Image = tools
	missing.Steps[1].Image = reg.Host + "/nosuch:1"
	noImage := spec(step("first", "echo never-run"))
	jMissing := env.fake.push(missing, nil)
	jNoImage := env.fake.push(noImage, nil)
	env.start()

	for _, tc := range []struct {
		j    *fakeJob
		want string
	}{
		{jMissing, "steps[1] (second)"},
		{jNoImage, "steps[0] (first) names no image, and this executor has no default image"},
	} {
		fin := env.fake.waitFinished(tc.j)
		if fin.Outcome != job.OutcomeFailed || fin.Reason != job.ReasonImage || !strings.Contains(fin.Message, tc.want) {
			t.Errorf("job %d: got %s/%s %q, want failed/image containing %q", tc.j.id, fin.Outcome, fin.Reason, fin.Message, tc.want)
		}
		if log := env.fake.logOf(tc.j); strings.Contains(log, "never-run") {
			t.Errorf("job %d ran a step:\n%s", tc.j.id, log)
		}
	}
}

func TestImagesArePulledWithTheJobsRegistryCredentials(t *testing.T) {
	t.Parallel()
	reg := imagetest.NewRegistry(t, imagetest.RegistryOpts{Username: "ci", Password: "pull-secret-value"})
	tools, digest := pushImage(t, reg, "tools:1", "tools")
	env := imageEnv(t, reg, "")
	s := spec(step("one", "echo ok"))
	s.Steps[0].Image = tools
	s.Secrets = []string{DockerAuthSecret}
	auth := `{"auths":{"` + reg.Host + `":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("ci:pull-secret-value")) + `"}}}`
	withCreds := env.fake.push(s, map[string]string{DockerAuthSecret: auth})
	without := env.fake.push(s, nil)
	env.start()

	if fin := env.fake.waitFinished(withCreds); fin.Outcome != job.OutcomeSucceeded || len(fin.Steps) != 1 || fin.Steps[0].ImageDigest != digest {
		t.Errorf("with credentials: %s %q, steps %+v", fin.Outcome, fin.Message, fin.Steps)
	}
	if fin := env.fake.waitFinished(without); fin.Outcome != job.OutcomeFailed || fin.Reason != job.ReasonImage {
		t.Errorf("without credentials: got %s/%s %q, want failed/image", fin.Outcome, fin.Reason, fin.Message)
	}
	if log := env.fake.logOf(withCreds); strings.Contains(log, "pull-secret-value") {
		t.Errorf("the credentials reached the log:\n%s", log)
	}
}

func TestJanitorRemovesLeftoversOfAttemptsNotRunningHere(t *testing.T) {
	t.Parallel()
	env := setup(t)
	// What a crashed executor left: a sandbox directory of an attempt that
	// no one runs.
	leftover := filepath.Join(env.rt.Root(), SandboxName(queue.AttemptRef{JobID: 999, Attempt: 1}))
	if err := os.MkdirAll(filepath.Join(leftover, "work"), 0o755); err != nil {
		t.Fatal(err)
	}
	env.start()
	if err := env.exec.testSignals.janitorPass.WaitOrTimeout(t); err != nil {
		t.Fatalf("janitor pass: %v", err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("leftover sandbox still there after the janitor's first pass (stat: %v)", err)
	}
}
