package netpolicy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox"
)

// VethPrefix starts the name of every sandbox's host-side interface; the
// rules recognise sandboxes' traffic by it.
const VethPrefix = "air-"

// SandboxInterface is the name of a sandbox's end of its link, inside its
// namespace.
const SandboxInterface = "eth0"

// Defaults of Options.
const (
	DefaultNetnsDir = "/run/airlock/netns"
	// DefaultMTU is the links' MTU when the host namespace has no default
	// route to take it from.
	DefaultMTU = 1500
)

// DefaultSubnet is the default pool of sandbox link addresses.
var DefaultSubnet = netip.MustParsePrefix("10.213.0.0/16")

// Options configure a Manager.
type Options struct {
	// HostNS is the file of the network namespace that plays the host: the
	// sandboxes' links, the rules and NAT live there. "" is the calling
	// process's namespace. Tests pass an enclosure (see nettest).
	HostNS string
	// Subnet is the IPv4 pool from which each sandbox gets a /30 link
	// (host side .1, sandbox .2 of its four addresses). It must not
	// overlap the host's own networks, and is denied to sandboxes like the
	// private ranges (which it normally lies in). The zero value means
	// DefaultSubnet.
	Subnet netip.Prefix
	// Resolvers are the only DNS servers sandboxes may use (UDP and TCP
	// port 53), written into their resolv.conf by the runtime. They must be
	// IPv4 addresses other than loopback: a sandbox cannot reach the host's
	// 127.0.0.53 (see SystemResolvers). A resolver in a denied range (a
	// private address) is allowed, for DNS only. Required.
	Resolvers []netip.Addr
	// Deny lists more destinations to deny, such as the coordinator's
	// addresses. IPv6 prefixes are accepted and redundant: sandboxes get no
	// IPv6 at all.
	Deny []netip.Prefix
	// NetnsDir is where the namespaces' files are bound. The directory
	// belongs to the Manager: RemoveLeftovers deletes what it finds there.
	// "" means DefaultNetnsDir.
	NetnsDir string
	// MTU of the sandboxes' links; 0 takes the MTU of the host namespace's
	// default route's interface (DefaultMTU without one).
	MTU int
	// Logger receives what the Manager does and what it could not undo;
	// nil discards it.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if !o.Subnet.IsValid() {
		o.Subnet = DefaultSubnet
	}
	if o.NetnsDir == "" {
		o.NetnsDir = DefaultNetnsDir
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports what is wrong with the options, all of it.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if !o.Subnet.Addr().Is4() || o.Subnet.Bits() > 30 || o.Subnet.Masked() != o.Subnet {
		errs = append(errs, fmt.Errorf("Options.Subnet %s: want an IPv4 network of /30 or larger, like %s", o.Subnet, DefaultSubnet))
	}
	if len(o.Resolvers) == 0 {
		errs = append(errs, errors.New("Options.Resolvers is empty: sandboxes need a DNS server they may use"))
	}
	for _, r := range o.Resolvers {
		switch {
		case !r.IsValid():
			errs = append(errs, errors.New("Options.Resolvers holds an invalid address"))
		case !r.Is4():
			errs = append(errs, fmt.Errorf("Options.Resolvers: %s is IPv6, and sandboxes have no IPv6: give an IPv4 resolver", r))
		case r.IsLoopback():
			errs = append(errs, fmt.Errorf("Options.Resolvers: %s is a loopback address, which a sandbox cannot reach: give the upstream resolver (systemd-resolved lists it in /run/systemd/resolve/resolv.conf)", r))
		case r.IsUnspecified() || r.IsMulticast() || r == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			errs = append(errs, fmt.Errorf("Options.Resolvers: %s is not a unicast address", r))
		case o.Subnet.Contains(r):
			errs = append(errs, fmt.Errorf("Options.Resolvers: %s lies in Options.Subnet %s", r, o.Subnet))
		}
	}
	for _, p := range o.Deny {
		if !p.IsValid() {
			errs = append(errs, errors.New("Options.Deny holds an invalid prefix"))
		}
	}
	if o.MTU != 0 && (o.MTU < 576 || o.MTU > 65535) {
		errs = append(errs, fmt.Errorf("Options.MTU %d: want 576 to 65535, or 0 for the host's", o.MTU))
	}
	return errors.Join(errs...)
}

// ruleset is what the options put into the table.
func (o Options) ruleset() ruleset {
	rs := ruleset{subnet: o.Subnet, resolvers: o.Resolvers}
	for _, p := range slices.Concat(DeniedRanges, o.Deny, []netip.Prefix{o.Subnet}) {
		if p.Addr().Is4() {
			rs.denied = append(rs.denied, p)
		}
	}
	return rs
}

// Manager gives sandboxes their network namespaces. It is safe for
// concurrent use. There must be one Manager per host namespace: each assumes
// that every sandbox link, rule and namespace file there is its own, and its
// RemoveLeftovers deletes those it does not know.
type Manager struct {
	opts  Options // with defaults
	log   *slog.Logger
	mtu   int
	slots int // /30 links in Subnet

	mu     sync.Mutex
	busy   map[string]bool // names open, or being removed by RemoveLeftovers
	leases map[int]string  // slot → sandbox, for links being set up or open
	next   int             // where the search for a free slot starts
}

// New checks opts, enables IPv4 forwarding in the host namespace, and
// installs the rules (replacing the table of an earlier Manager: sandboxes
// it left are then still denied everything, and RemoveLeftovers removes
// them).
func New(opts Options) (*Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	m := &Manager{
		opts:   opts,
		log:    opts.Logger,
		slots:  1 << (32 - opts.Subnet.Bits() - 2),
		busy:   map[string]bool{},
		leases: map[int]string{},
	}
	if err := os.MkdirAll(opts.NetnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the namespace directory: %w", err)
	}
	host, err := m.openHost()
	if err != nil {
		return nil, err
	}
	defer host.close()
	if err := checkSubnet(host.link, opts.Subnet); err != nil {
		return nil, err
	}
	m.mtu = opts.MTU
	if m.mtu == 0 {
		m.mtu = defaultRouteMTU(host.link)
	}
	if err := InNamespace(opts.HostNS, enableForwarding); err != nil {
		return nil, err
	}
	if err := install(host.nft, opts.ruleset()); err != nil {
		return nil, err
	}
	m.log.Info("network policy installed", "table", TableName, "subnet", opts.Subnet.String(),
		"resolvers", fmt.Sprint(opts.Resolvers), "mtu", m.mtu)
	return m, nil
}

func enableForwarding() error {
	v, err := readSysctl("net/ipv4/ip_forward")
	if err != nil || v == "1" {
		return err
	}
	return writeSysctl("net/ipv4/ip_forward", "1")
}

// hostHandles talk to the host namespace.
type hostHandles struct {
	fd   *os.File
	link *netlink.Handle
	nft  *nftables.Conn
}

func (m *Manager) openHost() (*hostHandles, error) {
	return openHandles(m.opts.HostNS)
}

// openHandles opens netlink and nftables handles in the namespace at path
// ("" for this process's).
func openHandles(path string) (*hostHandles, error) {
	fd, err := nsFD(path)
	if err != nil {
		return nil, err
	}
	h := &hostHandles{fd: fd}
	h.link, err = netlink.NewHandleAt(netns.NsHandle(fd.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("opening a netlink handle: %w", err)
	}
	h.nft, err = nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		h.link.Close()
		fd.Close()
		return nil, fmt.Errorf("opening an nftables handle: %w", err)
	}
	return h, nil
}

func (h *hostHandles) close() {
	h.link.Close()
	h.fd.Close()
}

// Open gives the sandbox called name (see sandbox.ValidName) a network
// namespace under policy: for job.NetworkInternet ("" too) a link to the
// host, held to the egress rules; for job.NetworkNone loopback only. The
// caller must Close it; a name can be open once at a time. Open first
// removes what a crashed Manager left under the same name. When Open
// returns, the link is up and passes traffic.
func (m *Manager) Open(ctx context.Context, name string, policy job.Network) (_ *Sandbox, err error) {
	var s *Sandbox // closed, and not returned, if Open fails
	if err := sandbox.ValidName(name); err != nil {
		return nil, err
	}
	switch policy {
	case "":
		policy = job.NetworkInternet
	case job.NetworkInternet, job.NetworkNone:
	default:
		return nil, fmt.Errorf("unknown network policy %q", policy)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.busy[name] {
		m.mu.Unlock()
		return nil, fmt.Errorf("the network of sandbox %s is open already", name)
	}
	m.busy[name] = true
	m.mu.Unlock()

	s = &Sandbox{m: m, name: name, policy: policy, path: filepath.Join(m.opts.NetnsDir, name), slot: -1}
	defer func() {
		if err != nil {
			if cerr := s.Close(context.WithoutCancel(ctx)); cerr != nil {
				err = errors.Join(err, cerr)
			}
			err = fmt.Errorf("opening the network of sandbox %s: %w", name, err)
		}
	}()
	host, err := m.openHost()
	if err != nil {
		return nil, err
	}
	defer host.close()
	if m.hasLeftovers(host, name) {
		m.log.Warn("removing leftovers of a sandbox's network", "sandbox", name)
		if err := m.remove(name, netip.Addr{}); err != nil {
			return nil, err
		}
	}
	if policy == job.NetworkNone {
		if err := CreateNamespace(s.path, func() error { return loopbackUp(nil) }); err != nil {
			return nil, err
		}
		return s, nil
	}

	if err := CreateNamespace(s.path, setupNamespace); err != nil {
		return nil, err
	}
	if err := m.allocate(host.link, s); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.veth = VethName(name)
	nsf, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace: %w", err)
	}
	defer nsf.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.veth, Alias: name, MTU: m.mtu},
		PeerName:      SandboxInterface,
		PeerNamespace: netlink.NsFd(nsf.Fd()),
	}
	if err := host.link.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("creating link %s: %w", s.veth, err)
	}
	link, err := host.link.LinkByName(s.veth)
	if err != nil {
		return nil, fmt.Errorf("finding link %s: %w", s.veth, err)
	}
	if link.Attrs().Alias != name {
		if err := host.link.LinkSetAlias(link, name); err != nil {
			return nil, fmt.Errorf("naming link %s: %w", s.veth, err)
		}
	}
	if err := InNamespace(m.opts.HostNS, func() error {
		return writeSysctlIfPresent("net/ipv6/conf/"+s.veth+"/disable_ipv6", "1")
	}); err != nil {
		return nil, err
	}
	// Rules before the link is up; until then the link's traffic would be
	// dropped uncounted anyway.
	if err := register(host.nft, name, s.veth); err != nil {
		return nil, err
	}
	if err := host.link.AddrAdd(link, &netlink.Addr{IPNet: ipNet(s.hostAddr, 30)}); err != nil {
		return nil, fmt.Errorf("addressing link %s: %w", s.veth, err)
	}
	if err := host.link.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing link %s up: %w", s.veth, err)
	}
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	if err := waitOperUp(ctx, host.link, s.veth); err != nil {
		return nil, err
	}
	m.log.Debug("sandbox network open", "sandbox", name, "address", s.addr.String(), "link", s.veth)
	return s, nil
}

// hasLeftovers reports whether a namespace file or a link of the sandbox
// called name exists (from a Manager that crashed).
func (m *Manager) hasLeftovers(host *hostHandles, name string) bool {
	if _, err := os.Lstat(filepath.Join(m.opts.NetnsDir, name)); err == nil {
		return true
	}
	_, err := host.link.LinkByName(VethName(name))
	return err == nil
}

// allocate leases s a free /30 of the subnet: one neither leased by this
// Manager nor holding an address on any host interface (a leftover's).
func (m *Manager) allocate(h *netlink.Handle, s *Sandbox) error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, unix.AF_INET) })
	if err != nil {
		return fmt.Errorf("listing host addresses: %w", err)
	}
	used := map[int]bool{}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && m.opts.Subnet.Contains(ip) {
			used[m.slotOf(ip)] = true
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.slots {
		k := (m.next + i) % m.slots
		if used[k] || m.leases[k] != "" {
			continue
		}
		m.leases[k] = s.name
		// Round robin: an address is reused as late as possible.
		m.next = k + 1
		s.slot = k
		s.hostAddr = m.slotAddr(k, 1)
		s.addr = m.slotAddr(k, 2)
		return nil
	}
	return fmt.Errorf("no free /30 left in %s", m.opts.Subnet)
}

func (m *Manager) slotOf(ip netip.Addr) int {
	return int((be32(ip) - be32(m.opts.Subnet.Addr())) / 4)
}

func (m *Manager) slotAddr(slot int, host uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], be32(m.opts.Subnet.Addr())+uint32(slot)*4+host)
	return netip.AddrFrom4(b)
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, 32)}
}

// VethName is the host-side interface of the sandbox called name:
// VethPrefix and 11 hex digits of a hash of the name, within the 15
// characters of an interface name. Its alias holds the name itself.
func VethName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return VethPrefix + hex.EncodeToString(sum[:])[:unix.IFNAMSIZ-1-len(VethPrefix)]
}

// remove deletes everything of the sandbox called name: its link, its
// rules, its conntrack entries (so that a later sandbox given the same
// address inherits no flows), and its namespace file. What is gone already
// is skipped. addr is the sandbox's address if known.
//
// Each of the first three waits for the kernel (an RCU grace period, a scan
// of the whole conntrack table) for 10-30 ms, so they run at once. No rule
// is needed to keep the link in check meanwhile: the host's rules deny
// everything to a link they do not know (rules.go).
func (m *Manager) remove(name string, addr netip.Addr) error {
	host, err := m.openHost()
	if err != nil {
		return err
	}
	defer host.close()
	veth := VethName(name)
	var wg sync.WaitGroup
	var ruleErr, linkErr error
	wg.Go(func() { ruleErr = unregister(host.nft, name, veth) })

	addrs := []netip.Addr{addr}
	link, err := host.link.LinkByName(veth)
	switch {
	case err == nil:
		if as, err := host.link.AddrList(link, unix.AF_INET); err == nil {
			for _, a := range as {
				if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
					addrs = append(addrs, ip.Next()) // the sandbox's end
				}
			}
		}
		wg.Go(func() { m.forgetFlows(name, addrs) })
		if err := host.link.LinkDel(link); err != nil && !isNotFound(err) {
			linkErr = fmt.Errorf("deleting link %s: %w", veth, err)
		}
	case isNotFound(err):
		wg.Go(func() { m.forgetFlows(name, addrs) })
	default:
		linkErr = fmt.Errorf("finding link %s: %w", veth, err)
	}
	wg.Wait()
	return errors.Join(linkErr, ruleErr, RemoveNamespace(filepath.Join(m.opts.NetnsDir, name)))
}

// forgetFlows deletes the host's conntrack entries from the sandbox's
// addresses. It is best effort: a host without conntrack netlink keeps
// them until they time out.
func (m *Manager) forgetFlows(name string, addrs []netip.Addr) {
	var filters []netlink.CustomConntrackFilter
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !a.IsValid() || !m.opts.Subnet.Contains(a) || seen[a] {
			continue
		}
		seen[a] = true
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(netlink.ConntrackOrigSrcIP, a.AsSlice()); err == nil {
			filters = append(filters, f)
		}
	}
	if len(filters) == 0 {
		return
	}
	fd, err := nsFD(m.opts.HostNS)
	if err != nil {
		m.log.Warn("cannot delete a sandbox's conntrack entries", "sandbox", name, "error", err)
		return
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(fd.Fd()), unix.NETLINK_NETFILTER)
	if err == nil {
		defer h.Close()
		_, err = h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...)
	}
	if err != nil {
		m.log.Warn("cannot delete a sandbox's conntrack entries", "sandbox", name, "error", err)
	}
}

func (m *Manager) release(s *Sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.busy, s.name)
	if s.slot >= 0 && m.leases[s.slot] == s.name {
		delete(m.leases, s.slot)
	}
}

// Sandbox is one sandbox's network namespace. Its methods are safe for
// concurrent use.
type Sandbox struct {
	m        *Manager
	name     string
	policy   job.Network
	path     string
	veth     string     // host side; "" under NetworkNone
	slot     int        // -1 without an address
	hostAddr netip.Addr // the sandbox's gateway
	addr     netip.Addr // the sandbox's own address

	mu       sync.Mutex
	closed   bool
	closeErr error
	denied   uint64 // the final count, read by Close
}

// Path is the file of the namespace, for every step's container to join.
func (s *Sandbox) Path() string { return s.path }

// Addr is the sandbox's IPv4 address; invalid under job.NetworkNone.
func (s *Sandbox) Addr() netip.Addr { return s.addr }

// Gateway is the host's address on the sandbox's link; invalid under
// job.NetworkNone.
func (s *Sandbox) Gateway() netip.Addr { return s.hostAddr }

// Nameservers are the DNS servers for the sandbox's resolv.conf; none under
// job.NetworkNone.
func (s *Sandbox) Nameservers() []netip.Addr {
	if s.policy == job.NetworkNone {
		return nil
	}
	return slices.Clone(s.m.opts.Resolvers)
}

// Refresh (re-)applies the namespace's configuration: loopback up and, with
// a link, its address and default route. gVisor's runsc takes the address
// off the interface when a sandbox starts, so a runtime calls Refresh before
// each runsc start — never while one runs, since the host's stack would then
// answer for addresses runsc owns. It is idempotent.
func (s *Sandbox) Refresh(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("opening network namespace: %w", err)
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("opening a netlink handle in the sandbox: %w", err)
	}
	defer h.Close()
	if err := loopbackUp(h); err != nil {
		return err
	}
	if s.policy == job.NetworkNone {
		return nil
	}
	link, err := h.LinkByName(SandboxInterface)
	if err != nil {
		return fmt.Errorf("finding the sandbox's %s: %w", SandboxInterface, err)
	}
	if err := h.AddrReplace(link, &netlink.Addr{IPNet: ipNet(s.addr, 30)}); err != nil {
		return fmt.Errorf("addressing the sandbox's %s: %w", SandboxInterface, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing the sandbox's %s up: %w", SandboxInterface, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: s.hostAddr.AsSlice()}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("routing the sandbox through %s: %w", s.hostAddr, err)
	}
	return waitOperUp(ctx, h, SandboxInterface)
}

// operUpTimeout bounds waitOperUp.
const operUpTimeout = 2 * time.Second

// waitOperUp waits until the link is operationally up. The kernel finishes
// bringing a link up asynchronously (linkwatch): until it has, the link
// drops what it is asked to send, and the first ARP exchange of a sandbox
// would be lost, costing its first connection a one-second retransmit.
// There is no signal short of a netlink subscription, so it polls.
func waitOperUp(ctx context.Context, h *netlink.Handle, name string) error {
	deadline := time.Now().Add(operUpTimeout)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("finding link %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s is not up after %v (operational state %s)", name, operUpTimeout, l.Attrs().OperState)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
	}
}

// Denied is how many packets of new connections (any protocol) the sandbox
// sent that the policy dropped, so far; after Close, the final count.
func (s *Sandbox) Denied(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.policy == job.NetworkNone {
		return s.denied, nil
	}
	return s.count()
}

func (s *Sandbox) count() (uint64, error) {
	fd, err := nsFD(s.m.opts.HostNS)
	if err != nil {
		return 0, err
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		return 0, fmt.Errorf("opening an nftables handle: %w", err)
	}
	n, _, err := deniedPackets(c, s.name)
	return n, err
}

// Close removes the namespace, the link, the rules and the address lease.
// It does its work whatever ctx says; a second Close returns the first's
// result.
func (s *Sandbox) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.closeErr
	}
	if s.veth != "" {
		if n, err := s.count(); err == nil {
			s.denied = n
		}
	}
	if s.policy == job.NetworkNone {
		s.closeErr = RemoveNamespace(s.path)
	} else {
		s.closeErr = s.m.remove(s.name, s.addr)
	}
	if s.closeErr != nil {
		s.closeErr = fmt.Errorf("closing the network of sandbox %s: %w", s.name, s.closeErr)
	}
	s.closed = true
	s.m.release(s)
	return s.closeErr
}

// loopbackUp brings lo up, through h or, with h nil, in the calling
// thread's namespace.
func loopbackUp(h *netlink.Handle) error {
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("opening a netlink handle: %w", err)
		}
		defer h.Close()
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("bringing loopback up: %w", err)
	}
	return nil
}

// setupNamespace runs inside a new sandbox namespace: loopback goes up;
// interfaces created in it from now on (its link) get no IPv6, loopback
// keeps ::1; and every user may open ICMP echo sockets, so that `ping`
// works without the NET_RAW capability sandboxes do not get (as Docker
// does). The egress policy applies to ICMP as to everything else.
func setupNamespace() error {
	if err := loopbackUp(nil); err != nil {
		return err
	}
	if err := writeSysctl("net/ipv4/ping_group_range", "0 2147483647"); err != nil {
		return err
	}
	return writeSysctlIfPresent("net/ipv6/conf/default/disable_ipv6", "1")
}

// writeSysctlIfPresent is writeSysctl on a host that may lack the key
// (IPv6 disabled at boot).
func writeSysctlIfPresent(key, value string) error {
	if err := writeSysctl(key, value); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// retryDump retries a netlink dump that a concurrent change interrupted.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		res, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == 9 {
			return res, err
		}
	}
}

// checkSubnet refuses a subnet that overlaps a network of the host's own
// (other than sandboxes' links).
func checkSubnet(h *netlink.Handle, subnet netip.Prefix) error {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return fmt.Errorf("listing host interfaces: %w", err)
	}
	for _, l := range links {
		if len(l.Attrs().Name) >= len(VethPrefix) && l.Attrs().Name[:len(VethPrefix)] == VethPrefix {
			continue
		}
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, unix.AF_INET) })
		if err != nil {
			return fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP.To4())
			ones, _ := a.Mask.Size()
			if p := netip.PrefixFrom(ip, ones).Masked(); p.Overlaps(subnet) {
				return fmt.Errorf("Options.Subnet %s overlaps %s on the host's %s: choose another subnet", subnet, p, l.Attrs().Name)
			}
		}
	}
	return nil
}

// defaultRouteMTU is the MTU of the interface of the namespace's IPv4
// default route, or DefaultMTU.
func defaultRouteMTU(h *netlink.Handle) int {
	routes, err := retryDump(func() ([]netlink.Route, error) { return h.RouteList(nil, unix.AF_INET) })
	if err != nil {
		return DefaultMTU
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.MTU > 0 {
			return r.MTU
		}
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil && l.Attrs().MTU > 0 {
			return l.Attrs().MTU
		}
	}
	return DefaultMTU
}
