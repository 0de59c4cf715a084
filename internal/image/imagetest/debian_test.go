package imagetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/testenv"
	"github.com/google/go-cmp/cmp"
)

// TestDebianImage builds (or loads) the Debian image, serves it from the
// in-process registry, pulls it through image.Cache and checks that the
// unpacked tree is a glibc system whose programs run.
func TestDebianImage(t *testing.T) {
	t.Parallel()
	img := Debian(t)

	// A second load in this process skips the memo and reads the cache,
	// as another test binary would.
	start := time.Now()
	again, built, _, err := loadOrBuildDebian(DebianSuite, CacheDir(), t.Logf)
	if err != nil {
		t.Fatalf("loading the cached image: %v", err)
	}
	t.Logf("cached load took %v", time.Since(start).Round(time.Microsecond))
	if built {
		t.Errorf("second load built the image again, want it from the cache")
	}
	d1, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := again.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("cached image digest %s, want %s", d2, d1)
	}

	reg := NewRegistry(t, RegistryOpts{})
	ref, digest := reg.Push(t, "debian:"+DebianSuite, img)
	c, err := image.New(image.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	start = time.Now()
	got, err := c.Get(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(got.Release)
	t.Logf("pulled and unpacked %s (%d MB on disk) in %v", ref, got.Size>>20, time.Since(start).Round(time.Millisecond))
	if got.Digest != digest {
		t.Errorf("Digest = %s, want %s", got.Digest, digest)
	}
	if len(got.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(got.Layers))
	}
	if diff := cmp.Diff([]string{DebianPath, "LANG=C.UTF-8"}, got.Config.Env); diff != "" {
		t.Errorf("Config.Env (-want +got):\n%s", diff)
	}
	layer := got.Layers[0]
	fi, err := os.Stat(filepath.Join(layer, "usr/bin/env"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("usr/bin/env: %v, %v; want an executable file", fi, err)
	}
	loaders, err := filepath.Glob(filepath.Join(layer, "usr/lib/*-linux-gnu*/ld-linux*.so*"))
	if err != nil || len(loaders) == 0 {
		t.Errorf("no glibc dynamic loader under usr/lib (%v)", err)
	}
	passwd, err := os.ReadFile(filepath.Join(layer, "etc/passwd"))
	if err != nil || !strings.Contains(string(passwd), "\nbuilder:x:1000:1000:") {
		t.Errorf("etc/passwd has no builder user (%v):\n%s", err, passwd)
	}
	entries, err := os.ReadDir(filepath.Join(layer, "dev"))
	if err != nil {
		t.Error(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			t.Errorf("dev/%s is a %v, want no device nodes in the image", e.Name(), e.Type())
		}
	}

	// The dynamic loader and libc work: run a dynamically linked program
	// chrooted into a copy-on-write mount of the image.
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root (mounting the image)", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
	l, err := image.Mount(context.Background(), got, filepath.Join(t.TempDir(), "layer"))
	if err != nil {
		testenv.Missing(t, "overlayfs", err)
	}
	t.Cleanup(func() {
		if err := l.Unmount(); err != nil {
			t.Error(err)
		}
	})
	cmd := exec.Command("/usr/bin/env", "-i", "/bin/bash", "-c", `echo "$BASH_VERSION" && id -un`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: l.Rootfs}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running bash in the image: %v: %s", err, out)
	}
	if lines := strings.Fields(string(out)); len(lines) != 2 || !strings.HasPrefix(lines[0], "5.") || lines[1] != "root" {
		t.Errorf("bash in the image printed %q, want its version and root", out)
	}
}

func TestDebianUserVariantSharesTheLayer(t *testing.T) {
	t.Parallel()
	base := Debian(t)
	user := DebianWith(t, DebianOpts{User: DebianUser})
	cf, err := user.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != DebianUser {
		t.Errorf("User = %q, want %q", cf.Config.User, DebianUser)
	}
	bl, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ul, err := user.Layers()
	if err != nil {
		t.Fatal(err)
	}
	bd, _ := bl[0].Digest()
	ud, _ := ul[0].Digest()
	if len(ul) != 1 || bd != ud {
		t.Errorf("user variant's layers %v, want the base layer %s", ul, bd)
	}
	b, _ := base.Digest()
	u, _ := user.Digest()
	if b == u {
		t.Errorf("user variant has the base image's digest %s", b)
	}
}

func TestAptURIs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"one-line", "# comment\ndeb http://deb.example/debian bookworm main\ndeb-src http://src.example/debian bookworm main\n",
			[]string{"http://deb.example/debian"}},
		{"one-line with options", "deb [arch=amd64 signed-by=/k.gpg] http://deb.example/debian bookworm main\n",
			[]string{"http://deb.example/debian"}},
		{"deb822", `Types: deb
URIs: http://deb.example/debian
Suites: bookworm bookworm-updates

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb deb-src
URIs: http://security.example/debian-security http://more.example/debian
`, []string{"http://deb.example/debian", "http://security.example/debian-security", "http://more.example/debian"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, aptURIs(tt.text)); diff != "" {
				t.Errorf("aptURIs (-want +got):\n%s", diff)
			}
		})
	}
}
