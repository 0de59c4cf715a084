// Package rootfs gives the container runtimes their steps' images from the
// executor's image cache (internal/image). The executor pulls each step's
// image for an attempt with the job's registry credentials and learns its
// digest (Pull); the runtime then asks for the step's image through
// ImageFunc, the oci and gvisor runtimes' image hook, and gets the cached
// layer directories, over which it makes the attempt's copy-on-write root
// file system itself: the runtime owns the user namespace those layers are
// ID-mapped into, and removes the overlay with the rest of the attempt, on
// Close or in its janitor after a crash. The attempt's images stay leased
// until Release, which the executor calls after closing the sandbox, so
// nothing the attempt still uses is evicted and nothing of a job lands in
// the cache.
//
// Image gives, besides the layers, a plain copy-on-write overlay mounted by
// the Provider, once per attempt and image, for what runs an image without
// a user namespace (the benchmarks' raw OCI runtime): its files keep the
// cache's host owners. Those overlays live under Options.Root/<sandbox>/,
// named for the attempt; Release unmounts them, and RemoveLeftovers finds
// what a crashed executor left.
package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
)

// Image is what a runtime needs to run a step in an image.
type Image struct {
	Digest string   // what the step's reference resolved to
	Layers []string // the cached layer directories, bottom first: read-only
	RootFS string   // the attempt's plain copy-on-write overlay over Layers
	User   string   // the image config's User
	Env    []string // the image config's Env
}

// Options configure a Provider.
type Options struct {
	// Cache is the executor's image cache.
	Cache *image.Cache
	// Root is where the attempts' overlays are mounted; created (mode 0711)
	// if missing. It belongs to the Provider: RemoveLeftovers deletes what
	// it finds there.
	Root   string
	Logger *slog.Logger
}

// Provider hands out images to attempts. It is safe for concurrent use.
type Provider struct {
	cache *image.Cache
	root  string
	log   *slog.Logger

	mu       sync.Mutex
	attempts map[string]*attempt
}

// attempt is what one sandbox holds: leased images by the reference the step
// named, and the overlays mounted for them, by digest.
type attempt struct {
	mu       sync.Mutex
	images   map[string]*image.Image
	overlays map[string]*image.Layer
	released bool
}

// New returns a Provider.
func New(opts Options) (*Provider, error) {
	if opts.Cache == nil {
		return nil, errors.New("rootfs: Cache is required")
	}
	if opts.Root == "" {
		return nil, errors.New("rootfs: Root is required")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("rootfs: creating %s: %w", root, err)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{cache: opts.Cache, root: root, log: log, attempts: make(map[string]*attempt)}, nil
}

// Pull fetches the image ref for the attempt called sandbox, unless it is
// cached, and returns its digest. The image stays leased until Release.
// dockerAuth is the job's Docker config JSON ("auths" by registry, as in
// ~/.docker/config.json and GitLab's DOCKER_AUTH_CONFIG); "" uses the
// executor's default credentials. An error that retrying cannot fix (a bad
// reference, an unknown or refused image, an unsafe layer) wraps
// sandbox.ErrImage.
func (p *Provider) Pull(ctx context.Context, sb, ref, dockerAuth string) (string, error) {
	img, err := p.lease(ctx, sb, ref, dockerAuth)
	if err != nil {
		return "", err
	}
	return img.Digest, nil
}

// ImageFunc returns the container runtimes' image hook (oci.Options.Images)
// over p: a step gets its image's layers (oci.Image.Layers), pulled for the
// attempt (or pulled now, with default credentials) and leased until
// Release; the runtime makes the overlay.
func (p *Provider) ImageFunc() oci.ImageFunc {
	return func(ctx context.Context, sb, ref string) (oci.Image, error) {
		img, err := p.lease(ctx, sb, ref, "")
		if err != nil {
			return oci.Image{}, err
		}
		return oci.Image{Layers: img.Layers, User: img.Config.User, Env: img.Config.Env}, nil
	}
}

// Image returns the image ref for the attempt called sandbox, the image
// pulled for it (or pulled now, with default credentials), with the
// attempt's plain overlay over it mounted as RootFS; see the package doc.
func (p *Provider) Image(ctx context.Context, sb, ref string) (Image, error) {
	img, err := p.lease(ctx, sb, ref, "")
	if err != nil {
		return Image{}, err
	}
	a := p.attempt(sb)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released {
		return Image{}, fmt.Errorf("image %q for sandbox %q: the sandbox was released", ref, sb)
	}
	l, ok := a.overlays[img.Digest]
	if !ok {
		dir := filepath.Join(p.root, sb, digestDir(img.Digest))
		if l, err = image.Mount(ctx, img, dir); err != nil {
			return Image{}, err
		}
		a.overlays[img.Digest] = l
	}
	return Image{Digest: img.Digest, Layers: img.Layers, RootFS: l.Rootfs, User: img.Config.User, Env: img.Config.Env}, nil
}

func (p *Provider) attempt(sb string) *attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.attempts[sb]
	if a == nil {
		a = &attempt{images: make(map[string]*image.Image), overlays: make(map[string]*image.Layer)}
		p.attempts[sb] = a
	}
	return a
}

func (p *Provider) lease(ctx context.Context, sb, ref, dockerAuth string) (*image.Image, error) {
	if err := sandbox.ValidName(sb); err != nil {
		return nil, err
	}
	if strings.TrimSpace(ref) == "" {
		return nil, fmt.Errorf("%w: the step names no image, and this runtime runs every step in one", sandbox.ErrImage)
	}
	a := p.attempt(sb)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.released {
		return nil, fmt.Errorf("image %q for sandbox %q: the sandbox was released", ref, sb)
	}
	if img, ok := a.images[ref]; ok {
		return img, nil
	}
	auth, err := authFor(ref, dockerAuth)
	if err != nil {
		return nil, err
	}
	img, err := p.cache.Get(ctx, ref, auth)
	if err != nil {
		return nil, classify(err)
	}
	a.images[ref] = img
	return img, nil
}

// Release unmounts the overlays of the attempt called sandbox and ends its
// image leases. It is idempotent.
func (p *Provider) Release(sb string) error {
	p.mu.Lock()
	a := p.attempts[sb]
	delete(p.attempts, sb)
	p.mu.Unlock()
	var errs []error
	if a != nil {
		a.mu.Lock()
		a.released = true
		for _, l := range a.overlays {
			if err := l.Unmount(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, img := range a.images {
			img.Release()
		}
		a.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("releasing the images of sandbox %q: %w", sb, err)
	}
	if err := removeDir(filepath.Join(p.root, sb)); err != nil {
		return fmt.Errorf("releasing the images of sandbox %q: %w", sb, err)
	}
	return nil
}

// RemoveLeftovers unmounts and removes the overlays of every attempt under
// Root that is neither held by this Provider nor kept by keep.
func (p *Provider) RemoveLeftovers(ctx context.Context, keep func(name string) bool) error {
	entries, err := os.ReadDir(p.root)
	if err != nil {
		return fmt.Errorf("removing leftover image overlays: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		sb := e.Name()
		if sandbox.ValidName(sb) != nil || (keep != nil && keep(sb)) {
			continue
		}
		p.mu.Lock()
		_, held := p.attempts[sb]
		p.mu.Unlock()
		if held {
			continue
		}
		p.log.Info("removing leftover image overlays", "sandbox", sb)
		if err := removeDir(filepath.Join(p.root, sb)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing leftover image overlays: %w", err)
	}
	return nil
}

// removeDir unmounts every overlay in dir (an attempt's directory) and
// removes it; a missing dir is fine.
func removeDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if err := image.Unmount(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(dir)
}

// digestDir is a short directory name for a digest: overlayfs mount options
// are limited to a page, and the layer paths already fill much of it.
func digestDir(digest string) string {
	_, hexpart, ok := strings.Cut(digest, ":")
	if !ok || len(hexpart) < 16 {
		sum := sha256.Sum256([]byte(digest))
		hexpart = hex.EncodeToString(sum[:])
	}
	return hexpart[:16]
}

// classify marks errors that retrying cannot fix with sandbox.ErrImage.
func classify(err error) error {
	var terr *transport.Error
	switch {
	case errors.As(err, &terr):
		switch terr.StatusCode {
		case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusBadRequest:
			return fmt.Errorf("%w: %w", sandbox.ErrImage, err)
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.NameInvalidErrorCode,
				transport.UnauthorizedErrorCode, transport.DeniedErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%w: %w", sandbox.ErrImage, err)
			}
		}
		return err
	case errors.As(err, new(*name.ErrBadName)),
		errors.Is(err, image.ErrLocalNotAllowed),
		errors.Is(err, image.ErrUnsafeLayer),
		errors.Is(err, image.ErrBadReference),
		errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %w", sandbox.ErrImage, err)
	}
	return err
}

// dockerConfig is the part of a Docker config file that holds credentials.
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// authFor picks the credentials for ref's registry from a Docker config
// JSON; nil when there are none (or ref is not a registry reference).
func authFor(ref, dockerAuth string) (*image.Auth, error) {
	if strings.TrimSpace(dockerAuth) == "" || strings.HasPrefix(ref, "oci-layout:") || strings.HasPrefix(ref, "docker-archive:") {
		return nil, nil
	}
	var cfg dockerConfig
	if err := json.Unmarshal([]byte(dockerAuth), &cfg); err != nil {
		// Never quote the value: it holds credentials.
		return nil, fmt.Errorf("%w: the job's registry credentials (%s) are not a Docker config JSON: %s",
			sandbox.ErrImage, DockerAuthSecret, jsonErrorText(err))
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w: image %q: %w", sandbox.ErrImage, ref, err)
	}
	host := r.Context().RegistryStr()
	for key, e := range cfg.Auths {
		if registryHost(key) != host {
			continue
		}
		a := &image.Auth{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: the auth of registry %q is not base64", sandbox.ErrImage, DockerAuthSecret, key)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("%w: %s: the auth of registry %q is not user:password", sandbox.ErrImage, DockerAuthSecret, key)
			}
			a.Username, a.Password = user, pass
		}
		return a, nil
	}
	return nil, nil
}

// DockerAuthSecret is the job secret whose value, a Docker config JSON, holds
// the job's registry credentials.
const DockerAuthSecret = "DOCKER_AUTH_CONFIG"

// registryHost normalises a Docker config "auths" key ("https://index.docker.io/v1/",
// "registry.example.com:5000") to a registry host as go-containerregistry names it.
func registryHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	switch key {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return name.DefaultRegistry
	}
	return key
}

// jsonErrorText describes a JSON syntax error without quoting the input.
func jsonErrorText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	return "invalid JSON"
}
