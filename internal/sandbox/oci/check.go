package oci

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/airlock-run/airlock/internal/image"
)

// Item is one thing the runtime needs from the host, and whether it has it.
type Item struct {
	Name   string // "OCI runtime", "container init", "cgroups", ...
	OK     bool
	Detail string // what was found, or what is missing and how to get it
}

// Check reports, item by item, what this host offers the runtime configured
// by opts and what it lacks; New refuses to start when any item is not OK.
// It creates nothing but a short-lived user namespace and a test mount in
// the system's temporary directory.
func Check(opts Options) []Item {
	h, _ := probe(opts)
	h.close()
	return h.items
}

// hostInfo is what probe found.
type hostInfo struct {
	items    []Item
	binary   string
	flavor   string
	version  string
	init     string
	cg       *cgroupHost
	cgParent string
	platform string // runsc only
	ids      *idMap
	userns   *os.File
}

func (h *hostInfo) close() {
	if h.userns != nil {
		h.userns.Close()
	}
}

func (h *hostInfo) add(name string, err error, detail string) {
	if err != nil {
		h.items = append(h.items, Item{Name: name, Detail: err.Error()})
		return
	}
	h.items = append(h.items, Item{Name: name, OK: true, Detail: detail})
}

// probe finds what the runtime needs; its error lists every missing item.
func probe(opts Options) (*hostInfo, error) {
	h := &hostInfo{}
	if opts.Runsc != nil {
		h.add("runsc", h.findRunsc(opts.Binary), "")
	} else {
		h.add("OCI runtime", h.findBinary(opts.Binary), "")
	}
	if len(h.items) > 0 && h.items[0].OK {
		h.items[0].Detail = fmt.Sprintf("%s (%s)", h.binary, h.version)
	}
	if opts.Runsc != nil {
		h.platform = cmp.Or(opts.Runsc.Platform, DefaultRunscPlatform)
		h.add("gVisor platform", checkRunscPlatform(h.platform), h.platform)
	}
	h.add("container init", h.findInit(opts.Init), h.init)

	var err error
	h.cg, err = discoverCgroups()
	if err == nil {
		if miss := h.cg.missing(); len(miss) > 0 {
			err = fmt.Errorf("cgroup controllers missing: %s", strings.Join(miss, ", "))
		}
	}
	cgDetail := ""
	if h.cg != nil {
		cgDetail = "cgroup " + h.cg.version()
		if h.flavor == "crun" && h.cg.hybridV2Controllers {
			cgDetail += "; crun runs in a mount namespace without the cgroup2 mount"
		}
	}
	h.add("cgroups", err, cgDetail)
	h.cgParent = opts.CgroupParent
	if h.cgParent == "" {
		h.cgParent = DefaultCgroupParent
	}
	if !filepath.IsAbs(h.cgParent) || filepath.Clean(h.cgParent) != h.cgParent || h.cgParent == "/" {
		h.add("cgroup parent", fmt.Errorf("CgroupParent %q must be a clean absolute cgroup path other than /", h.cgParent), "")
	}

	if opts.NoUserNamespace {
		h.add("user namespace", nil, "disabled by configuration: root in a step is the host's root")
	} else {
		h.add("user namespace", h.userNamespace(opts.IDBase), "")
		if h.ids != nil {
			h.items[len(h.items)-1].Detail = fmt.Sprintf("container IDs 0-%d are host IDs %d-%d; ID-mapped mounts and overlays over ID-mapped layers work",
				h.ids.size-1, h.ids.base, h.ids.base+h.ids.size-1)
		}
	}

	var missing []string
	for _, tool := range []string{"mkfs.ext4", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "/dev/loop-control (the loop module)")
	}
	err = nil
	if len(missing) > 0 {
		err = fmt.Errorf("workspace disk limits need %s (apt-get install e2fsprogs mount)", strings.Join(missing, ", "))
	}
	h.add("workspace disk limit", err, "loop-mounted ext4")

	var errs []error
	for _, it := range h.items {
		if !it.OK {
			errs = append(errs, fmt.Errorf("%s: %s", it.Name, it.Detail))
		}
	}
	if len(errs) > 0 {
		return h, fmt.Errorf("this host cannot run it: %w", errors.Join(errs...))
	}
	return h, nil
}

func (h *hostInfo) findBinary(name string) error {
	candidates := []string{name}
	if name == "" {
		candidates = []string{"crun", "runc"}
	}
	var path string
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		return fmt.Errorf("%s not found in PATH (apt-get install runc, or crun)", strings.Join(candidates, " or "))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	out, err := exec.Command(abs, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", abs, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	h.binary, h.version = abs, strings.TrimSpace(first)
	switch {
	case strings.HasPrefix(h.version, "runc "):
		h.flavor = "runc"
	case strings.HasPrefix(h.version, "crun "):
		h.flavor = "crun"
	default:
		return fmt.Errorf("%s is neither runc nor crun: %q", abs, h.version)
	}
	return nil
}

// findRunsc finds gVisor's runsc: name is "" (runsc in PATH) or a path. It
// must be statically linked (runsc re-executes itself in an empty chroot)
// and know every flag the runtime passes.
func (h *hostInfo) findRunsc(name string) error {
	path, err := exec.LookPath(cmp.Or(name, "runsc"))
	if err != nil {
		return fmt.Errorf("%s not found (build a static runsc; see the gvisor package doc): %w", cmp.Or(name, "runsc in PATH"), err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	out, err := exec.Command(abs, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", abs, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if !strings.HasPrefix(first, "runsc ") {
		return fmt.Errorf("%s is not runsc: %q", abs, first)
	}
	h.binary, h.version, h.flavor = abs, strings.TrimSpace(first), "runsc"
	if static, err := IsStatic(abs); err != nil {
		return fmt.Errorf("reading %s: %w", abs, err)
	} else if !static {
		return fmt.Errorf("%s is dynamically linked; runsc must be built with CGO_ENABLED=0 (it re-executes itself in an empty chroot)", abs)
	}
	return checkRunscFlags(abs)
}

func (h *hostInfo) findInit(path string) error {
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this executable: %w", err)
		}
		path = self
	}
	static, err := IsStatic(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if !static {
		return fmt.Errorf("%s is dynamically linked and cannot run as PID 1 in an arbitrary image; build it with CGO_ENABLED=0, or set the init to such a build", path)
	}
	h.init = path
	return nil
}

// userNamespace creates the user namespace the runtime maps mounts with, and
// checks that an ID-mapped mount works.
func (h *hostInfo) userNamespace(base uint32) error {
	if base == 0 {
		base = DefaultIDBase
	}
	if uint64(base)+idRange > 1<<32-1 {
		return fmt.Errorf("IDBase %d leaves no room for %d IDs", base, idRange)
	}
	m := idMap{base: base, size: idRange}
	ns, err := newUserns(m.shift(), m.shift())
	if err != nil {
		return fmt.Errorf("%w (user namespaces disabled? see /proc/sys/user/max_user_namespaces)", err)
	}
	tmp, err := os.MkdirTemp("", "airlock-oci-idmap-")
	if err != nil {
		ns.Close()
		return err
	}
	defer os.RemoveAll(tmp)
	src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
	for _, d := range []string{src, dst} {
		if err := os.Mkdir(d, 0o755); err != nil {
			ns.Close()
			return err
		}
	}
	if err := idmapMount(src, dst, ns, false); err != nil {
		ns.Close()
		return fmt.Errorf("ID-mapped mounts (Linux 5.12+) do not work here: %w", err)
	}
	if err := unmountAll(dst); err != nil {
		ns.Close()
		return err
	}
	// Images' root filesystems are overlays over ID-mapped layers (mount.go).
	l, err := image.MountLayers(context.Background(), []string{src}, filepath.Join(tmp, "overlay"), image.MountOpts{
		IDMap: func(src, dst string) error { return idmapMount(src, dst, ns, true) },
		UID:   int(base),
		GID:   int(base),
	})
	if err == nil {
		err = l.Unmount()
	}
	if err != nil {
		ns.Close()
		return fmt.Errorf("overlayfs over ID-mapped layers (Linux 5.19+), for images' root filesystems, does not work here: %w", err)
	}
	h.ids, h.userns = &m, ns
	return nil
}
