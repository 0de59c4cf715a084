package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/airlock-run/airlock/internal/image/imagetest"
	"github.com/airlock-run/airlock/internal/testenv"
	"golang.org/x/sys/unix"
)

func unpackFiles(t *testing.T, privileged bool, files ...imagetest.File) (string, unpackReport, error) {
	t.Helper()
	dir := t.TempDir()
	report, err := unpack(context.Background(), bytes.NewReader(imagetest.Tar(t, files...)), dir, unpackOpts{privileged: privileged})
	return dir, report, err
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat: %v", err)
	}
	return st
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "root", fmt.Errorf("running as uid %d", os.Geteuid()))
	}
}

// layerEntries exercise every kind of entry.
var layerEntries = []imagetest.File{
	imagetest.Dir("etc", 0o755),
	imagetest.Reg("etc/hosts", "127.0.0.1 localhost\n", 0o644),
	imagetest.Reg("etc/motd", "old", 0o644),
	imagetest.Reg("etc/motd", "new", 0o600), // a later entry wins
	{Name: "bin/su", Body: "su", Mode: 0o4755},
	{Name: "usr/bin/crontab", Body: "cron", Mode: 0o2755, Gid: 42},
	imagetest.Dir("tmp", 0o1777),
	imagetest.Symlink("bin/sh", "/bin/busybox"),
	imagetest.Symlink("lib", "usr/lib"),
	imagetest.Hardlink("bin/su-again", "bin/su"),
	{Name: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666},
	{Name: "dev/sda", Type: tar.TypeBlock, Devmajor: 8, Mode: 0o660, Gid: 6},
	{Name: "run/fifo", Type: tar.TypeFifo, Mode: 0o620},
	{Name: "home/u/notes", Body: "mine", Uid: 1000, Gid: 1000, Mode: 0o640},
	{Name: "bin/tool", Body: "t", Mode: 0o755, Xattrs: map[string]string{
		"user.note":                "kept",
		"trusted.overlay.redirect": "/etc", // never copied
		"user.overlay.opaque":      "y",    // never copied
	}},
	imagetest.Reg("etc/.wh.passwd", "", 0o644),   // hides a lower etc/passwd
	imagetest.Reg("etc/.wh.hosts", "", 0o644),    // this layer's etc/hosts wins
	imagetest.Reg("var/.wh..wh..opq", "", 0o644), // var hides lower layers' var
	imagetest.Dir("x", 0o755),
	imagetest.Reg("x/y", "y", 0o644),
	imagetest.Reg("x", "now a file", 0o644), // replaces the directory x
	imagetest.Reg("deep/a/b/c", "implicit parents", 0o644),
	imagetest.Dir("ro", 0o555),
	imagetest.Reg("ro/inside", "written before ro's mode is applied", 0o644),
}

func TestUnpackPrivileged(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir, report, err := unpackFiles(t, true, layerEntries...)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	checkCommon(t, dir)

	if st := lstat(t, filepath.Join(dir, "dev/null")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) || st.Mode&0o7777 != 0o666 {
		t.Errorf("dev/null: mode %o rdev %x, want char 1:3 0666", st.Mode, st.Rdev)
	}
	if st := lstat(t, filepath.Join(dir, "dev/sda")); st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(8, 0) || st.Gid != 6 {
		t.Errorf("dev/sda: mode %o rdev %x gid %d, want block 8:0 gid 6", st.Mode, st.Rdev, st.Gid)
	}
	if st := lstat(t, filepath.Join(dir, "home/u/notes")); st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("home/u/notes owned by %d:%d, want 1000:1000", st.Uid, st.Gid)
	}
	if st := lstat(t, filepath.Join(dir, "usr/bin/crontab")); st.Gid != 42 || st.Mode&0o7777 != 0o2755 {
		t.Errorf("usr/bin/crontab: gid %d mode %o, want 42 and 2755 (setgid survives chown)", st.Gid, st.Mode&0o7777)
	}
	if got := xattr(t, filepath.Join(dir, "var"), "trusted.overlay.opaque"); got != "y" {
		t.Errorf("var trusted.overlay.opaque = %q, want y", got)
	}
	if len(report.Skipped) != 2 { // the two overlay xattrs
		t.Errorf("skipped %q, want the two overlay xattrs", report.Skipped)
	}
}

func TestUnpackUnprivileged(t *testing.T) {
	t.Parallel()
	dir, report, err := unpackFiles(t, false, layerEntries...)
	if err != nil {
		t.Fatalf("unpack: %v", err)
	}
	checkCommon(t, dir)
	for _, p := range []string{"dev/null", "dev/sda"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists (%v), want it skipped", p, err)
		}
		if !slices.ContainsFunc(report.Skipped, func(s string) bool { return strings.HasPrefix(s, p+":") }) {
			t.Errorf("report %q does not mention %s", report.Skipped, p)
		}
	}
	if st := lstat(t, filepath.Join(dir, "home/u/notes")); int(st.Uid) != os.Geteuid() {
		t.Errorf("home/u/notes owned by %d, want the unpacker's %d", st.Uid, os.Geteuid())
	}
	if got := xattr(t, filepath.Join(dir, "var"), "user.overlay.opaque"); got != "y" {
		t.Errorf("var user.overlay.opaque = %q, want y", got)
	}
}

// checkCommon checks what does not depend on privileges.
func checkCommon(t *testing.T, dir string) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("reading %s: %v", p, err)
		}
		return string(b)
	}
	if got := read("etc/motd"); got != "new" {
		t.Errorf("etc/motd = %q, want the later entry's", got)
	}
	if st := lstat(t, filepath.Join(dir, "etc/motd")); st.Mode&0o7777 != 0o600 {
		t.Errorf("etc/motd mode %o, want 600", st.Mode&0o7777)
	}
	if got := read("etc/hosts"); got != "127.0.0.1 localhost\n" {
		t.Errorf("etc/hosts = %q: a whiteout removed this layer's own file", got)
	}
	if st := lstat(t, filepath.Join(dir, "etc/passwd")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("etc/passwd: mode %o rdev %d, want a 0/0 whiteout device", st.Mode, st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/.wh.passwd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the .wh. file itself was written: %v", err)
	}
	su := lstat(t, filepath.Join(dir, "bin/su"))
	if su.Mode&0o7777 != 0o4755 {
		t.Errorf("bin/su mode %o, want 4755", su.Mode&0o7777)
	}
	if again := lstat(t, filepath.Join(dir, "bin/su-again")); again.Ino != su.Ino || su.Nlink != 2 {
		t.Errorf("bin/su-again is not a hard link of bin/su (inodes %d, %d; links %d)", again.Ino, su.Ino, su.Nlink)
	}
	if st := lstat(t, filepath.Join(dir, "tmp")); st.Mode&0o7777 != 0o1777 {
		t.Errorf("tmp mode %o, want 1777", st.Mode&0o7777)
	}
	for link, want := range map[string]string{"bin/sh": "/bin/busybox", "lib": "usr/lib"} {
		if got, err := os.Readlink(filepath.Join(dir, link)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", link, got, err, want)
		}
	}
	if st := lstat(t, filepath.Join(dir, "run/fifo")); st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Mode&0o7777 != 0o620 {
		t.Errorf("run/fifo mode %o, want a fifo 0620", st.Mode)
	}
	if got := xattr(t, filepath.Join(dir, "bin/tool"), "user.note"); got != "kept" {
		t.Errorf("bin/tool user.note = %q, want kept", got)
	}
	for _, key := range []string{"trusted.overlay.redirect", "user.overlay.opaque"} {
		if got := xattr(t, filepath.Join(dir, "bin/tool"), key); got != "" {
			t.Errorf("bin/tool %s = %q, want it dropped", key, got)
		}
	}
	if got := read("x"); got != "now a file" {
		t.Errorf("x = %q, want the file that replaced the directory", got)
	}
	if got := read("deep/a/b/c"); got != "implicit parents" {
		t.Errorf("deep/a/b/c = %q", got)
	}
	if st := lstat(t, filepath.Join(dir, "deep/a")); st.Mode&0o7777 != 0o755 {
		t.Errorf("implicit directory mode %o, want 755", st.Mode&0o7777)
	}
	if st := lstat(t, filepath.Join(dir, "ro")); st.Mode&0o7777 != 0o555 {
		t.Errorf("ro mode %o, want 555", st.Mode&0o7777)
	}
	if st := lstat(t, filepath.Join(dir, "etc/hosts")); st.Mtim.Sec != imagetest.Epoch.Unix() {
		t.Errorf("etc/hosts mtime %d, want %d", st.Mtim.Sec, imagetest.Epoch.Unix())
	}
	if st := lstat(t, filepath.Join(dir, "etc")); st.Mtim.Sec != imagetest.Epoch.Unix() {
		t.Errorf("etc mtime %d, want %d (set after its entries)", st.Mtim.Sec, imagetest.Epoch.Unix())
	}
}

func xattr(t *testing.T, p, key string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, key, buf)
	if err == unix.ENODATA {
		return ""
	}
	if err != nil {
		t.Errorf("getxattr %s %s: %v", p, key, err)
		return ""
	}
	return string(buf[:n])
}

func TestUnpackRefusesHostileLayers(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files []imagetest.File
	}{
		{"dot-dot path", []imagetest.File{imagetest.Reg("../victim", "pwned", 0o644)}},
		{"dot-dot inside a path", []imagetest.File{imagetest.Reg("a/../../victim", "pwned", 0o644)}},
		{"absolute path", []imagetest.File{imagetest.Reg(victim, "pwned", 0o644)}},
		{"file through an absolute symlink", []imagetest.File{
			imagetest.Symlink("link", outside), imagetest.Reg("link/victim", "pwned", 0o644)}},
		{"file through a climbing symlink", []imagetest.File{
			imagetest.Symlink("up", "../../../../../../.."+outside), imagetest.Reg("up/victim", "pwned", 0o644)}},
		{"file through a symlink inside the layer", []imagetest.File{
			imagetest.Dir("etc", 0o755), imagetest.Symlink("conf", "etc"), imagetest.Reg("conf/x", "x", 0o644)}},
		{"directory through a symlink", []imagetest.File{
			imagetest.Symlink("link", outside), imagetest.Dir("link/sub", 0o755)}},
		{"symlink through a symlink", []imagetest.File{
			imagetest.Symlink("link", outside), imagetest.Symlink("link/victim", "/etc/shadow")}},
		{"whiteout through a symlink", []imagetest.File{
			imagetest.Symlink("link", outside), imagetest.Reg("link/.wh.victim", "", 0o644)}},
		{"opaque marker through a symlink", []imagetest.File{
			imagetest.Symlink("link", outside), imagetest.Reg("link/.wh..wh..opq", "", 0o644)}},
		{"hard link climbing out", []imagetest.File{imagetest.Hardlink("hl", "../victim")}},
		{"hard link to an absolute path", []imagetest.File{imagetest.Hardlink("hl", victim)}},
		{"hard link through a symlink", []imagetest.File{
			imagetest.Symlink("link", outside), imagetest.Hardlink("hl", "link/victim")}},
		{"hard link to a file not in the layer", []imagetest.File{imagetest.Hardlink("hl", "etc/passwd")}},
		{"hard link to a directory", []imagetest.File{imagetest.Dir("d", 0o755), imagetest.Hardlink("hl", "d")}},
		{"device through a symlink", []imagetest.File{
			imagetest.Symlink("link", outside), {Name: "link/null", Type: tar.TypeFifo, Mode: 0o644}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := unpackFiles(t, os.Geteuid() == 0, tc.files...)
			if !errors.Is(err, ErrUnsafeLayer) {
				t.Errorf("unpack: %v, want ErrUnsafeLayer", err)
			}
			ents, _ := os.ReadDir(outside)
			if b, _ := os.ReadFile(victim); len(ents) != 1 || string(b) != "untouched" {
				t.Errorf("outside the layer: %d entries, victim %q; want it untouched", len(ents), b)
			}
		})
	}
}
