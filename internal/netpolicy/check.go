package netpolicy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Item is one thing the network policy needs from the host, and whether it
// has it.
type Item struct {
	Name   string // "network namespaces", "nftables", ...
	OK     bool
	Detail string // what was found, or what is missing and how to get it; "warning: ..." for a risk that does not stop New
}

// Check reports, item by item, whether this host can give sandboxes the
// network configured by opts; where an item is not OK, New or Open would
// fail. It tries everything for real in a short-lived scratch namespace — a
// link, the whole ruleset — and changes nothing on the host apart from
// creating Options.NetnsDir and a test file in it, which it removes.
func Check(opts Options) []Item {
	var items []Item
	add := func(name string, err error, detail string) {
		if err != nil {
			items = append(items, Item{Name: name, Detail: err.Error()})
			return
		}
		items = append(items, Item{Name: name, OK: true, Detail: detail})
	}
	add("options", opts.Validate(), "")
	opts = opts.withDefaults()

	scratch, err := scratchNamespace()
	add("network namespaces", err, "")
	if err == nil {
		defer scratch.Close()
		add("namespace directory", checkNetnsDir(opts.NetnsDir, scratch), opts.NetnsDir)
		veth, nft := checkInScratch(scratch, opts.ruleset())
		add("veth links", veth, "")
		add("nftables", nft, "table inet "+TableName+": conntrack, fib, masquerade, verdict maps, interval sets")
	}

	host, err := openHandles(opts.HostNS)
	if err != nil {
		add("host namespace", err, "")
		return items
	}
	defer host.close()
	add("subnet", checkSubnet(host.link, opts.Subnet), opts.Subnet.String()+" is free on the host")
	var forwarding string
	err = InNamespace(opts.HostNS, func() error {
		forwarding, err = readSysctl("net/ipv4/ip_forward")
		return err
	})
	switch {
	case err != nil:
		add("IPv4 forwarding", err, "")
	case forwarding == "1":
		add("IPv4 forwarding", nil, "on")
	default:
		add("IPv4 forwarding", nil, "off: New turns it on (net.ipv4.ip_forward=1)")
	}
	add("host firewall", nil, hostFirewall(opts.HostNS, host.nft))
	return items
}

// scratchNamespace creates a network namespace that lives as long as the
// returned file is open.
func scratchNamespace() (*os.File, error) {
	var f *os.File
	err := onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unsharing network namespace: %w", err)
		}
		var err error
		f, err = os.Open(threadNS)
		return err
	})
	return f, err
}

// checkNetnsDir binds the scratch namespace to a file in dir, and removes
// it.
func checkNetnsDir(dir string, scratch *os.File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, fmt.Sprintf(".check-%d", os.Getpid()))
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	err = unix.Mount(fmt.Sprintf("/proc/self/fd/%d", scratch.Fd()), path, "", unix.MS_BIND, "")
	if err != nil {
		err = fmt.Errorf("binding a network namespace to a file in %s: %w", dir, err)
	}
	return errors.Join(err, RemoveNamespace(path))
}

// checkInScratch creates a sandbox-like link and installs the ruleset, with
// one sandbox registered, in the scratch namespace.
func checkInScratch(scratch *os.File, rs ruleset) (vethErr, nftErr error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(scratch.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		err = fmt.Errorf("opening a netlink handle: %w", err)
		return err, err
	}
	defer h.Close()
	name := VethName("check")
	vethErr = h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Alias: "check"}, PeerName: SandboxInterface})
	if vethErr != nil {
		vethErr = fmt.Errorf("creating a veth pair: %w", vethErr)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(scratch.Fd())))
	if err != nil {
		return vethErr, fmt.Errorf("opening an nftables handle: %w", err)
	}
	if err := install(c, rs); err != nil {
		return vethErr, err
	}
	if err := register(c, "check", name); err != nil {
		return vethErr, err
	}
	if _, _, err := deniedPackets(c, "check"); err != nil {
		return vethErr, err
	}
	return vethErr, unregister(c, "check", name)
}

// hostFirewall describes what else filters forwarded packets in the host
// namespace: a forward-hook chain with policy drop in another table (as
// Docker's iptables FORWARD chain has) drops sandboxes' traffic unless it
// accepts it first.
func hostFirewall(hostNS string, c *nftables.Conn) string {
	var warnings []string
	chains, err := c.ListChains()
	if err != nil {
		return "warning: cannot list nftables chains: " + err.Error()
	}
	for _, ch := range chains {
		switch ch.Table.Family {
		case nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet:
		default:
			continue
		}
		if ch.Table.Name == TableName || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		warnings = append(warnings, fmt.Sprintf("chain %s of table %s drops forwarded packets by default", ch.Name, ch.Table.Name))
	}
	var legacy string
	_ = InNamespace(hostNS, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/ip_tables_names")
		legacy = string(b)
		return err
	})
	if strings.Contains(legacy, "filter") {
		warnings = append(warnings, "iptables-legacy has a filter table")
	}
	if len(warnings) == 0 {
		return "nothing else filters forwarded packets"
	}
	return "warning: " + strings.Join(warnings, "; ") +
		": sandboxes' traffic must be accepted there too, e.g. `iptables -I DOCKER-USER -i " + VethPrefix + "+ -j ACCEPT` and `iptables -I DOCKER-USER -o " + VethPrefix + "+ -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT` (the airlock table still filters it)"
}
