package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Prefixes of local image references; see the package doc.
const (
	OCILayoutPrefix     = "oci-layout:"
	DockerArchivePrefix = "docker-archive:"
)

// ErrLocalNotAllowed is returned for a local reference outside
// Options.LocalRoots.
var ErrLocalNotAllowed = errors.New("local image path is not inside a configured local root")

// ErrBadReference is returned for a reference that is not well formed.
var ErrBadReference = errors.New("malformed image reference")

// A source is where an image comes from.
type source interface {
	String() string
	// resolve returns the image's cache key (Image.Digest), asking the
	// source only what is needed for that.
	resolve(ctx context.Context) (string, error)
	// image returns the image resolve named, and its platform manifest
	// digest ("" when there is none).
	image(ctx context.Context, digest string) (v1.Image, string, error)
}

func (c *Cache) source(ref string, auth *Auth) (source, error) {
	switch {
	case strings.HasPrefix(ref, OCILayoutPrefix):
		p, sel, err := c.localPath(strings.TrimPrefix(ref, OCILayoutPrefix))
		if err != nil {
			return nil, err
		}
		return &layoutSource{c: c, ref: ref, path: p, sel: sel}, nil
	case strings.HasPrefix(ref, DockerArchivePrefix):
		p, sel, err := c.localPath(strings.TrimPrefix(ref, DockerArchivePrefix))
		if err != nil {
			return nil, err
		}
		s := &archiveSource{ref: ref, path: p}
		switch {
		case sel == "":
		case sel[0] == ':':
			t, err := name.NewTag(sel[1:])
			if err != nil {
				return nil, err
			}
			s.tag = &t
		default:
			return nil, fmt.Errorf("a docker-archive reference selects an image by REPO:TAG, not %q", sel)
		}
		return s, nil
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	if c.plainHTTP[r.Context().RegistryStr()] {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, err
		}
	}
	return &registrySource{c: c, ref: r, auth: auth}, nil
}

// localPath splits "PATH[:TAG|@DIGEST]" and checks PATH against LocalRoots.
func (c *Cache) localPath(s string) (path, sel string, err error) {
	path = s
	if i := strings.IndexAny(s, ":@"); i >= 0 {
		path, sel = s[:i], s[i:]
	}
	if !filepath.IsAbs(path) {
		return "", "", fmt.Errorf("local image path %q is not absolute", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", "", err
	}
	for _, root := range c.localRoots {
		rel, err := filepath.Rel(root, real)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return real, sel, nil
		}
	}
	return "", "", fmt.Errorf("%w: %s", ErrLocalNotAllowed, path)
}

func registryKey(host string) (string, error) {
	r, err := name.NewRegistry(host)
	if err != nil {
		return "", err
	}
	return r.RegistryStr(), nil
}

// registrySource is an image in an OCI/Docker registry.
type registrySource struct {
	c    *Cache
	ref  name.Reference
	auth *Auth
}

func (s *registrySource) String() string { return s.ref.Name() }

type endpoint struct {
	repo   name.Repository
	mirror bool
}

// endpoints are the mirrors of the reference's registry, then the registry.
func (s *registrySource) endpoints() []endpoint {
	origin := s.ref.Context()
	var eps []endpoint
	for _, m := range s.c.mirrors[origin.RegistryStr()] {
		var opts []name.Option
		if key, err := registryKey(m); err == nil && s.c.plainHTTP[key] {
			opts = append(opts, name.Insecure)
		}
		repo, err := name.NewRepository(m+"/"+origin.RepositoryStr(), opts...)
		if err != nil {
			s.c.log.Warn("skipping bad registry mirror", "mirror", m, "error", err)
			continue
		}
		eps = append(eps, endpoint{repo: repo, mirror: true})
	}
	return append(eps, endpoint{repo: origin})
}

func (s *registrySource) puller(ep endpoint) (*remote.Puller, error) {
	if ep.mirror {
		return s.c.puller(nil)
	}
	return s.c.puller(s.auth)
}

func (s *registrySource) resolve(ctx context.Context) (string, error) {
	if d, ok := s.ref.(name.Digest); ok {
		return d.DigestStr(), nil
	}
	key := s.ref.Name() + "\x00" + authKey(s.auth)
	if ttl := s.c.opts.TagTTL; ttl > 0 {
		s.c.mu.Lock()
		te, ok := s.c.tags[key]
		s.c.mu.Unlock()
		if ok && s.c.now().Sub(te.resolvedAt) < ttl {
			return te.digest, nil
		}
	}
	var errs []error
	for _, ep := range s.endpoints() {
		p, err := s.puller(ep)
		if err != nil {
			return "", err
		}
		desc, err := p.Head(ctx, ep.repo.Tag(s.ref.Identifier()))
		if err != nil {
			if ctx.Err() != nil {
				return "", context.Cause(ctx)
			}
			if ep.mirror {
				s.c.log.Warn("registry mirror failed", "mirror", ep.repo.RegistryStr(), "image", s.ref.Name(), "error", err)
			}
			errs = append(errs, err)
			continue
		}
		d := desc.Digest.String()
		s.c.mu.Lock()
		if len(s.c.tags) >= 4096 {
			clear(s.c.tags) // a memo, not a record: keep it bounded
		}
		s.c.tags[key] = tagEntry{digest: d, resolvedAt: s.c.now()}
		s.c.mu.Unlock()
		return d, nil
	}
	return "", errors.Join(errs...)
}

func (s *registrySource) image(ctx context.Context, digest string) (v1.Image, string, error) {
	var errs []error
	for _, ep := range s.endpoints() {
		img, md, err := s.imageFrom(ctx, ep, digest)
		if err == nil {
			return img, md, nil
		}
		if ctx.Err() != nil {
			return nil, "", context.Cause(ctx)
		}
		if ep.mirror {
			s.c.log.Warn("registry mirror failed", "mirror", ep.repo.RegistryStr(), "image", s.ref.Name(), "error", err)
		}
		errs = append(errs, err)
	}
	return nil, "", errors.Join(errs...)
}

func (s *registrySource) imageFrom(ctx context.Context, ep endpoint, digest string) (v1.Image, string, error) {
	p, err := s.puller(ep)
	if err != nil {
		return nil, "", err
	}
	desc, err := p.Get(ctx, ep.repo.Digest(digest))
	if err != nil {
		return nil, "", err
	}
	img, err := desc.Image() // an index resolves to the puller's platform
	if err != nil {
		return nil, "", err
	}
	md, err := img.Digest()
	if err != nil {
		return nil, "", err
	}
	return img, md.String(), nil
}

// puller returns a registry client for auth (nil: the default
// credentials). Clients are kept so that their registry tokens are reused.
func (c *Cache) puller(auth *Auth) (*remote.Puller, error) {
	key := authKey(auth)
	c.mu.Lock()
	p, ok := c.pullers[key]
	c.mu.Unlock()
	if ok {
		return p, nil
	}
	opts := []remote.Option{
		remote.WithPlatform(c.platform),
		remote.WithUserAgent("airlock"),
	}
	if c.opts.Transport != nil {
		opts = append(opts, remote.WithTransport(c.opts.Transport))
	}
	switch {
	case auth != nil:
		opts = append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{
			Username:      auth.Username,
			Password:      auth.Password,
			IdentityToken: auth.IdentityToken,
			RegistryToken: auth.RegistryToken,
		})))
	case c.opts.DockerConfig != "":
		opts = append(opts, remote.WithAuthFromKeychain(authn.RefreshingKeychain(fileKeychain{path: c.opts.DockerConfig}, 5*time.Minute)))
	default:
		opts = append(opts, remote.WithAuth(authn.Anonymous))
	}
	p, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.pullers) >= 64 {
		clear(c.pullers) // jobs' credentials come and go; keep this bounded
	}
	c.pullers[key] = p
	c.mu.Unlock()
	return p, nil
}

func authKey(auth *Auth) string {
	if auth == nil {
		return ""
	}
	b, _ := json.Marshal(auth)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// fileKeychain reads credentials from one Docker config file, as docker
// login writes it, on every look-up.
type fileKeychain struct{ path string }

func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	f, err := os.Open(k.path)
	if err != nil {
		return nil, fmt.Errorf("reading docker config: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("reading docker config %s: %w", k.path, err)
	}
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := cf.GetAuthConfig(key)
		if err != nil {
			return nil, err
		}
		cfg.ServerAddress = ""
		if cfg != (types.AuthConfig{}) {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}

// layoutSource is an image in an OCI image layout directory.
type layoutSource struct {
	c    *Cache
	ref  string
	path string
	sel  string // "", ":TAG" or "@DIGEST"
}

func (s *layoutSource) String() string { return s.ref }

const (
	refNameAnnotation        = "org.opencontainers.image.ref.name"
	containerdNameAnnotation = "io.containerd.image.name"
)

func (s *layoutSource) resolve(context.Context) (string, error) {
	idx, err := layout.ImageIndexFromPath(s.path)
	if err != nil {
		return "", err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return "", err
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		switch {
		case s.sel == "":
			found = append(found, d)
		case s.sel[0] == '@':
			if d.Digest.String() == s.sel[1:] {
				found = append(found, d)
			}
		default:
			tag := s.sel[1:]
			if d.Annotations[refNameAnnotation] == tag || d.Annotations[containerdNameAnnotation] == tag {
				found = append(found, d)
			}
		}
	}
	switch {
	case len(found) == 1:
		return found[0].Digest.String(), nil
	case s.sel == "":
		return "", fmt.Errorf("layout %s holds %d images: name one with :TAG or @DIGEST", s.path, len(found))
	case len(found) == 0:
		return "", fmt.Errorf("layout %s has no image %s", s.path, s.sel)
	default:
		return "", fmt.Errorf("layout %s has %d images %s", s.path, len(found), s.sel)
	}
}

func (s *layoutSource) image(_ context.Context, digest string) (v1.Image, string, error) {
	idx, err := layout.ImageIndexFromPath(s.path)
	if err != nil {
		return nil, "", err
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil, "", err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	for _, d := range im.Manifests {
		if d.Digest != h {
			continue
		}
		if !d.MediaType.IsIndex() {
			img, err := idx.Image(h)
			return img, digest, err
		}
		child, err := idx.ImageIndex(h)
		if err != nil {
			return nil, "", err
		}
		// A layout's blobs are not checked on reading: check the index
		// as fetch checks manifests.
		if err := checkDigest(child.RawManifest, digest); err != nil {
			return nil, "", fmt.Errorf("image index: %w", err)
		}
		ms, err := partial.FindManifests(child, match.Platforms(s.c.platform))
		if err != nil {
			return nil, "", err
		}
		if len(ms) == 0 {
			return nil, "", fmt.Errorf("image index %s has no image for %s", digest, s.c.platform)
		}
		img, err := child.Image(ms[0].Digest)
		return img, ms[0].Digest.String(), err
	}
	return nil, "", fmt.Errorf("layout %s no longer holds %s", s.path, digest)
}

// archiveSource is an image in a `docker save` tarball.
type archiveSource struct {
	ref  string
	path string
	tag  *name.Tag
}

func (s *archiveSource) String() string { return s.ref }

func (s *archiveSource) resolve(context.Context) (string, error) {
	img, err := tarball.ImageFromPath(s.path, s.tag)
	if err != nil {
		return "", err
	}
	id, err := img.ConfigName()
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func (s *archiveSource) image(_ context.Context, digest string) (v1.Image, string, error) {
	img, err := tarball.ImageFromPath(s.path, s.tag)
	if err != nil {
		return nil, "", err
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, "", err
	}
	if id.String() != digest {
		return nil, "", fmt.Errorf("tarball %s changed: its image is now %s", s.path, id)
	}
	return img, "", nil
}

// checkDigest compares the digest of raw's bytes with want.
func checkDigest(raw func() ([]byte, error), want string) error {
	b, err := raw()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("content has digest %s, not %s", got, want)
	}
	return nil
}
