// A sandbox's network.
//
// Without a network hook (Options.Network), or for a job whose policy is
// "none", every step runs in a network namespace of its own that holds only
// loopback: runc and crun create it from the spec, runsc runs with
// --network=none (the sentry's netstack has loopback only, and no host
// interface is touched).
//
// For a job whose policy is "internet", Open asks the hook for a Network:
// a network namespace made for the attempt, with its interfaces, routes and
// egress rules (package netpolicy makes them). Every step's container joins
// that namespace (the spec's network namespace names Path). With runsc the
// sentry runs its own netstack (--network=sandbox): at start it copies the
// namespace's interfaces, addresses and routes, and removes the addresses
// from the host side of the interface, so Run calls Refresh before every
// step to put them back. The sentry's packets leave through the namespace's
// interfaces, where the egress rules apply as they do to runc's containers.
//
// A container with a user namespace cannot mount a sysfs for a network
// namespace that another user namespace owns (the kernel refuses), so with
// runc and crun such steps get an empty, read-only tmpfs at /sys instead,
// with the cgroup hierarchy mounted on it as usual. gVisor's /sys is the
// sentry's own and is unaffected.
//
// Steps resolve names through /etc/resolv.conf and /etc/hosts files that the
// runtime writes into the attempt's directory from Network.Nameservers and
// bind-mounts read-only over the image's: the image cannot point a step at
// another resolver, and the egress rules only let DNS reach those servers.
// The files' mount points are created in the image's root filesystem when
// missing, as for /work.
//
// The Network belongs to the sandbox: Close closes it (after the containers
// are gone), and so does a failed Open. EgressDenied reports its count of
// dropped connection attempts.
package oci

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/airlock-run/airlock/internal/job"
)

// Network is an attempt's network namespace with its egress policy, made by
// a NetworkFunc.
type Network interface {
	// Path is the network namespace file every step's container joins.
	Path() string
	// Refresh re-applies the namespace's addresses and routes before each
	// step (runsc removes them when it starts). It is idempotent.
	Refresh(ctx context.Context) error
	// Nameservers are written into the steps' /etc/resolv.conf.
	Nameservers() []netip.Addr
	// Denied counts the connection attempts the egress policy dropped.
	Denied(ctx context.Context) (uint64, error)
	// Close removes the namespace and everything made for it.
	Close(ctx context.Context) error
}

// NetworkFunc makes the Network of the attempt called sandbox
// (OpenParams.Name) for its egress policy. The runtime calls it once per
// attempt whose policy is job.NetworkInternet, from Open.
type NetworkFunc func(ctx context.Context, sandbox string, policy job.Network) (Network, error)

// openNetwork returns the attempt's Network, or nil when its steps get
// loopback only.
func (r *Runtime) openNetwork(ctx context.Context, name string, policy job.Network) (Network, error) {
	switch policy {
	case "", job.NetworkNone:
		return nil, nil
	case job.NetworkInternet:
	default:
		return nil, fmt.Errorf("unknown network policy %q", policy)
	}
	if r.network == nil {
		r.netWarn.Do(func() {
			r.log.Warn("no egress policy is configured for this runtime: jobs asking for the internet run without network",
				"runtime", r.name, "network", string(policy))
		})
		return nil, nil
	}
	n, err := r.network(ctx, name, policy)
	if err != nil {
		return nil, fmt.Errorf("setting up the network: %w", err)
	}
	if n == nil {
		return nil, errors.New("setting up the network: the network hook returned no network")
	}
	return n, nil
}

// EgressDenied reports how many connection attempts the attempt's egress
// policy dropped; 0 for a sandbox without network.
func (b *box) EgressDenied(ctx context.Context) (uint64, error) {
	if b.net == nil {
		return 0, nil
	}
	n, err := b.net.Denied(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading the egress denial count: %w", err)
	}
	return n, nil
}

// Files of the attempt's directory bind-mounted over the image's.
const (
	resolvConfFile = "resolv.conf"
	hostsFile      = "hosts"
)

// writeNetworkFiles writes the steps' /etc/resolv.conf and /etc/hosts into
// dir, readable by all (the containers' root is an unprivileged host user).
func writeNetworkFiles(dir string, nameservers []netip.Addr) error {
	var resolv strings.Builder
	resolv.WriteString("# written by airlock: the resolvers this job's egress policy allows\n")
	for _, ns := range nameservers {
		fmt.Fprintf(&resolv, "nameserver %s\n", ns.Unmap())
	}
	// Every name is looked up at a resolver, never under a search domain
	// of the host's.
	resolv.WriteString("options ndots:0\n")
	hosts := "127.0.0.1\tlocalhost airlock\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	for name, content := range map[string]string{resolvConfFile: resolv.String(), hostsFile: hosts} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if err := os.Chmod(path, 0o644); err != nil { // past the umask
			return err
		}
	}
	return nil
}

// networkMountPoints creates, in an image's root filesystem, empty
// /etc/resolv.conf and /etc/hosts files to mount the runtime's over, when
// the image has none. A symlink is left alone: the OCI runtime resolves it
// inside the root filesystem.
func networkMountPoints(rootfs string) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("opening the root filesystem: %w", err)
	}
	defer root.Close()
	if err := root.Mkdir("etc", 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating /etc in the root filesystem: %w", err)
	}
	for _, name := range []string{"etc/resolv.conf", "etc/hosts"} {
		if _, err := root.Lstat(name); err == nil {
			continue
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating mount point /%s in the root filesystem: %w", name, err)
		}
		if f != nil {
			f.Close()
		}
	}
	return nil
}
