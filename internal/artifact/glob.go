package artifact

import (
	"fmt"
	"path"
	"strings"
)

// pattern is one compiled artifact pattern.
type pattern struct {
	text string
	segs []string
}

// compile checks and splits the patterns (see the package comment).
func compile(globs []string) ([]pattern, error) {
	pats := make([]pattern, 0, len(globs))
	for _, g := range globs {
		if msg := checkPath(g); msg != "" {
			return nil, fmt.Errorf("artifact pattern %q %s", g, msg)
		}
		var segs []string
		for _, s := range strings.Split(g, "/") {
			if s == "**" && len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue // "**/**" is "**", and matching it twice costs
			}
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("artifact pattern %q: segment %q: %w", g, s, err)
			}
			segs = append(segs, s)
		}
		pats = append(pats, pattern{text: g, segs: segs})
	}
	return pats, nil
}

// selects reports whether the pattern matches name (split into segments) or
// one of its parent directories.
func (p pattern) selects(name []string) bool { return selects(p.segs, name) }

func selects(pat, name []string) bool {
	if len(pat) == 0 {
		return true // pat matched name or one of its parents
	}
	if pat[0] == "**" {
		for i := 0; i <= len(name); i++ {
			if selects(pat[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	if len(name) == 0 {
		return false
	}
	if ok, _ := path.Match(pat[0], name[0]); !ok {
		return false
	}
	return selects(pat[1:], name[1:])
}

// mayReachInto reports whether the pattern can select anything below the
// directory dir (split into segments), so that a walk can skip the rest.
func (p pattern) mayReachInto(dir []string) bool {
	pat := p.segs
	for ; len(dir) > 0; dir = dir[1:] {
		if len(pat) == 0 || pat[0] == "**" {
			return true
		}
		if ok, _ := path.Match(pat[0], dir[0]); !ok {
			return false
		}
		pat = pat[1:]
	}
	return true
}

// checkPath says what makes p unfit as a path relative to a directory that
// must not be left, or "" if nothing does.
func checkPath(p string) string {
	switch {
	case p == "":
		return "is empty"
	case strings.IndexByte(p, 0) >= 0:
		return "contains a NUL byte"
	case path.IsAbs(p):
		return "is absolute"
	case p == ".." || strings.HasPrefix(p, "../"):
		return "escapes the directory"
	case path.Clean(p) != p:
		return fmt.Sprintf("is not clean (%q)", path.Clean(p))
	case p == ".":
		return "names the directory itself"
	}
	return ""
}
