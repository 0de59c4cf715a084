// Package imagetest makes container images for tests without the internet:
// a static busybox image built from the host's busybox-static binary,
// hand-made layers (hostile ones included), and an in-process registry on
// loopback that serves them and counts the requests it gets.
package imagetest

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/testenv"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is the time stamped on every entry and config made here, so that a
// test image has the same digest on every run.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// busyboxPaths are where Debian's busybox-static puts its binary.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// BusyboxPath returns the host's static busybox binary, or an error saying
// what to install.
func BusyboxPath() (string, error) {
	var errs []error
	for _, p := range busyboxPaths {
		f, err := elf.Open(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if !static {
			errs = append(errs, fmt.Errorf("%s is dynamically linked", p))
			continue
		}
		return p, nil
	}
	return "", fmt.Errorf("no static busybox (apt-get install busybox-static): %w", errors.Join(errs...))
}

// File is one entry of a hand-made layer. Type defaults to a regular file;
// Mode to 0644 for files and 0755 for directories.
type File struct {
	Name     string
	Type     byte
	Mode     int64
	Body     string
	Linkname string
	Uid, Gid int
	Devmajor int64
	Devminor int64
	Xattrs   map[string]string // stored as SCHILY.xattr PAX records
}

// Dir, Reg, Symlink and Hardlink are shorthands for common entries.
func Dir(name string, mode int64) File { return File{Name: name, Type: tar.TypeDir, Mode: mode} }
func Reg(name, body string, mode int64) File {
	return File{Name: name, Type: tar.TypeReg, Body: body, Mode: mode}
}
func Symlink(name, target string) File {
	return File{Name: name, Type: tar.TypeSymlink, Linkname: target, Mode: 0o777}
}
func Hardlink(name, target string) File {
	return File{Name: name, Type: tar.TypeLink, Linkname: target}
}

// Tar returns an uncompressed tar of files, in order, names as given (not
// cleaned: hostile names stay hostile).
func Tar(t testing.TB, files ...File) []byte {
	t.Helper()
	b, err := tarBytes(files)
	if err != nil {
		t.Fatalf("building tar: %v", err)
	}
	return b
}

func tarBytes(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		typ := f.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{
			Typeflag: typ,
			Name:     f.Name,
			Linkname: f.Linkname,
			Mode:     mode,
			Uid:      f.Uid,
			Gid:      f.Gid,
			Devmajor: f.Devmajor,
			Devminor: f.Devminor,
			ModTime:  Epoch,
			Format:   tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(f.Body))
		}
		for k, v := range f.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = make(map[string]string)
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, f.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Layer returns a gzip-compressed layer of files.
func Layer(t testing.TB, files ...File) v1.Layer {
	t.Helper()
	l, err := layerOf(Tar(t, files...))
	if err != nil {
		t.Fatalf("building layer: %v", err)
	}
	return l
}

func layerOf(tb []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tb)), nil
	})
}

// Image stacks layers (bottom first) into an image for this host's
// platform with cfg.
func Image(t testing.TB, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := imageOf(cfg, layers)
	if err != nil {
		t.Fatalf("building image: %v", err)
	}
	return img
}

func imageOf(cfg v1.Config, layers []v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: Epoch}
	cf.History = nil
	return mutate.ConfigFile(img, cf)
}

// DefaultPath is the PATH of the busybox image.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var busybox = sync.OnceValues(func() (v1.Image, error) {
	bin, err := BusyboxPath()
	if err != nil {
		return nil, err
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	files := []File{
		Dir("bin", 0o755), Dir("sbin", 0o755), Dir("usr", 0o755), Dir("usr/bin", 0o755), Dir("usr/sbin", 0o755),
		Dir("etc", 0o755), Dir("root", 0o700), Dir("home", 0o755), Dir("tmp", 0o1777),
		Dir("proc", 0o555), Dir("sys", 0o555), Dir("dev", 0o755), Dir("work", 0o755),
		Reg("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
		Reg("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644),
		Reg("bin/busybox", string(body), 0o755),
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	for _, a := range applets {
		if a == "bin/busybox" || path.IsAbs(a) || strings.Contains(a, "..") {
			continue
		}
		files = append(files, Symlink(a, "/bin/busybox"))
	}
	tb, err := tarBytes(files)
	if err != nil {
		return nil, err
	}
	l, err := layerOf(tb)
	if err != nil {
		return nil, err
	}
	return imageOf(v1.Config{Env: []string{DefaultPath}, Cmd: []string{"sh"}}, []v1.Layer{l})
})

// Busybox returns an image holding the host's static busybox as
// /bin/busybox with a symlink for each applet (sh, echo, cat, ls, id,
// sleep, mount, ...), /etc/passwd and /etc/group (root, nobody), /tmp and
// empty mount points. Built once per process; a missing busybox-static ends
// the test through testenv.Missing.
func Busybox(t testing.TB) v1.Image {
	t.Helper()
	img, err := busybox()
	if err != nil {
		testenv.Missing(t, "busybox-static", err)
	}
	return img
}

// Registry is an in-process OCI registry (go-containerregistry's) on
// loopback that records the requests it serves.
type Registry struct {
	// Host is "127.0.0.1:PORT"; image references start with it.
	Host string

	username, password string
	mu                 sync.Mutex
	requests           []string
}

// RegistryOpts configure a Registry. With a Username, every request must
// carry these basic-auth credentials.
type RegistryOpts struct {
	Username string
	Password string
}

// NewRegistry starts a registry that stops when the test ends.
func NewRegistry(t testing.TB, opts RegistryOpts) *Registry {
	t.Helper()
	r := &Registry{username: opts.Username, password: opts.Password}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests = append(r.requests, req.Method+" "+req.URL.Path)
		r.mu.Unlock()
		if r.username != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.username || p != r.password {
				w.Header().Set("WWW-Authenticate", `Basic realm="imagetest"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *Registry) remoteOpts() []remote.Option {
	if r.username == "" {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.username, Password: r.password})}
}

// Push stores img as repoTag ("busybox:1") and returns the full reference
// and the manifest digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) (ref, digest string) {
	t.Helper()
	tag, err := name.NewTag(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, r.remoteOpts()...); err != nil {
		t.Fatalf("pushing %s: %v", tag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.String(), d.String()
}

// PushIndex stores a multi-platform index as repoTag and returns the full
// reference and the index digest.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) (ref, digest string) {
	t.Helper()
	tag, err := name.NewTag(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx, r.remoteOpts()...); err != nil {
		t.Fatalf("pushing %s: %v", tag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.String(), d.String()
}

// Requests returns the requests served so far, as "METHOD /path".
func (r *Registry) Requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.requests...)
}

// Count returns how many requests so far had method and a path containing
// pathPart ("" matches every path).
func (r *Registry) Count(method, pathPart string) int {
	n := 0
	for _, req := range r.Requests() {
		m, p, _ := strings.Cut(req, " ")
		if m == method && strings.Contains(p, pathPart) {
			n++
		}
	}
	return n
}

// Reset forgets the requests recorded so far.
func (r *Registry) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// WriteOCILayout adds img to the OCI image layout at dir, creating it if
// needed, annotated with tag (org.opencontainers.image.ref.name) unless tag
// is "".
func WriteOCILayout(t testing.TB, dir string, img v1.Image, tag string) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		t.Fatalf("writing layout: %v", err)
	}
	var opts []layout.Option
	if tag != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		t.Fatalf("writing layout: %v", err)
	}
}

// WriteDockerArchive writes img as a `docker save` tarball at file, saved
// as tag ("busybox:1").
func WriteDockerArchive(t testing.TB, file string, img v1.Image, tag string) {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(file, ref, img); err != nil {
		t.Fatalf("writing docker archive: %v", err)
	}
}
