package runtimes

// The image `airlock up` gives steps that name none, so a first try works on
// a host that reaches no registry: the host's static busybox, with a link
// per applet, written as an OCI layout into the data directory.

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/airlock-run/airlock/internal/sandbox/oci"
)

// busyboxCandidates are where Debian's busybox-static installs the binary.
var busyboxCandidates = []string{"/bin/busybox", "/usr/bin/busybox"}

// BusyboxImage writes the busybox image under dir (once) and returns its
// reference (oci-layout:DIR/busybox). It fails when the host has no static
// busybox.
func BusyboxImage(dir string) (string, error) {
	target := filepath.Join(dir, "busybox")
	ref := "oci-layout:" + target
	if _, err := os.Stat(filepath.Join(target, "index.json")); err == nil {
		return ref, nil
	}
	var bin string
	for _, c := range busyboxCandidates {
		if ok, _ := oci.IsStatic(c); ok {
			bin = c
			break
		}
	}
	if bin == "" {
		return "", errors.New("no static busybox on this host (apt-get install busybox-static) for the default image; or pass --default-image")
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	list, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("listing busybox applets: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "tmp", "work", "proc", "sys", "dev"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch})
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	} {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content)), ModTime: epoch})
		tw.Write([]byte(content))
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body)), ModTime: epoch})
	tw.Write(body)
	applets := strings.Fields(string(list))
	sort.Strings(applets)
	for _, a := range applets {
		if a == "bin/busybox" || path.IsAbs(a) || strings.Contains(a, "..") {
			continue
		}
		tw.WriteHeader(&tar.Header{Name: a, Typeflag: tar.TypeSymlink, Linkname: "/bin/busybox", ModTime: epoch})
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	tarBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: []string{"sh"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".busybox-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return "", err
	}
	if err := p.AppendImage(img); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, target); err != nil {
		return "", err
	}
	return ref, nil
}
