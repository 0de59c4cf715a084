// Package hostfs holds the host-filesystem chores every sandbox runtime
// shares: finding what is mounted under a directory, and removing a
// sandbox's directory tree without ever deleting through a mount a step left
// behind (a step running as root can bind-mount the host's / into its
// workspace).
package hostfs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// MountsUnder returns the mount points of this process's mount namespace that
// are dir or lie under it, longest first (the order to unmount them in).
func MountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	var mps []string
	for _, mp := range mountPoints(b) {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	slices.SortStableFunc(mps, func(a, b string) int { return len(b) - len(a) })
	return mps, nil
}

// RemoveTree removes dir and everything under it. A step may leave
// directories without write or search permission, which os.RemoveAll cannot
// empty unless the executor is root; those are made accessible and the
// removal retried. A mount point under dir makes RemoveTree refuse rather
// than delete what is mounted there.
func RemoveTree(dir string) error {
	mps, err := MountsUnder(dir)
	if err != nil {
		return fmt.Errorf("checking for mounts under %s: %w", dir, err)
	}
	if len(mps) > 0 {
		return fmt.Errorf("not removing %s: %s is mounted under it", dir, mps[0])
	}
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	// WalkDir calls fn for a directory before reading it, so each directory
	// is made readable before it is entered. Symlinks are not followed.
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() && err == nil {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// mountPoints returns the mount points listed in a mountinfo file, with their
// octal escapes ("\040" for a space) decoded.
func mountPoints(mountinfo []byte) []string {
	var mps []string
	for line := range strings.SplitSeq(string(mountinfo), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mps = append(mps, unescapeOctal(f[4]))
	}
	return mps
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }
