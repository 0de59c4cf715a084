package runtimes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/image"
	"github.com/airlock-run/airlock/internal/netpolicy"
	"github.com/airlock-run/airlock/internal/sandbox"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/sandbox/rootfs"
)

// ImageOptions configure the image cache of the runtimes that run images.
type ImageOptions struct {
	// CacheDir holds the cache; "" is WorkRoot/images.
	CacheDir string
	// MaxBytes bounds the cache's unpacked layers; 0 is unbounded.
	MaxBytes int64
	// Mirrors maps a registry host to mirror hosts tried first.
	Mirrors map[string][]string
	// PlainHTTP lists registry hosts spoken to over plain HTTP.
	PlainHTTP []string
	// DockerConfig is a Docker config.json with the default credentials.
	DockerConfig string
	// LocalRoots are the directories oci-layout: and docker-archive:
	// references may name.
	LocalRoots []string
}

// NetworkOptions configure the egress policy of the isolating runtimes.
type NetworkOptions struct {
	// Resolvers are the DNS servers sandboxes may use; none means the
	// host's (netpolicy.SystemResolvers).
	Resolvers []netip.Addr
	// Subnet is the pool of sandbox link addresses; zero is netpolicy's
	// default.
	Subnet netip.Prefix
	// CoordinatorURL is the coordinator's URL: its addresses are denied to
	// sandboxes even when they are public.
	CoordinatorURL string
	// HostNS is the network namespace that plays the host ("" is this
	// process's); tests pass an enclosed one (netpolicy/nettest).
	HostNS string
	// NetnsDir is where sandboxes' namespace files are bound ("" is
	// netpolicy's default).
	NetnsDir string
}

// Built is an opened runtime and what the executor needs beside it: the
// image puller (nil for the shell), and a janitor that covers the runtime,
// its network namespaces and its image overlays. Close it when the executor
// stops.
type Built struct {
	sandbox.Runtime
	// Images pulls steps' images for the executor; nil when the runtime runs
	// none.
	Images *rootfs.Provider

	janitors []janitor
	closers  []func() error
}

type janitor interface {
	RemoveLeftovers(ctx context.Context, keep func(name string) bool) error
}

// RemoveLeftovers removes what sandboxes not kept left behind: the
// runtime's state first (it stops processes), then overlays and networks.
func (b *Built) RemoveLeftovers(ctx context.Context, keep func(name string) bool) error {
	var errs []error
	for _, j := range b.janitors {
		if err := j.RemoveLeftovers(ctx, keep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close releases the image cache.
func (b *Built) Close() error {
	var errs []error
	for _, c := range b.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// images opens the image cache and the overlay provider for a runtime.
func (o Options) images(b *Built) (*rootfs.Provider, error) {
	dir := o.Images.CacheDir
	if dir == "" {
		dir = filepath.Join(o.WorkRoot, "images")
	}
	cache, err := image.New(image.Options{
		Root:         dir,
		MaxBytes:     o.Images.MaxBytes,
		Mirrors:      o.Images.Mirrors,
		PlainHTTP:    o.Images.PlainHTTP,
		DockerConfig: o.Images.DockerConfig,
		LocalRoots:   o.Images.LocalRoots,
		Logger:       o.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the image cache: %w", err)
	}
	b.closers = append(b.closers, cache.Close)
	p, err := rootfs.New(rootfs.Options{Cache: cache, Root: filepath.Join(o.WorkRoot, "rootfs"), Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	b.Images = p
	return p, nil
}

// network opens the egress policy manager.
func (o Options) network() (*netpolicy.Manager, error) {
	nopts, err := o.networkOptions()
	if err != nil {
		return nil, err
	}
	m, err := netpolicy.New(nopts)
	if err != nil {
		return nil, fmt.Errorf("egress policy: %w", err)
	}
	return m, nil
}

func (o Options) networkOptions() (netpolicy.Options, error) {
	n := netpolicy.Options{Resolvers: o.Network.Resolvers, Subnet: o.Network.Subnet, HostNS: o.Network.HostNS,
		NetnsDir: o.Network.NetnsDir, Logger: o.Logger}
	if len(n.Resolvers) == 0 {
		rs, err := netpolicy.SystemResolvers()
		if err != nil {
			return n, fmt.Errorf("egress policy: no DNS resolver configured (--dns-resolver) and %w", err)
		}
		n.Resolvers = rs
	}
	deny, err := coordinatorAddrs(o.Network.CoordinatorURL)
	if err != nil {
		return n, err
	}
	n.Deny = deny
	return n, nil
}

// coordinatorAddrs resolves the coordinator URL's host to the prefixes to
// deny sandboxes.
func coordinatorAddrs(raw string) ([]netip.Prefix, error) {
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("coordinator URL %q: %w", raw, err)
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Prefix{netip.PrefixFrom(a.Unmap(), a.BitLen())}, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return nil, fmt.Errorf("resolving the coordinator's host %q to deny it to sandboxes: %w", host, err)
	}
	var out []netip.Prefix
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// lockHost makes sure this is the only executor using the host's shared
// sandbox resources — the network namespace directory, the firewall table,
// the cgroup parent — whose janitors would otherwise remove each other's
// sandboxes. The lock (flock) ends with the process, however it ends.
func (o Options) lockHost(b *Built) error {
	dir := o.Network.NetnsDir
	if dir == "" {
		dir = netpolicy.DefaultNetnsDir
	}
	parent := o.CgroupParent
	if parent == "" {
		parent = oci.DefaultCgroupParent
	}
	name := "executor" + strings.ReplaceAll(strings.Trim(parent, "/"), "/", "-") + ".lock"
	path := filepath.Join(filepath.Dir(dir), name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("locking the host's sandbox resources: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("locking the host's sandbox resources: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		return fmt.Errorf("another executor on this host uses its sandbox resources (%s is locked by pid %s): "+
			"run one executor per host and raise --max-jobs", path, strings.TrimSpace(string(holder)))
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	b.closers = append(b.closers, f.Close)
	return nil
}

// FetchPolicy is what the executor's own fetches for jobs (public repository
// URLs, through egressproxy) must not reach beyond the sandboxes' denied
// ranges — the coordinator's addresses and the sandbox subnet — and the DNS
// servers they resolve names with (none: the system's resolver).
func (o Options) FetchPolicy() (deny []netip.Prefix, resolvers []netip.Addr, err error) {
	deny, err = coordinatorAddrs(o.Network.CoordinatorURL)
	if err != nil {
		return nil, nil, err
	}
	subnet := o.Network.Subnet
	if !subnet.IsValid() {
		subnet = netpolicy.DefaultSubnet
	}
	resolvers = o.Network.Resolvers
	if len(resolvers) == 0 {
		resolvers, _ = netpolicy.SystemResolvers() // else the system's resolver, loopback ones included
	}
	return append(deny, subnet), resolvers, nil
}
