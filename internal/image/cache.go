package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
)

// Options configure a Cache.
type Options struct {
	// Root is the cache directory; it is created (mode 0700) if missing.
	// One Cache at a time may use it.
	Root string
	// MaxBytes bounds the disk space of unpacked layers; zero means no
	// bound. Images in use are never evicted, so the cache can exceed the
	// bound while they are.
	MaxBytes int64
	// Mirrors maps a registry host ("docker.io", "ghcr.io",
	// "registry.example.com:5000") to mirror hosts tried in order before the
	// registry itself. A mirror serves the same repository paths.
	Mirrors map[string][]string
	// PlainHTTP lists registry hosts spoken to over plain HTTP. (Loopback
	// and private addresses already are, as in go-containerregistry.)
	PlainHTTP []string
	// DockerConfig is a Docker config.json supplying default credentials
	// (including credential helpers); re-read at least every five minutes,
	// so rotated credentials are picked up. Empty means anonymous unless a
	// job passes Auth.
	DockerConfig string
	// TagTTL is how long a tag's resolved digest is reused without asking
	// the registry again. Zero asks on every Get.
	TagTTL time.Duration
	// LocalRoots are the directories oci-layout: and docker-archive:
	// references may name paths in. Empty disables local sources.
	LocalRoots []string
	// Platform chooses the image of a multi-platform index; the zero value
	// means linux and the executor's architecture.
	Platform v1.Platform
	// Transport is the HTTP transport for registries; nil means
	// go-containerregistry's default.
	Transport http.RoundTripper
	Logger    *slog.Logger
	Now       func() time.Time
}

// Auth is a job's credentials for the registry its image reference names.
// Mirrors always use the default credentials.
type Auth struct {
	Username string
	Password string
	// IdentityToken is an OAuth2 refresh token; RegistryToken a bearer
	// token sent as is.
	IdentityToken string
	RegistryToken string
}

// Config is what a sandbox needs from an image's configuration.
type Config struct {
	Env          []string          `json:"env,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"working_dir,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	StopSignal   string            `json:"stop_signal,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	OS           string            `json:"os,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
}

// Image is a cached, unpacked image held by a lease. Its layer directories
// stay on disk until Release; never write to them (use Mount).
type Image struct {
	Ref            string // the reference asked for
	Digest         string // what Ref resolved to; see the package doc
	ManifestDigest string // the platform's manifest digest; "" for docker-archive
	ID             string // the config digest
	Config         Config
	// Layers are the unpacked layer directories, bottom first. An image
	// without layers has one empty directory.
	Layers []string
	Size   int64 // bytes on disk of the unpacked layers

	once    sync.Once
	release func()
}

// Release ends the lease; the image may be evicted afterwards. Unmount any
// Layer made from it first. Release is idempotent.
func (img *Image) Release() {
	img.once.Do(func() {
		if img.release != nil {
			img.release()
		}
	})
}

// Cache is a content-addressed image cache. It is safe for concurrent use.
type Cache struct {
	opts       Options
	log        *slog.Logger
	now        func() time.Time
	privileged bool
	platform   v1.Platform
	mirrors    map[string][]string
	plainHTTP  map[string]bool
	localRoots []string
	lock       *os.File

	fetches group[struct{}]
	unpacks group[int64]

	mu      sync.Mutex
	closed  bool
	images  map[string]*imageEntry    // by Image.Digest
	layers  map[string]*layerEntry    // by diff ID
	size    int64                     // sum of layer sizes
	tags    map[string]tagEntry       // reference + credentials → digest
	pullers map[string]*remote.Puller // by credentials
}

type imageEntry struct {
	rec     record
	lastUse time.Time
	leases  int
}

type layerEntry struct {
	size int64
	refs int // image records that list it
	pins int // fetches in progress that use it
}

type tagEntry struct {
	digest     string
	resolvedAt time.Time
}

// record is an image's file in images/.
type record struct {
	Digest         string        `json:"digest"`
	ManifestDigest string        `json:"manifest_digest,omitempty"`
	ID             string        `json:"id"`
	Source         string        `json:"source"` // the reference first fetched with
	FetchedAt      time.Time     `json:"fetched_at"`
	Config         Config        `json:"config"`
	Layers         []recordLayer `json:"layers"` // bottom first
}

type recordLayer struct {
	DiffID string `json:"diff_id"`
	Size   int64  `json:"size"`
}

// New opens (creating if needed) the cache at opts.Root, removing leftovers
// of an interrupted run and evicting down to MaxBytes.
func New(opts Options) (*Cache, error) {
	if opts.Root == "" {
		return nil, errors.New("image cache: Root is required")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	opts.Root = root
	c := &Cache{
		opts:       opts,
		log:        opts.Logger,
		now:        opts.Now,
		privileged: os.Geteuid() == 0,
		platform:   opts.Platform,
		mirrors:    make(map[string][]string),
		plainHTTP:  make(map[string]bool),
		images:     make(map[string]*imageEntry),
		layers:     make(map[string]*layerEntry),
		tags:       make(map[string]tagEntry),
		pullers:    make(map[string]*remote.Puller),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.platform.OS == "" {
		c.platform.OS = "linux"
	}
	if c.platform.Architecture == "" {
		c.platform.Architecture = runtime.GOARCH
	}
	for reg, ms := range opts.Mirrors {
		key, err := registryKey(reg)
		if err != nil {
			return nil, fmt.Errorf("image cache: mirror for %q: %w", reg, err)
		}
		c.mirrors[key] = append(c.mirrors[key], ms...)
	}
	for _, reg := range opts.PlainHTTP {
		key, err := registryKey(reg)
		if err != nil {
			return nil, fmt.Errorf("image cache: plain-HTTP registry %q: %w", reg, err)
		}
		c.plainHTTP[key] = true
	}
	for _, dir := range opts.LocalRoots {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil {
			return nil, fmt.Errorf("image cache: local root: %w", err)
		}
		abs, err := filepath.Abs(real)
		if err != nil {
			return nil, fmt.Errorf("image cache: local root: %w", err)
		}
		c.localRoots = append(c.localRoots, abs)
	}

	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	if err := os.Chmod(root, 0o700); err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(root, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("image cache: %s is in use by another process: %w", root, err)
	}
	c.lock = lock
	if err := c.load(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("image cache: %w", err)
	}
	return c, nil
}

func (c *Cache) layersDir() string { return filepath.Join(c.opts.Root, "layers", "sha256") }
func (c *Cache) imagesDir() string { return filepath.Join(c.opts.Root, "images", "sha256") }
func (c *Cache) tmpDir() string    { return filepath.Join(c.opts.Root, "tmp") }
func (c *Cache) emptyDir() string  { return filepath.Join(c.opts.Root, "empty") }

func (c *Cache) layerPath(diffID string) string {
	return filepath.Join(c.layersDir(), strings.TrimPrefix(diffID, "sha256:"))
}

func (c *Cache) recordPath(digest string) string {
	return filepath.Join(c.imagesDir(), strings.TrimPrefix(digest, "sha256:")+".json")
}

// load rebuilds the index from disk.
func (c *Cache) load() error {
	if err := os.RemoveAll(c.tmpDir()); err != nil {
		return err
	}
	for _, d := range []string{c.layersDir(), c.imagesDir(), c.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(c.emptyDir(), 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(c.imagesDir())
	if err != nil {
		return err
	}
	for _, de := range entries {
		p := filepath.Join(c.imagesDir(), de.Name())
		e, err := c.loadRecord(p)
		if err != nil {
			c.log.Warn("dropping unreadable image record", "path", p, "error", err)
			os.Remove(p)
			continue
		}
		c.images[e.rec.Digest] = e
		for _, l := range e.rec.Layers {
			le := c.layers[l.DiffID]
			if le == nil {
				le = &layerEntry{size: l.Size}
				c.layers[l.DiffID] = le
				c.size += l.Size
			}
			le.refs++
		}
	}
	// Layers no record lists are leftovers of an interrupted fetch.
	entries, err = os.ReadDir(c.layersDir())
	if err != nil {
		return err
	}
	for _, de := range entries {
		if _, ok := c.layers["sha256:"+de.Name()]; !ok {
			if err := os.RemoveAll(filepath.Join(c.layersDir(), de.Name())); err != nil {
				return err
			}
		}
	}
	c.mu.Lock()
	doomed := c.evictLocked("")
	c.mu.Unlock()
	c.removeAll(doomed)
	return nil
}

func (c *Cache) loadRecord(p string) (*imageEntry, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, err
	}
	if c.recordPath(rec.Digest) != p {
		return nil, fmt.Errorf("record names digest %s", rec.Digest)
	}
	for _, l := range rec.Layers {
		fi, err := os.Stat(c.layerPath(l.DiffID))
		if err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("layer %s is missing", l.DiffID)
		}
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	return &imageEntry{rec: rec, lastUse: fi.ModTime()}, nil
}

// Close releases the cache directory. Images still leased stay valid on
// disk, but the Cache may not be used any more.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	// Unlock before closing: a child that another goroutine forked before
	// the descriptor's close-on-exec took effect holds a copy of it, and
	// the lock lives until the last copy closes — unless it is released
	// explicitly, which releases it for every copy.
	unix.Flock(int(c.lock.Fd()), unix.LOCK_UN)
	return c.lock.Close()
}

// Size reports the bytes of unpacked layers in the cache.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Get resolves ref, fetches and unpacks the image unless it is cached, and
// returns it leased: call Release when done. auth, if not nil, is used for
// the registry ref names. Cancelling ctx abandons the wait; a fetch other
// callers still wait for goes on.
func (c *Cache) Get(ctx context.Context, ref string, auth *Auth) (*Image, error) {
	src, err := c.source(ref, auth)
	if err != nil {
		if !errors.Is(err, ErrLocalNotAllowed) && !errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: %w", ErrBadReference, err)
		}
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	digest, err := src.resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("resolving image %q: %w", ref, err)
	}
	for range 2 {
		img, err := c.lease(digest, ref)
		if err != nil || img != nil {
			return img, err
		}
		_, err = c.fetches.do(ctx, digest, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, c.fetch(ctx, src, digest)
		})
		if err != nil {
			return nil, fmt.Errorf("fetching image %q (%s): %w", ref, digest, err)
		}
	}
	return nil, fmt.Errorf("image %q (%s) was evicted as soon as it was fetched: MaxBytes %d is too small for the images in use", ref, digest, c.opts.MaxBytes)
}

// lease returns the cached image leased, or nil when it is not cached.
func (c *Cache) lease(digest, ref string) (*Image, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("image cache is closed")
	}
	e := c.images[digest]
	if e == nil {
		c.mu.Unlock()
		return nil, nil
	}
	e.leases++
	now := c.now()
	e.lastUse = now
	c.mu.Unlock()

	// The record's mtime keeps the LRU order across restarts.
	if err := os.Chtimes(c.recordPath(digest), now, now); err != nil {
		c.log.Warn("recording image use", "digest", digest, "error", err)
	}
	img := &Image{
		Ref:            ref,
		Digest:         e.rec.Digest,
		ManifestDigest: e.rec.ManifestDigest,
		ID:             e.rec.ID,
		Config:         e.rec.Config,
		release:        func() { c.unlease(e) },
	}
	for _, l := range e.rec.Layers {
		img.Layers = append(img.Layers, c.layerPath(l.DiffID))
		img.Size += l.Size
	}
	if len(img.Layers) == 0 {
		img.Layers = []string{c.emptyDir()}
	}
	return img, nil
}

func (c *Cache) unlease(e *imageEntry) {
	c.mu.Lock()
	e.leases--
	doomed := c.evictLocked("")
	c.mu.Unlock()
	c.removeAll(doomed)
}

// fetch gets the image digest names from src into the cache.
func (c *Cache) fetch(ctx context.Context, src source, digest string) error {
	start := c.now()
	img, manifestDigest, err := src.image(ctx, digest)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	// Registries are checked by go-containerregistry; local sources are
	// not, and their content lands under the same digests.
	if manifestDigest != "" {
		if err := checkDigest(img.RawManifest, manifestDigest); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
	}
	if err := checkDigest(img.RawConfigFile, id.String()); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("reading manifest: %w", err)
	}
	diffIDs := cf.RootFS.DiffIDs
	if len(diffIDs) != len(layers) {
		return fmt.Errorf("image lists %d layers but its config %d diff IDs", len(layers), len(diffIDs))
	}
	ids := make([]string, len(diffIDs))
	for i, d := range diffIDs {
		if d.Algorithm != "sha256" || len(d.Hex) != 64 {
			return fmt.Errorf("unsupported diff ID %s", d)
		}
		ids[i] = d.String()
	}

	c.pin(ids)
	registered := false
	defer func() {
		if !registered {
			c.unpin(ids)
		}
	}()
	sizes := make([]int64, len(layers))
	errs := make([]error, len(layers))
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			sizes[i], errs[i] = c.unpacks.do(ctx, ids[i], func(ctx context.Context) (int64, error) {
				return c.unpackLayer(ctx, l, ids[i])
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	rec := record{
		Digest:         digest,
		ManifestDigest: manifestDigest,
		ID:             id.String(),
		Source:         src.String(),
		FetchedAt:      c.now().UTC(),
		Config: Config{
			Env:          cf.Config.Env,
			User:         cf.Config.User,
			WorkingDir:   cf.Config.WorkingDir,
			Entrypoint:   cf.Config.Entrypoint,
			Cmd:          cf.Config.Cmd,
			StopSignal:   cf.Config.StopSignal,
			Labels:       cf.Config.Labels,
			OS:           cf.OS,
			Architecture: cf.Architecture,
		},
	}
	var total int64
	for i, id := range ids {
		rec.Layers = append(rec.Layers, recordLayer{DiffID: id, Size: sizes[i]})
		total += sizes[i]
	}
	if err := c.writeRecord(rec); err != nil {
		return err
	}
	now := c.now()
	c.mu.Lock()
	c.images[digest] = &imageEntry{rec: rec, lastUse: now}
	for _, id := range ids {
		le := c.layers[id]
		le.refs++
		le.pins--
	}
	registered = true
	doomed := c.evictLocked(digest)
	c.mu.Unlock()
	c.removeAll(doomed)
	c.log.Info("image fetched", "image", src.String(), "digest", digest, "layers", len(ids),
		"bytes", total, "duration", c.now().Sub(start))
	return nil
}

func (c *Cache) writeRecord(rec record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.tmpDir(), "record-")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), c.recordPath(rec.Digest))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing image record: %w", err)
	}
	return nil
}

// pin protects layers a fetch is about to use from eviction.
func (c *Cache) pin(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		le := c.layers[id]
		if le == nil {
			// A placeholder until unpacked; size 0 until then.
			le = &layerEntry{size: -1}
			c.layers[id] = le
		}
		le.pins++
	}
}

// unpin undoes pin after a failed fetch.
func (c *Cache) unpin(ids []string) {
	c.mu.Lock()
	for _, id := range ids {
		le := c.layers[id]
		le.pins--
		if le.pins == 0 && le.refs == 0 && le.size < 0 {
			delete(c.layers, id) // never unpacked: the fetch failed
		}
	}
	doomed := c.evictLocked("")
	c.mu.Unlock()
	c.removeAll(doomed)
}

// unpackLayer unpacks l into layers/ unless it is there, verifying its diff
// ID, and returns its size on disk.
func (c *Cache) unpackLayer(ctx context.Context, l v1.Layer, diffID string) (int64, error) {
	c.mu.Lock()
	if le := c.layers[diffID]; le != nil && le.size >= 0 {
		c.mu.Unlock()
		return le.size, nil
	}
	c.mu.Unlock()

	tmp, err := os.MkdirTemp(c.tmpDir(), "layer-")
	if err != nil {
		return 0, err
	}
	size, err := c.unpackInto(ctx, l, diffID, tmp)
	if err != nil {
		if rerr := os.RemoveAll(tmp); rerr != nil {
			c.log.Warn("removing failed unpack", "path", tmp, "error", rerr)
		}
		return 0, fmt.Errorf("layer %s: %w", diffID, err)
	}
	c.mu.Lock()
	c.layers[diffID].size = size // pinned by the caller, so present
	c.size += size
	c.mu.Unlock()
	return size, nil
}

func (c *Cache) unpackInto(ctx context.Context, l v1.Layer, diffID, dir string) (int64, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	h := sha256.New()
	tee := io.TeeReader(rc, h)
	report, err := unpack(ctx, tee, dir, unpackOpts{privileged: c.privileged})
	if err != nil {
		return 0, err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil { // the tar's trailing padding
		return 0, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return 0, fmt.Errorf("content has digest %s, not the diff ID the image config lists", got)
	}
	if len(report.Skipped) > 0 {
		c.log.Warn("layer unpacked with entries skipped", "diff_id", diffID,
			"skipped", len(report.Skipped), "first", report.Skipped[0])
	}
	size, err := diskUsage(dir)
	if err != nil {
		return 0, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return 0, err
	}
	if err := os.Rename(dir, c.layerPath(diffID)); err != nil {
		return 0, err
	}
	return size, nil
}

// diskUsage sums the blocks of everything under dir, counting each inode
// once.
func diskUsage(dir string) (int64, error) {
	var total int64
	seen := make(map[uint64]bool)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			total += fi.Size()
			return nil
		}
		if st.Nlink > 1 && !fi.IsDir() {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

// evictLocked drops least recently used images no one holds (never keep)
// until the cache fits MaxBytes, and returns the layer directories to
// remove, already moved out of layers/.
func (c *Cache) evictLocked(keep string) []string {
	if c.opts.MaxBytes <= 0 || c.size <= c.opts.MaxBytes {
		return nil
	}
	var doomed []string
	dropLayer := func(id string, le *layerEntry) {
		delete(c.layers, id)
		c.size -= le.size
		// Move it aside now, so a new unpack of the same layer can take
		// its place while the old tree is being removed.
		to := filepath.Join(c.tmpDir(), "evicted-"+strings.TrimPrefix(id, "sha256:"))
		if err := os.Rename(c.layerPath(id), to); err != nil {
			c.log.Error("evicting layer", "diff_id", id, "error", err)
			return
		}
		doomed = append(doomed, to)
	}
	// Layers no image lists (left by a failed fetch) go first.
	for id, le := range c.layers {
		if le.refs == 0 && le.pins == 0 && le.size >= 0 {
			dropLayer(id, le)
		}
	}
	var candidates []*imageEntry
	for d, e := range c.images {
		if e.leases == 0 && d != keep {
			candidates = append(candidates, e)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].lastUse.Before(candidates[j].lastUse) })
	for _, e := range candidates {
		if c.size <= c.opts.MaxBytes {
			break
		}
		delete(c.images, e.rec.Digest)
		if err := os.Remove(c.recordPath(e.rec.Digest)); err != nil {
			c.log.Error("evicting image record", "digest", e.rec.Digest, "error", err)
		}
		for _, l := range e.rec.Layers {
			le := c.layers[l.DiffID]
			le.refs--
			if le.refs == 0 && le.pins == 0 {
				dropLayer(l.DiffID, le)
			}
		}
		c.log.Info("image evicted", "digest", e.rec.Digest, "source", e.rec.Source, "last_use", e.lastUse)
	}
	if c.size > c.opts.MaxBytes {
		c.log.Warn("image cache over its size limit: the rest is in use", "bytes", c.size, "max_bytes", c.opts.MaxBytes)
	}
	return doomed
}

func (c *Cache) removeAll(paths []string) {
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			c.log.Error("removing evicted layer", "path", p, "error", err)
		}
	}
}
