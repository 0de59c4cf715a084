package oci

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
)

// stepUser is the user a step runs as, in the container's ID space.
type stepUser struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups
}

// String is "uid:gid[:group,group...]", as the init's userArg takes it.
func (u stepUser) String() string {
	s := strconv.FormatUint(uint64(u.uid), 10) + ":" + strconv.FormatUint(uint64(u.gid), 10)
	if len(u.groups) > 0 {
		var gs []string
		for _, g := range u.groups {
			gs = append(gs, strconv.FormatUint(uint64(g), 10))
		}
		s += ":" + strings.Join(gs, ",")
	}
	return s
}

// parseStepUser reads what String wrote.
func parseStepUser(s string) (stepUser, error) {
	f := strings.Split(s, ":")
	if len(f) < 2 || len(f) > 3 {
		return stepUser{}, fmt.Errorf("bad user %q", s)
	}
	var ids []uint32
	for _, part := range append(f[:2:2], strings.Split(strings.Join(f[2:], ""), ",")...) {
		if part == "" {
			continue
		}
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil {
			return stepUser{}, fmt.Errorf("bad user %q: %w", s, err)
		}
		ids = append(ids, uint32(n))
	}
	if len(ids) < 2 {
		return stepUser{}, fmt.Errorf("bad user %q", s)
	}
	return stepUser{uid: ids[0], gid: ids[1], groups: ids[2:]}, nil
}

// resolveUser turns an image's user ("", "uid", "uid:gid", "name",
// "name:group", as in an image config's User) into IDs, reading names from
// the image's /etc/passwd and /etc/group. "" is root. The files are read
// through an os.Root, so an image's symlinks cannot point the lookup at the
// host's files.
func resolveUser(rootfs, spec string) (stepUser, error) {
	if spec == "" {
		return stepUser{}, nil
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return stepUser{}, fmt.Errorf("resolving user %q: %w", spec, err)
	}
	defer root.Close()

	var u stepUser
	var userName string
	if id, err := strconv.ParseUint(name, 10, 32); err == nil {
		u.uid = uint32(id)
		// A numeric user without a group takes the group of its passwd
		// entry, if it has one, else group 0 (as Docker does).
		if e, ok, err := lookup(root, "etc/passwd", func(f []string) bool { return f[2] == name }); err != nil {
			return stepUser{}, fmt.Errorf("resolving user %q: %w", spec, err)
		} else if ok {
			userName = e[0]
			if gid, err := strconv.ParseUint(e[3], 10, 32); err == nil {
				u.gid = uint32(gid)
			}
		}
	} else {
		e, ok, err := lookup(root, "etc/passwd", func(f []string) bool { return f[0] == name })
		if err != nil {
			return stepUser{}, fmt.Errorf("resolving user %q: %w", spec, err)
		}
		if !ok {
			return stepUser{}, fmt.Errorf("resolving user %q: no user %q in the image's /etc/passwd", spec, name)
		}
		uid, err1 := strconv.ParseUint(e[2], 10, 32)
		gid, err2 := strconv.ParseUint(e[3], 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return stepUser{}, fmt.Errorf("resolving user %q: bad /etc/passwd entry: %w", spec, err)
		}
		u.uid, u.gid, userName = uint32(uid), uint32(gid), name
	}
	if hasGroup {
		if id, err := strconv.ParseUint(group, 10, 32); err == nil {
			u.gid = uint32(id)
		} else {
			e, ok, err := lookup(root, "etc/group", func(f []string) bool { return f[0] == group })
			if err != nil {
				return stepUser{}, fmt.Errorf("resolving user %q: %w", spec, err)
			}
			if !ok {
				return stepUser{}, fmt.Errorf("resolving user %q: no group %q in the image's /etc/group", spec, group)
			}
			gid, err := strconv.ParseUint(e[2], 10, 32)
			if err != nil {
				return stepUser{}, fmt.Errorf("resolving user %q: bad /etc/group entry: %w", spec, err)
			}
			u.gid = uint32(gid)
		}
	}
	if userName != "" {
		// Supplementary groups: every group listing the user as a member.
		_, _, err := lookup(root, "etc/group", func(f []string) bool {
			if len(f) >= 4 && slices.Contains(strings.Split(f[3], ","), userName) {
				if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil && uint32(gid) != u.gid {
					u.groups = append(u.groups, uint32(gid))
				}
			}
			return false
		})
		if err != nil {
			return stepUser{}, fmt.Errorf("resolving user %q: %w", spec, err)
		}
	}
	return u, nil
}

// lookup returns the fields of the first line of a colon-separated file (at
// least 4 fields) for which match is true. A missing file matches nothing.
func lookup(root *os.Root, name string, match func([]string) bool) ([]string, bool, error) {
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 4 {
			continue
		}
		if match(fields) {
			return fields, true, nil
		}
	}
	return nil, false, sc.Err()
}
