package oci

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strconv"

	seccompprofile "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Capabilities returns the capability set of a step that runs as root in its
// container: Docker's default set without NET_RAW (raw and packet sockets:
// spoofing, sniffing, ARP games on a shared link), MKNOD (device nodes; the
// device cgroup and the user namespace make them useless anyway), AUDIT_WRITE
// (writing to the host's audit log) and SETFCAP (file capabilities on a
// workspace the executor later reads). What is left lets ordinary root-in-a-
// container work — chown, ignoring file permissions in /work and /tmp,
// switching to an unprivileged user, binding low ports, chroot — and, with a
// user namespace, applies only to what that namespace owns. A step running
// as a non-root user gets none: the kernel clears them at execve.
func Capabilities() []string { return slices.Clone(capabilities) }

var capabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_NET_BIND_SERVICE",
	"CAP_SETGID",
	"CAP_SETPCAP",
	"CAP_SETUID",
	"CAP_SYS_CHROOT",
}

// maskedPaths and readonlyPaths are Docker's: kernel interfaces a container
// has no business reading (host memory, keys, timers, scheduler internals)
// or writing (sysctls, IRQ routing, sysrq).
var (
	maskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// seccompFor returns Docker's default seccomp profile (moby/profiles) for a
// process with capabilities caps. The profile allows the syscalls that caps
// unlock and nothing that needs a capability outside them.
func seccompFor(caps []string) (*specs.LinuxSeccomp, error) {
	p, err := seccompprofile.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: caps},
	}})
	if err != nil {
		return nil, fmt.Errorf("building the default seccomp profile: %w", err)
	}
	return p, nil
}

// specVersion is the ociVersion of the specs written. The types are
// runtime-spec 1.3's, but crun 1.8 refuses any version it does not know
// ("unknown version specified"); every field set here exists in 1.0.2.
const specVersion = "1.0.2"

// specParams is what differs between steps.
type specParams struct {
	rootfs   string   // host path of the root filesystem
	work     string   // host path mounted at /work
	init     string   // host path of the init binary
	args     []string // the step's command, run by the init
	env      []string
	cwd      string // inside the container
	user     stepUser
	ids      *idMap // nil: no user namespace
	cgroup   string // cgroupsPath
	hostname string
	tmpSize  int64 // bytes; 0 is the tmpfs default
	seccomp  *specs.LinuxSeccomp
}

// buildSpec returns the hardened spec of one step; see the package doc.
func buildSpec(p specParams) *specs.Spec {
	umask := uint32(0o022)
	oomScore := 500 // under host memory pressure, steps go before the executor
	tmpOpts := []string{"nosuid", "nodev", "mode=1777"}
	if p.tmpSize > 0 {
		tmpOpts = append(tmpOpts, "size="+strconv.FormatInt(p.tmpSize, 10))
	}
	s := &specs.Spec{
		Version:  specVersion,
		Hostname: p.hostname,
		Root:     &specs.Root{Path: p.rootfs, Readonly: true},
		Process: &specs.Process{
			User: specs.User{UID: p.user.uid, GID: p.user.gid, AdditionalGids: p.user.groups, Umask: &umask},
			Args: append([]string{InitPath}, p.args...),
			Env:  p.env,
			Cwd:  p.cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  capabilities,
				Effective: capabilities,
				Permitted: capabilities,
			},
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_CORE", Hard: 0, Soft: 0}, // no core files in the workspace
			},
			NoNewPrivileges: true,
			OOMScoreAdj:     &oomScore,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: tmpOpts},
			{Destination: "/work", Type: "bind", Source: p.work, Options: []string{"rbind", "rw", "nosuid", "nodev"}},
			{Destination: InitPath, Type: "bind", Source: p.init, Options: []string{"bind", "ro", "nosuid", "nodev"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: p.cgroup,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.CgroupNamespace},
			},
			// Device rules only: the limits sit on the attempt's cgroup, one
			// level up (see cgroup.go).
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Seccomp:       p.seccomp,
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	if p.ids != nil {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: p.ids.base, Size: p.ids.size}}
		s.Linux.UIDMappings, s.Linux.GIDMappings = m, m
	}
	return s
}

// containerDir returns the container path of dir, a workspace-relative
// directory already checked to be local.
func containerDir(dir string) string {
	return path.Join("/work", dir)
}

// joinNetwork makes the container of spec s join the network namespace at
// netns, with the attempt's resolv.conf and hosts files (in dir) mounted
// read-only over the image's; see network.go. With noSysfs, /sys is an empty
// tmpfs: the runtime cannot mount a sysfs for that namespace.
func joinNetwork(s *specs.Spec, netns, dir string, noSysfs bool) {
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			s.Linux.Namespaces[i].Path = netns
		}
	}
	if noSysfs {
		for i, m := range s.Mounts {
			if m.Destination == "/sys" {
				s.Mounts[i] = specs.Mount{Destination: "/sys", Type: "tmpfs", Source: "sysfs",
					Options: []string{"nosuid", "noexec", "nodev", "ro", "mode=755", "size=64k"}}
			}
		}
	}
	for _, f := range []struct{ src, dst string }{
		{resolvConfFile, "/etc/resolv.conf"},
		{hostsFile, "/etc/hosts"},
	} {
		s.Mounts = append(s.Mounts, specs.Mount{
			Destination: f.dst, Type: "bind", Source: filepath.Join(dir, f.src),
			Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
}
