package netpolicy_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/netpolicy"
	"github.com/airlock-run/airlock/internal/netpolicy/nettest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// The oci runtime's network hook, which a Sandbox must satisfy (as a copy:
// this package does not import the runtime).
var _ interface {
	Path() string
	Refresh(ctx context.Context) error
	Nameservers() []netip.Addr
	Denied(ctx context.Context) (uint64, error)
	Close(ctx context.Context) error
} = (*netpolicy.Sandbox)(nil)

// deniedWait is how long a probe of a denied destination waits for an
// answer that must not come.
const deniedWait = time.Second

// coordinatorAddr stands for the coordinator's public address, denied
// through Options.Deny.
var coordinatorAddr = netip.MustParseAddr("198.51.100.80")

// setup builds an enclosed world and a Manager whose host is its
// enclosure, with the world's private resolver.
func setup(t testing.TB) (*nettest.World, *netpolicy.Manager, netpolicy.Options) {
	t.Helper()
	w := nettest.New(t)
	if err := w.AddAddress(coordinatorAddr); err != nil {
		t.Fatal(err)
	}
	opts := netpolicy.Options{
		HostNS:    w.Enclosure.Path(),
		Resolvers: []netip.Addr{nettest.ResolverAddr},
		Deny:      []netip.Prefix{netip.PrefixFrom(coordinatorAddr, 32)},
		NetnsDir:  filepath.Join(t.TempDir(), "netns"),
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, it := range netpolicy.Check(opts) {
		if !it.OK {
			testenv.Missing(t, it.Name, errors.New(it.Detail))
		}
	}
	if err := os.MkdirAll(opts.NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A safety net for a test that fails before closing what it opened:
	// the enclosure goes with the world, the namespace files here.
	t.Cleanup(func() {
		entries, _ := os.ReadDir(opts.NetnsDir)
		for _, e := range entries {
			netpolicy.RemoveNamespace(filepath.Join(opts.NetnsDir, e.Name()))
		}
	})
	m, err := netpolicy.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return w, m, opts
}

func open(t testing.TB, m *netpolicy.Manager, name string, policy job.Network) *netpolicy.Sandbox {
	t.Helper()
	s, err := m.Open(t.Context(), name, policy)
	if err != nil {
		t.Fatalf("Open(%s, %s): %v", name, policy, err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close(%s): %v", name, err)
		}
	})
	return s
}

// probe is one attempt to reach something from a sandbox.
type probe struct {
	name string
	run  func(ctx context.Context) error
	hit  netip.AddrPort // a world service that must not see the probe, if valid
}

func tcpProbe(n nettest.Netns, a netip.Addr) probe {
	dst := netip.AddrPortFrom(a, nettest.EchoPort)
	return probe{"TCP " + dst.String(), func(ctx context.Context) error { return n.TCPEcho(ctx, dst) }, dst}
}

func udpProbe(n nettest.Netns, a netip.Addr) probe {
	dst := netip.AddrPortFrom(a, nettest.EchoPort)
	return probe{"UDP " + dst.String(), func(ctx context.Context) error { return n.UDPEcho(ctx, dst) }, dst}
}

func pingProbe(n nettest.Netns, a netip.Addr) probe {
	return probe{"ICMP " + a.String(), func(ctx context.Context) error { return n.Ping(ctx, a) }, netip.AddrPort{}}
}

func dnsProbe(n nettest.Netns, network string, a netip.Addr) probe {
	dst := netip.AddrPortFrom(a, nettest.DNSPort)
	return probe{"DNS over " + network + " " + dst.String(), func(ctx context.Context) error {
		_, err := n.Lookup(ctx, network, dst, nettest.TestName)
		return err
	}, dst}
}

// all is a TCP, a UDP and an ICMP probe of a.
func all(n nettest.Netns, a netip.Addr) []probe {
	return []probe{tcpProbe(n, a), udpProbe(n, a), pingProbe(n, a)}
}

// expectSilent runs the probes at once and checks that each got no answer
// at all and that no world service saw it.
func expectSilent(t *testing.T, w *nettest.World, probes []probe) {
	t.Helper()
	before := map[netip.AddrPort]int{}
	for _, p := range probes {
		if p.hit.IsValid() {
			before[p.hit] = w.Hits(p.hit)
		}
	}
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), deniedWait)
			defer cancel()
			errs[i] = p.run(ctx)
		})
	}
	wg.Wait()
	for i, p := range probes {
		if !nettest.Silent(errs[i]) {
			t.Errorf("%s: %v, want no answer", p.name, errs[i])
		}
	}
	for hit, n := range before {
		if got := w.Hits(hit); got != n {
			t.Errorf("the service at %s received %d probes, want none", hit, got-n)
		}
	}
}

func denied(t testing.TB, s *netpolicy.Sandbox) uint64 {
	t.Helper()
	n, err := s.Denied(t.Context())
	if err != nil {
		t.Fatalf("Denied: %v", err)
	}
	return n
}

func TestInternetReachesPublicHostsAndResolverOnly(t *testing.T) {
	w, m, _ := setup(t)
	s := open(t, m, "airlock-1-1", job.NetworkInternet)
	other := open(t, m, "airlock-2-1", job.NetworkInternet)
	sb := nettest.At(s.Path())

	// The other sandbox serves TCP and UDP echo, to be unreachable.
	otherNS := nettest.At(other.Path())
	l, err := otherNS.Listen("tcp4", fmt.Sprintf(":%d", nettest.EchoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Errorf("a connection reached the other sandbox from %s", c.RemoteAddr())
			c.Close()
		}
	}()

	t.Run("allowed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		for _, p := range all(sb, nettest.PublicAddr) {
			if err := p.run(ctx); err != nil {
				t.Errorf("%s: %v", p.name, err)
			}
		}
		if got, want := w.Hits(netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)), 2; got != want {
			t.Errorf("the public echo service saw %d probes, want %d", got, want)
		}
		body, err := sb.HTTPGet(ctx, fmt.Sprintf("http://%s/", nettest.PublicAddr))
		if want := fmt.Sprintf("hello from %s\n", nettest.PublicAddr); err != nil || body != want {
			t.Errorf("HTTP GET of the public host: %q, %v; want %q", body, err, want)
		}
		for _, network := range []string{"udp", "tcp"} {
			resolver := netip.AddrPortFrom(nettest.ResolverAddr, nettest.DNSPort)
			got, err := sb.Lookup(ctx, network, resolver, nettest.TestName)
			if want := []netip.Addr{nettest.PublicAddr}; err != nil || !slices.Equal(got, want) {
				t.Errorf("DNS over %s to the resolver: %v, %v; want %v", network, got, err, want)
			}
		}
		if got := denied(t, s); got != 0 {
			t.Errorf("Denied after allowed traffic only = %d, want 0", got)
		}
		if got, want := s.Nameservers(), []netip.Addr{nettest.ResolverAddr}; !slices.Equal(got, want) {
			t.Errorf("Nameservers() = %v, want %v", got, want)
		}
	})

	t.Run("denied", func(t *testing.T) {
		var probes []probe
		for _, a := range []netip.Addr{
			nettest.PrivateAddr, nettest.MetadataAddr, // private and link-local hosts
			nettest.UplinkAddr, s.Gateway(), // the host's own addresses
			other.Addr(), other.Gateway(), // another sandbox
			coordinatorAddr,      // Options.Deny
			nettest.ResolverAddr, // the resolver, for anything but DNS
		} {
			probes = append(probes, all(sb, a)...)
		}
		for _, network := range []string{"udp", "tcp"} {
			probes = append(probes, dnsProbe(sb, network, nettest.OtherDNSAddr), dnsProbe(sb, network, nettest.PublicAddr))
		}
		expectSilent(t, w, probes)
		if got, want := denied(t, s), uint64(len(probes)); got < want {
			t.Errorf("Denied = %d after %d denied probes, want at least as many", got, want)
		}
		if got := denied(t, other); got != 0 {
			t.Errorf("the other sandbox's Denied = %d, want 0: it sent nothing", got)
		}
	})

	t.Run("host loopback", func(t *testing.T) {
		// 127.0.0.1 in the sandbox is the sandbox's own loopback, where
		// nothing listens; the enclosure's loopback service sees nothing.
		ctx, cancel := context.WithTimeout(t.Context(), deniedWait)
		defer cancel()
		loop := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", nettest.EchoPort))
		if err := sb.TCPEcho(ctx, loop); err == nil {
			t.Errorf("TCP to 127.0.0.1:%d in the sandbox answered", nettest.EchoPort)
		}
		if got := w.Hits(loop); got != 0 {
			t.Errorf("the enclosure's loopback service saw %d probes, want none", got)
		}
	})

	t.Run("nothing connects in", func(t *testing.T) {
		l, err := sb.Listen("tcp4", fmt.Sprintf(":%d", nettest.EchoPort))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				t.Errorf("a connection reached the sandbox from %s", c.RemoteAddr())
				c.Close()
			}
		}()
		pc, err := sb.ListenPacket("udp4", fmt.Sprintf(":%d", nettest.EchoPort))
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				t.Errorf("a datagram reached the sandbox from %s", from)
			}
		}()
		// The world can route to the sandboxes' subnet through the
		// enclosure, as a neighbour on a shared network could.
		inet := handleAt(t, w.Internet.Path())
		_, subnet, _ := net.ParseCIDR(netpolicy.DefaultSubnet.String())
		if err := inet.RouteAdd(&netlink.Route{Dst: subnet, Gw: nettest.UplinkAddr.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		dst := netip.AddrPortFrom(s.Addr(), nettest.EchoPort)
		// The host's own packets are dropped on their way out, which its
		// sender may hear about (EPERM): that is not silence, but nothing
		// may arrive.
		ctx, cancel := context.WithTimeout(t.Context(), deniedWait)
		defer cancel()
		if err := w.Enclosure.TCPEcho(ctx, dst); err == nil {
			t.Error("TCP from the enclosure reached the sandbox")
		}
		if err := w.Enclosure.UDPEcho(ctx, dst); err == nil {
			t.Error("UDP from the enclosure reached the sandbox")
		}
		expectSilent(t, w, []probe{
			{"UDP from the internet", func(ctx context.Context) error { return w.Internet.UDPEcho(ctx, dst) }, netip.AddrPort{}},
			{"TCP from the internet", func(ctx context.Context) error { return w.Internet.TCPEcho(ctx, dst) }, netip.AddrPort{}},
			{"ICMP from the internet", func(ctx context.Context) error { return w.Internet.Ping(ctx, s.Addr()) }, netip.AddrPort{}},
		})
	})

	t.Run("no IPv6", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), deniedWait)
		defer cancel()
		if c, err := sb.Dial(ctx, "tcp6", "[2001:db8::1]:7"); err == nil || nettest.Silent(err) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dialing an IPv6 address: %v, want an immediate error", err)
		}
		if addrs := linkAddrs(t, s.Path(), netpolicy.SandboxInterface, unix.AF_INET6); len(addrs) != 0 {
			t.Errorf("the sandbox's %s has IPv6 addresses %v, want none", netpolicy.SandboxInterface, addrs)
		}
		veth := netpolicy.VethName(filepath.Base(s.Path()))
		if addrs := linkAddrs(t, w.Enclosure.Path(), veth, unix.AF_INET6); len(addrs) != 0 {
			t.Errorf("the host's %s has IPv6 addresses %v, want none", veth, addrs)
		}
	})
}

func TestSpoofedSourceIsDenied(t *testing.T) {
	w, m, _ := setup(t)
	s := open(t, m, "airlock-1-1", job.NetworkInternet)
	sb := nettest.At(s.Path())
	spoof := netip.MustParseAddr("192.0.2.77")
	h := handleAt(t, s.Path())
	eth0, err := h.LinkByName(netpolicy.SandboxInterface)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: spoof.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)
	expectSilent(t, w, []probe{{"UDP from " + spoof.String(), func(ctx context.Context) error {
		return sb.UDPEchoFrom(ctx, netip.AddrPortFrom(spoof, 0), dst)
	}, dst}})
	if got := denied(t, s); got == 0 {
		t.Errorf("Denied = 0 after a spoofed packet, want it counted")
	}
}

func TestNoneReachesNothing(t *testing.T) {
	w, m, _ := setup(t)
	s := open(t, m, "airlock-1-1", job.NetworkNone)
	sb := nettest.At(s.Path())
	ctx, cancel := context.WithTimeout(t.Context(), deniedWait)
	defer cancel()
	for _, p := range slices.Concat(all(sb, nettest.PublicAddr), []probe{dnsProbe(sb, "udp", nettest.ResolverAddr)}) {
		if err := p.run(ctx); err == nil {
			t.Errorf("%s answered under the none policy", p.name)
		}
		if p.hit.IsValid() && w.Hits(p.hit) != 0 {
			t.Errorf("%s reached the service", p.name)
		}
	}
	// Loopback works.
	l, err := sb.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := sb.Dial(ctx, "tcp4", l.Addr().String())
	if err != nil {
		t.Errorf("dialing loopback in the sandbox: %v", err)
	} else {
		c.Close()
	}
	links, err := handleAt(t, s.Path()).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	if want := []string{"lo"}; !slices.Equal(names, want) {
		t.Errorf("interfaces = %v, want %v", names, want)
	}
	if got := denied(t, s); got != 0 {
		t.Errorf("Denied = %d, want 0", got)
	}
	if got := s.Nameservers(); got != nil {
		t.Errorf("Nameservers() = %v, want none", got)
	}
	if err := s.Refresh(ctx); err != nil {
		t.Errorf("Refresh: %v", err)
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	w, m, _ := setup(t)
	for _, policy := range []job.Network{job.NetworkInternet, job.NetworkNone} {
		t.Run(string(policy), func(t *testing.T) {
			name := "airlock-3-" + string(policy)
			s, err := m.Open(t.Context(), name, policy)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			var final uint64
			if policy == job.NetworkInternet {
				sb := nettest.At(s.Path())
				// A flow for conntrack to remember, and a denial.
				if err := sb.TCPEcho(ctx, netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)); err != nil {
					t.Fatal(err)
				}
				short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				sb.UDPEcho(short, netip.AddrPortFrom(nettest.PrivateAddr, nettest.EchoPort))
				cancel()
				if final = denied(t, s); final == 0 {
					t.Fatal("Denied = 0 after a denied probe")
				}
			}
			// What Close must remove, seen before (so leftovers can see it).
			wantBefore := []string{"namespace file"}
			if policy == job.NetworkInternet {
				wantBefore = append(wantBefore, "link", "chain", "element", "conntrack flow")
			}
			before := strings.Join(leftovers(t, w, s), "\n")
			for _, w := range wantBefore {
				if !strings.Contains(before, w) {
					t.Errorf("before Close, the sandbox has no %s:\n%s", w, before)
				}
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if left := leftovers(t, w, s); len(left) > 0 {
				t.Errorf("after Close:\n%s", strings.Join(left, "\n"))
			}
			if got := denied(t, s); got != final {
				t.Errorf("Denied after Close = %d, want the final count %d", got, final)
			}
			if err := s.Close(context.Background()); err != nil {
				t.Errorf("a second Close: %v", err)
			}
			// The name is free again.
			again := open(t, m, name, policy)
			if policy == job.NetworkInternet {
				if err := nettest.At(again.Path()).TCPEcho(ctx, netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)); err != nil {
					t.Errorf("a sandbox reopened under the same name: %v", err)
				}
			}
		})
	}
}

func TestCloseAfterContextIsDone(t *testing.T) {
	w, m, _ := setup(t)
	ctx, cancel := context.WithCancel(t.Context())
	s, err := m.Open(ctx, "airlock-4-1", job.NetworkInternet)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := leftovers(t, w, s); len(left) > 0 {
		t.Errorf("after Close:\n%s", strings.Join(left, "\n"))
	}
	if _, err := m.Open(ctx, "airlock-4-2", job.NetworkInternet); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a done context: %v, want context.Canceled", err)
	}
}

func TestRemoveLeftoversAfterACrash(t *testing.T) {
	w, m1, opts := setup(t)
	ctx := t.Context()
	kept, err := m1.Open(ctx, "airlock-7-1", job.NetworkInternet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kept.Close(context.Background()) })
	var lost []*netpolicy.Sandbox
	for _, p := range []job.Network{job.NetworkInternet, job.NetworkInternet, job.NetworkNone} {
		s, err := m1.Open(ctx, fmt.Sprintf("airlock-8-%d", len(lost)), p)
		if err != nil {
			t.Fatal(err)
		}
		lost = append(lost, s) // and never closed: the executor crashed
	}
	// A link a crash left before it was named, and junk in the directory.
	enc := handleAt(t, w.Enclosure.Path())
	if err := enc.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: netpolicy.VethPrefix + "unnamed"}, PeerName: "peer-unnamed"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(opts.NetnsDir, ".junk"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// The executor restarts.
	m2, err := netpolicy.New(opts)
	if err != nil {
		t.Fatalf("New after a crash: %v", err)
	}
	// Until the janitor runs, the orphans are still held to the policy.
	sb := nettest.At(lost[0].Path())
	expectSilent(t, w, all(sb, nettest.PrivateAddr))
	okCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := sb.TCPEcho(okCtx, netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)); err != nil {
		t.Errorf("an orphan sandbox reaching the public host: %v", err)
	}

	if err := m2.RemoveLeftovers(ctx, func(name string) bool { return name == filepath.Base(kept.Path()) }); err != nil {
		t.Fatalf("RemoveLeftovers: %v", err)
	}
	for _, s := range lost {
		if left := leftovers(t, w, s); len(left) > 0 {
			t.Errorf("after RemoveLeftovers:\n%s", strings.Join(left, "\n"))
		}
	}
	if _, err := enc.LinkByName(netpolicy.VethPrefix + "unnamed"); err == nil {
		t.Errorf("RemoveLeftovers left the unnamed link")
	}
	entries, _ := os.ReadDir(opts.NetnsDir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"airlock-7-1"}; !slices.Equal(names, want) {
		t.Errorf("namespace files = %v, want only the kept %v", names, want)
	}
	// The kept sandbox still works, and closes cleanly.
	if err := nettest.At(kept.Path()).TCPEcho(okCtx, netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)); err != nil {
		t.Errorf("the kept sandbox: %v", err)
	}
	if err := kept.Close(ctx); err != nil {
		t.Errorf("closing the kept sandbox: %v", err)
	}
	if left := leftovers(t, w, kept); len(left) > 0 {
		t.Errorf("after closing the kept sandbox:\n%s", strings.Join(left, "\n"))
	}
}

func TestParallelOpensGetDistinctAddresses(t *testing.T) {
	w, m, _ := setup(t)
	const n = 8
	sandboxes := make([]*netpolicy.Sandbox, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sandboxes[i], errs[i] = m.Open(t.Context(), fmt.Sprintf("airlock-%d-1", 100+i), job.NetworkInternet)
		})
	}
	wg.Wait()
	seen := map[netip.Addr]string{}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for i, s := range sandboxes {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		if prev, dup := seen[s.Addr()]; dup {
			t.Errorf("%s and %s both have %s", prev, s.Path(), s.Addr())
		}
		seen[s.Addr()] = s.Path()
		if !netpolicy.DefaultSubnet.Contains(s.Addr()) {
			t.Errorf("address %s is outside %s", s.Addr(), netpolicy.DefaultSubnet)
		}
		if err := nettest.At(s.Path()).TCPEcho(ctx, netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)); err != nil {
			t.Errorf("sandbox %d: %v", i, err)
		}
	}
	for _, s := range sandboxes {
		if s == nil {
			continue
		}
		wg.Go(func() {
			if err := s.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	for _, s := range sandboxes {
		if s != nil {
			if left := leftovers(t, w, s); len(left) > 0 {
				t.Errorf("after Close:\n%s", strings.Join(left, "\n"))
			}
		}
	}
}

func TestAddressesOfLeftoversAreNotReused(t *testing.T) {
	w, m1, opts := setup(t)
	orphan, err := m1.Open(t.Context(), "airlock-5-1", job.NetworkInternet)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := netpolicy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, m2, "airlock-6-1", job.NetworkInternet)
	if s.Addr() == orphan.Addr() {
		t.Errorf("a new sandbox got %s, the address of a leftover's link", s.Addr())
	}
	if err := m2.RemoveLeftovers(t.Context(), func(name string) bool { return name == "airlock-6-1" }); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, w, orphan); len(left) > 0 {
		t.Errorf("after RemoveLeftovers:\n%s", strings.Join(left, "\n"))
	}
}

// runsc takes the address off the sandbox's interface when it starts;
// Refresh puts it back.
func TestRefreshRestoresTheAddress(t *testing.T) {
	_, m, _ := setup(t)
	s := open(t, m, "airlock-1-1", job.NetworkInternet)
	sb := nettest.At(s.Path())
	h := handleAt(t, s.Path())
	eth0, err := h.LinkByName(netpolicy.SandboxInterface)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range linkAddrs(t, s.Path(), netpolicy.SandboxInterface, unix.AF_INET) {
		if err := h.AddrDel(eth0, &a); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	dst := netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)
	if err := sb.TCPEcho(ctx, dst); err == nil {
		t.Fatal("the sandbox reached the public host without an address")
	}
	for range 2 {
		if err := s.Refresh(ctx); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	}
	if err := sb.TCPEcho(ctx, dst); err != nil {
		t.Errorf("after Refresh: %v", err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	w := nettest.New(t)
	good := netpolicy.Options{HostNS: w.Enclosure.Path(), Resolvers: []netip.Addr{nettest.ResolverAddr}, NetnsDir: t.TempDir()}
	for _, tc := range []struct {
		name   string
		change func(*netpolicy.Options)
		want   []string // in the error
	}{
		{"loopback resolver", func(o *netpolicy.Options) { o.Resolvers = []netip.Addr{netip.MustParseAddr("127.0.0.53")} },
			[]string{"Options.Resolvers", "127.0.0.53", "loopback"}},
		{"no resolver", func(o *netpolicy.Options) { o.Resolvers = nil }, []string{"Options.Resolvers"}},
		{"IPv6 resolver", func(o *netpolicy.Options) { o.Resolvers = []netip.Addr{netip.MustParseAddr("2001:db8::53")} },
			[]string{"Options.Resolvers", "IPv6"}},
		{"resolver in the subnet", func(o *netpolicy.Options) { o.Resolvers = []netip.Addr{netip.MustParseAddr("10.213.0.9")} },
			[]string{"Options.Resolvers", "Options.Subnet"}},
		{"subnet too small", func(o *netpolicy.Options) { o.Subnet = netip.MustParsePrefix("10.213.0.0/31") }, []string{"Options.Subnet"}},
		{"subnet not a network", func(o *netpolicy.Options) { o.Subnet = netip.MustParsePrefix("10.213.0.1/16") }, []string{"Options.Subnet"}},
		{"IPv6 subnet", func(o *netpolicy.Options) { o.Subnet = netip.MustParsePrefix("fd00::/64") }, []string{"Options.Subnet"}},
		{"subnet overlapping the host's", func(o *netpolicy.Options) { o.Subnet = netip.MustParsePrefix("203.0.113.0/24") },
			[]string{"Options.Subnet", "uplink"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.change(&o)
			_, err := netpolicy.New(o)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("New: %v; want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestCheckWarnsOfAForwardDropPolicy(t *testing.T) {
	w, _, opts := setup(t)
	item := func() netpolicy.Item {
		for _, it := range netpolicy.Check(opts) {
			if !it.OK {
				t.Errorf("Check: %s: %s", it.Name, it.Detail)
			}
			if it.Name == "host firewall" {
				return it
			}
		}
		t.Fatal("Check has no host firewall item")
		return netpolicy.Item{}
	}
	if it := item(); strings.HasPrefix(it.Detail, "warning") {
		t.Errorf("host firewall: %s; want no warning in a clean enclosure", it.Detail)
	}
	// What Docker does to the FORWARD chain.
	c := nftAt(t, w.Enclosure.Path())
	tbl := c.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4})
	drop := nftables.ChainPolicyDrop
	c.AddChain(&nftables.Chain{Name: "FORWARD", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if it := item(); !strings.HasPrefix(it.Detail, "warning") || !strings.Contains(it.Detail, "FORWARD") {
		t.Errorf("host firewall: %s; want a warning naming FORWARD", it.Detail)
	}
}

// leftovers lists what is left of s in the world.
func leftovers(t testing.TB, w *nettest.World, s *netpolicy.Sandbox) []string {
	t.Helper()
	name := filepath.Base(s.Path())
	var left []string
	if _, err := os.Lstat(s.Path()); !errors.Is(err, os.ErrNotExist) {
		left = append(left, "namespace file "+s.Path())
	}
	links, err := handleAt(t, w.Enclosure.Path()).LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Alias == name {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	c := nftAt(t, w.Enclosure.Path())
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chains {
		if strings.Contains(ch.Name, name) {
			left = append(left, "chain "+ch.Name)
		}
	}
	tbl := &nftables.Table{Name: netpolicy.TableName, Family: nftables.TableFamilyINet}
	set, err := c.GetSetByName(tbl, "sandboxes")
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range elems {
		if strings.TrimRight(string(e.Key), "\x00") == netpolicy.VethName(name) {
			left = append(left, "element of map sandboxes")
		}
	}
	if s.Addr().IsValid() {
		f, err := os.Open(w.Enclosure.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_NETFILTER)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Forward.SrcIP.Equal(s.Addr().AsSlice()) {
				left = append(left, "conntrack flow "+f.String())
			}
		}
	}
	return left
}

func handleAt(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func nftAt(t testing.TB, path string) *nftables.Conn {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func linkAddrs(t testing.TB, path, link string, family int) []netlink.Addr {
	t.Helper()
	h := handleAt(t, path)
	l, err := h.LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(l, family)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

func BenchmarkOpenClose(b *testing.B) {
	_, m, _ := setup(b)
	for i := 0; b.Loop(); i++ {
		s, err := m.Open(b.Context(), fmt.Sprintf("airlock-%d-1", i), job.NetworkInternet)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen is the part of BenchmarkOpenClose that delays a job's
// first step.
func BenchmarkOpen(b *testing.B) {
	_, m, _ := setup(b)
	var open []*netpolicy.Sandbox
	for i := 0; b.Loop(); i++ {
		s, err := m.Open(b.Context(), fmt.Sprintf("airlock-%d-1", i), job.NetworkInternet)
		if err != nil {
			b.Fatal(err)
		}
		open = append(open, s)
	}
	b.StopTimer()
	for _, s := range open {
		if err := s.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
