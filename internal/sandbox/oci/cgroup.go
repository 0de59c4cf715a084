// Cgroups of a sandbox.
//
// Each attempt gets one cgroup of its own, <CgroupParent>/<name>, which
// carries the job's limits (memory, pids, CPU) and is created and removed by
// this package. Each step's container is a child of it,
// <CgroupParent>/<name>/s<n>, created by the OCI runtime from the spec's
// cgroupsPath and removed by it when the container is deleted. The spec asks
// the runtime for no limits of its own (only device rules): the limits sit one
// level up so that the evidence of an OOM kill survives the container: both
// runc and crun remove a container's cgroup as soon as its init exits, and
// with it the counters that say whether the kernel killed something for
// memory. The attempt's cgroup outlives every step; see oomWatch.
//
// On cgroup v1 and hybrid hosts the limits are written to the v1 memory, pids
// and cpu hierarchies; on a pure v2 host to the unified hierarchy, after
// enabling the controllers in every ancestor's cgroup.subtree_control. The
// runtimes create <CgroupParent>/<name> in every hierarchy they join (all v1
// hierarchies, the named systemd one, and the unified one on hybrid hosts)
// and leave it behind, so removal walks every cgroup mount of the host.
//
// A cgroup directory can only be removed once it has no processes and no
// children; removal kills what is left (cgroup.kill on v2, SIGKILL to every
// PID in cgroup.procs otherwise) and retries until the tree is gone or ctx is
// done.
package oci

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/job"
)

// cgroupHost describes the cgroup hierarchies of this host.
type cgroupHost struct {
	v2     bool              // limits go to the unified hierarchy
	v1     map[string]string // v1 controller ("memory", "pids", "cpu") → mount point
	v2Root string            // the unified hierarchy's mount point, if mounted
	mounts []string          // every cgroup (v1 or v2) mount point, for removal
	// hybridV2Controllers: a cgroup2 mount beside v1 hierarchies has
	// controllers bound to it, which crun refuses to work with.
	hybridV2Controllers bool
}

// limited lists the v1 controllers this package writes limits to.
var limited = []string{"memory", "pids", "cpu"}

// discoverCgroups reads the cgroup mounts of this process's mount namespace.
func discoverCgroups() (*cgroupHost, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	h := &cgroupHost{v1: make(map[string]string)}
	for _, m := range parseMountinfo(b) {
		switch m.fstype {
		case "cgroup2":
			h.mounts = append(h.mounts, m.point)
			if h.v2Root == "" || m.point == "/sys/fs/cgroup" {
				h.v2Root = m.point
			}
		case "cgroup":
			h.mounts = append(h.mounts, m.point)
			for opt := range strings.SplitSeq(m.superOpts, ",") {
				if slices.Contains(limited, opt) {
					if _, seen := h.v1[opt]; !seen {
						h.v1[opt] = m.point
					}
				}
			}
		}
	}
	switch {
	case len(h.v1) > 0:
		if h.v2Root != "" {
			c, _ := os.ReadFile(filepath.Join(h.v2Root, "cgroup.controllers"))
			h.hybridV2Controllers = len(bytes.TrimSpace(c)) > 0
		}
	case h.v2Root != "":
		h.v2 = true
	default:
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return h, nil
}

// missing lists the controllers the limits need that this host lacks.
func (h *cgroupHost) missing() []string {
	var miss []string
	if h.v2 {
		c, err := os.ReadFile(filepath.Join(h.v2Root, "cgroup.controllers"))
		have := strings.Fields(string(c))
		for _, ctl := range limited {
			if err != nil || !slices.Contains(have, ctl) {
				miss = append(miss, ctl+" (cgroup v2)")
			}
		}
		return miss
	}
	for _, ctl := range limited {
		if _, ok := h.v1[ctl]; !ok {
			miss = append(miss, ctl+" (cgroup v1)")
		}
	}
	return miss
}

func (h *cgroupHost) version() string {
	switch {
	case h.v2:
		return "v2"
	case h.v2Root != "":
		return "hybrid (v1 controllers, v2 mounted)"
	default:
		return "v1"
	}
}

// create makes the attempt's cgroup rel (a path below the hierarchy roots)
// and writes its limits. Zero fields of res are not limited.
func (h *cgroupHost) create(rel string, res job.Resources) error {
	if h.v2 {
		return h.createV2(rel, res)
	}
	for _, ctl := range limited {
		if err := os.MkdirAll(filepath.Join(h.v1[ctl], rel), 0o755); err != nil {
			return fmt.Errorf("creating cgroup: %w", err)
		}
	}
	mem := filepath.Join(h.v1["memory"], rel)
	if res.Memory > 0 {
		v := strconv.FormatInt(int64(res.Memory), 10)
		if err := writeFile(mem, "memory.limit_in_bytes", v); err != nil {
			return err
		}
		// No swapping past the limit, where swap accounting is on.
		if err := writeFile(mem, "memory.memsw.limit_in_bytes", v); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if res.Pids > 0 {
		if err := writeFile(filepath.Join(h.v1["pids"], rel), "pids.max", strconv.Itoa(res.Pids)); err != nil {
			return err
		}
	}
	if res.CPUs > 0 {
		cpu := filepath.Join(h.v1["cpu"], rel)
		if err := writeFile(cpu, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		if err := writeFile(cpu, "cpu.cfs_quota_us", strconv.FormatInt(cpuQuota(res.CPUs), 10)); err != nil {
			return err
		}
	}
	return nil
}

// cpuPeriod is the CFS period, in microseconds, of the CPU limit.
const cpuPeriod = 100_000

func cpuQuota(cpus float64) int64 {
	return max(1000, int64(math.Ceil(cpus*cpuPeriod)))
}

func (h *cgroupHost) createV2(rel string, res job.Resources) error {
	// Enable the controllers from the root down to the attempt's cgroup, so
	// that the attempt's cgroup has the limit files and its children (the
	// steps' containers) are accounted.
	dir := h.v2Root
	for _, part := range strings.Split(rel, "/") {
		for _, ctl := range limited {
			if err := writeFile(dir, "cgroup.subtree_control", "+"+ctl); err != nil {
				return fmt.Errorf("enabling the %s controller: %w", ctl, err)
			}
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating cgroup: %w", err)
		}
	}
	for _, ctl := range limited {
		if err := writeFile(dir, "cgroup.subtree_control", "+"+ctl); err != nil {
			return fmt.Errorf("enabling the %s controller: %w", ctl, err)
		}
	}
	if res.Memory > 0 {
		if err := writeFile(dir, "memory.max", strconv.FormatInt(int64(res.Memory), 10)); err != nil {
			return err
		}
		if err := writeFile(dir, "memory.swap.max", "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if res.Pids > 0 {
		if err := writeFile(dir, "pids.max", strconv.Itoa(res.Pids)); err != nil {
			return err
		}
	}
	if res.CPUs > 0 {
		if err := writeFile(dir, "cpu.max", fmt.Sprintf("%d %d", cpuQuota(res.CPUs), cpuPeriod)); err != nil {
			return err
		}
	}
	return nil
}

// oomWatch tells whether the kernel's OOM killer acted in an attempt's
// cgroup since the last look.
//
// On v2, memory.events counts OOM kills in a cgroup and all its descendants,
// so the watch compares the attempt cgroup's counter with its last value. On
// v1 there is no such counter: memory.oom_control's oom_kill is kept in the
// victim's own cgroup — the step's container, which the runtime removes — and
// is not propagated. The watch instead registers an eventfd for OOM
// notifications of the attempt's cgroup (cgroup.event_control), which the
// kernel signals when the cgroup, where the limit is, runs out of memory.
type oomWatch struct {
	events string // v2: memory.events of the attempt's cgroup
	last   int64
	efd    int // v1: the eventfd, or -1
	ofd    int // v1: memory.oom_control, kept open for the registration
}

// watchOOM starts watching cgroup rel.
func (h *cgroupHost) watchOOM(rel string) (*oomWatch, error) {
	if h.v2 {
		w := &oomWatch{events: filepath.Join(h.v2Root, rel, "memory.events"), efd: -1, ofd: -1}
		var err error
		w.last, err = w.counter()
		return w, err
	}
	dir := filepath.Join(h.v1["memory"], rel)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watching for OOM kills: %w", err)
	}
	ofd, err := unix.Open(filepath.Join(dir, "memory.oom_control"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("watching for OOM kills: %w", err)
	}
	if err := writeFile(dir, "cgroup.event_control", fmt.Sprintf("%d %d", efd, ofd)); err != nil {
		unix.Close(efd)
		unix.Close(ofd)
		return nil, fmt.Errorf("watching for OOM kills: %w", err)
	}
	return &oomWatch{efd: efd, ofd: ofd}, nil
}

// fired reports whether an OOM kill happened since the last call (or since
// the watch started).
func (w *oomWatch) fired() (bool, error) {
	if w.efd < 0 {
		n, err := w.counter()
		if err != nil {
			return false, err
		}
		fired := n > w.last
		w.last = n
		return fired, nil
	}
	var buf [8]byte
	_, err := unix.Read(w.efd, buf[:])
	switch {
	case errors.Is(err, unix.EAGAIN):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading OOM notifications: %w", err)
	}
	return true, nil
}

func (w *oomWatch) counter() (int64, error) {
	b, err := os.ReadFile(w.events)
	if err != nil {
		return 0, fmt.Errorf("reading the OOM counter: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("reading the OOM counter: no oom_kill in %s", w.events)
}

func (w *oomWatch) close() {
	if w == nil {
		return
	}
	if w.efd >= 0 {
		unix.Close(w.efd)
		unix.Close(w.ofd)
	}
}

// pidsDir returns the directory of cgroup rel in the hierarchy that has the
// pids controller.
func (h *cgroupHost) pidsDir(rel string) string {
	if h.v2 {
		return filepath.Join(h.v2Root, rel)
	}
	return filepath.Join(h.v1["pids"], rel)
}

// pidsExhausted reports whether the tasks of the step cgroup dir (a
// directory) reached the pids limit of the attempt's cgroup rel: its
// pids.peak is at the limit or, where there is no pids.peak, a fork in it
// failed.
func (h *cgroupHost) pidsExhausted(dir, rel string) bool {
	if dir == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(h.pidsDir(rel), "pids.max"))
	if err != nil {
		return false
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return false // "max"
	}
	if b, err := os.ReadFile(filepath.Join(dir, "pids.peak")); err == nil {
		peak, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return err == nil && peak >= limit
	}
	b, err = os.ReadFile(filepath.Join(dir, "pids.events"))
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "max "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return err == nil && n > 0
		}
	}
	return false
}

// children lists the names of the cgroups directly below rel in any
// hierarchy.
func (h *cgroupHost) children(rel string) []string {
	seen := make(map[string]bool)
	for _, mnt := range h.mounts {
		entries, _ := os.ReadDir(filepath.Join(mnt, rel))
		for _, e := range entries {
			if e.IsDir() {
				seen[e.Name()] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// exists reports whether cgroup rel exists in any hierarchy.
func (h *cgroupHost) exists(rel string) bool {
	for _, mnt := range h.mounts {
		if _, err := os.Stat(filepath.Join(mnt, rel)); err == nil {
			return true
		}
	}
	return false
}

// remove deletes cgroup rel and its descendants in every hierarchy, killing
// any process left in them. It keeps trying until ctx is done.
func (h *cgroupHost) remove(ctx context.Context, rel string) error {
	delay := time.Millisecond
	for {
		var errs []error
		for _, mnt := range h.mounts {
			if err := removeCgroupTree(filepath.Join(mnt, rel)); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("removing cgroup %s: %w", rel, errors.Join(errs...))
		case <-t.C:
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

// removeCgroupTree kills the processes of dir and its descendants and
// removes the directories, deepest first. A tree that is already gone is not
// an error.
func removeCgroupTree(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	// cgroup.kill (v2, Linux 5.14) kills the whole subtree atomically, even
	// a fork bomb; elsewhere every listed process gets SIGKILL.
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		for _, d := range dirs {
			killProcs(d)
		}
	}
	var errs []error
	for _, d := range slices.Backward(dirs) {
		if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// killProcs sends SIGKILL to every process listed in cgroup dir.
func killProcs(dir string) {
	f, err := os.Open(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if pid, err := strconv.Atoi(sc.Text()); err == nil && pid > 0 {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func writeFile(dir, name, value string) error {
	if err := os.WriteFile(filepath.Join(dir, name), []byte(value), 0); err != nil {
		return fmt.Errorf("setting %s: %w", name, err)
	}
	return nil
}

// mountEntry is one line of a mountinfo file.
type mountEntry struct {
	point     string // mount point, octal escapes decoded
	fstype    string
	source    string
	superOpts string
}

// parseMountinfo parses /proc/<pid>/mountinfo.
func parseMountinfo(b []byte) []mountEntry {
	var out []mountEntry
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		out = append(out, mountEntry{point: unescapeOctal(f[4]), fstype: g[0], source: g[1], superOpts: g[2]})
	}
	return out
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
