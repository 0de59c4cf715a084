// The egress firewall, as nftables rules in the host namespace.
//
// One table holds the policy for every sandbox, because the policy is the
// same for all of them; only the denial counter is per sandbox. In nft
// syntax (Options' values filled in):
//
//	table inet airlock {
//		set denied    { type ipv4_addr; flags interval; elements = { DeniedRanges, Options.Deny, Options.Subnet } }
//		set resolvers { type ipv4_addr; elements = { Options.Resolvers } }
//		map sandboxes { type ifname : verdict; elements = { "air-0123456789a" : goto sandbox-airlock-42-1, ... } }
//
//		chain forward { type filter hook forward priority filter; policy accept;
//			iifname "air-*" goto egress
//			oifname "air-*" ct state established,related accept
//			oifname "air-*" drop                     # nothing opens a connection into a sandbox
//		}
//		chain input { type filter hook input priority filter; policy accept;
//			iifname "air-*" goto host                # the host's own addresses, whatever they are
//		}
//		chain output { type filter hook output priority filter; policy accept;
//			oifname "air-*" ct state established,related accept
//			oifname "air-*" drop
//		}
//		chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//			ip saddr Options.Subnet oifname != "air-*" masquerade
//		}
//		chain egress {
//			meta nfproto ipv6 goto deny              # sandboxes have no IPv6
//			fib saddr . iif oif missing goto deny    # a spoofed source address
//			ip daddr @resolvers udp dport 53 accept  # before the denied ranges: a resolver may be private
//			ip daddr @resolvers tcp dport 53 accept
//			udp dport 53 goto deny                   # DNS to anyone else
//			tcp dport 53 goto deny
//			ip daddr @denied goto deny
//			accept
//		}
//		chain host {
//			meta nfproto ipv6 goto deny
//			fib saddr . iif oif missing goto deny
//			ip daddr @resolvers udp dport 53 accept  # a resolver on the host itself
//			ip daddr @resolvers tcp dport 53 accept
//			goto deny
//		}
//		chain deny {
//			iifname vmap @sandboxes                  # count on the sandbox's chain
//			drop                                     # an interface no sandbox owns
//		}
//		chain sandbox-airlock-42-1 {
//			ct state new counter drop
//			drop
//		}
//	}
//
// Sandboxes are recognised by the prefix of their host-side interface name,
// so an "air-" interface whose sandbox is gone (or not registered yet) gets
// the same policy and has its denials dropped uncounted: the rules fail
// closed. Opening a sandbox adds its chain and one map element in one
// transaction, closing removes them in one; New replaces the whole table
// atomically, so an upgraded ruleset never coexists with an old one.
//
// An accept here ends only this table's verdict: a chain of another table at
// the same hook (Docker's iptables FORWARD policy drop, a host firewall) can
// still drop a sandbox's traffic. Check reports such chains.

package netpolicy

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names in the nftables ruleset.
const (
	// TableName is the inet table holding every sandbox's rules.
	TableName = "airlock"
	// ChainPrefix starts the name of a sandbox's chain; the sandbox's name
	// follows.
	ChainPrefix = "sandbox-"

	setDenied    = "denied"
	setResolvers = "resolvers"
	mapSandboxes = "sandboxes"
	chainEgress  = "egress"
	chainHost    = "host"
	chainDeny    = "deny"
)

// DeniedRanges are the IPv4 destinations no sandbox may reach, for any
// protocol: "this network", loopback, RFC 1918, CGNAT, link-local (with the
// cloud metadata address 169.254.169.254), multicast, and the reserved range
// with the limited broadcast address. Options.Deny and Options.Subnet are
// added to them.
var DeniedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"), // with 255.255.255.255
}

var table = &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}

// sandboxesMap is the verdict map from a host-side interface to its
// sandbox's chain, as a reference to the existing map.
func sandboxesMap() *nftables.Set {
	return &nftables.Set{Table: table, Name: mapSandboxes, IsMap: true,
		KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict}
}

// ruleset is what install puts into a namespace.
type ruleset struct {
	denied    []netip.Prefix // IPv4 only
	resolvers []netip.Addr   // IPv4 only
	subnet    netip.Prefix
}

// install replaces the airlock table in the namespace c talks to with one
// holding rs, in one transaction. Sandboxes registered in the old table lose
// their registration (their traffic is still denied; see the file comment).
func install(c *nftables.Conn, rs ruleset) error {
	// add + delete + add: the transaction replaces the table whether or not
	// it existed.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)

	denied := &nftables.Set{Table: table, Name: setDenied, KeyType: nftables.TypeIPAddr, Interval: true}
	if err := c.AddSet(denied, intervalElements(rs.denied)); err != nil {
		return fmt.Errorf("building set %s: %w", setDenied, err)
	}
	resolvers := &nftables.Set{Table: table, Name: setResolvers, KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for _, a := range rs.resolvers {
		elems = append(elems, nftables.SetElement{Key: a.AsSlice()})
	}
	if err := c.AddSet(resolvers, elems); err != nil {
		return fmt.Errorf("building set %s: %w", setResolvers, err)
	}
	sandboxes := sandboxesMap()
	if err := c.AddSet(sandboxes, nil); err != nil {
		return fmt.Errorf("building map %s: %w", mapSandboxes, err)
	}

	accept := nftables.ChainPolicyAccept
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	regular := func(name string) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: table})
	}
	forward := base("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	input := base("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	output := base("output", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter)
	post := base("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	egress := regular(chainEgress)
	host := regular(chainHost)
	deny := regular(chainDeny)

	rule := func(ch *nftables.Chain, parts ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: slices.Concat(parts...)})
	}
	dnsTo := func(set *nftables.Set, proto byte) []expr.Any {
		return slices.Concat(ipDaddrIn(set), l4proto(proto), dport(53))
	}

	rule(forward, ifname(expr.MetaKeyIIFNAME, true), verdict(expr.VerdictGoto, chainEgress))
	rule(forward, ifname(expr.MetaKeyOIFNAME, true), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept, ""))
	rule(forward, ifname(expr.MetaKeyOIFNAME, true), verdict(expr.VerdictDrop, ""))

	rule(input, ifname(expr.MetaKeyIIFNAME, true), verdict(expr.VerdictGoto, chainHost))

	rule(output, ifname(expr.MetaKeyOIFNAME, true), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept, ""))
	rule(output, ifname(expr.MetaKeyOIFNAME, true), verdict(expr.VerdictDrop, ""))

	rule(post, nfproto(unix.NFPROTO_IPV4), ipSaddrIn(rs.subnet), ifname(expr.MetaKeyOIFNAME, false), []expr.Any{&expr.Masq{}})

	for _, ch := range []*nftables.Chain{egress, host} {
		rule(ch, nfproto(unix.NFPROTO_IPV6), verdict(expr.VerdictGoto, chainDeny))
		rule(ch, spoofed(), verdict(expr.VerdictGoto, chainDeny))
		rule(ch, dnsTo(resolvers, unix.IPPROTO_UDP), verdict(expr.VerdictAccept, ""))
		rule(ch, dnsTo(resolvers, unix.IPPROTO_TCP), verdict(expr.VerdictAccept, ""))
	}
	rule(egress, l4proto(unix.IPPROTO_UDP), dport(53), verdict(expr.VerdictGoto, chainDeny))
	rule(egress, l4proto(unix.IPPROTO_TCP), dport(53), verdict(expr.VerdictGoto, chainDeny))
	rule(egress, ipDaddrIn(denied), verdict(expr.VerdictGoto, chainDeny))
	rule(egress, verdict(expr.VerdictAccept, ""))
	rule(host, verdict(expr.VerdictGoto, chainDeny))

	rule(deny, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: sandboxes.Name, SetID: sandboxes.ID, IsDestRegSet: true, DestRegister: 0},
	})
	rule(deny, verdict(expr.VerdictDrop, ""))

	if err := c.Flush(); err != nil {
		return fmt.Errorf("installing nftables table %s: %w", TableName, err)
	}
	return nil
}

// register adds a sandbox's counting chain and its map element; a chain
// left from before is emptied first.
func register(c *nftables.Conn, sandbox, veth string) error {
	ch := c.AddChain(&nftables.Chain{Name: ChainPrefix + sandbox, Table: table})
	c.FlushChain(ch)
	c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: slices.Concat(
		ctState(expr.CtStateBitNEW), []expr.Any{&expr.Counter{}}, verdict(expr.VerdictDrop, ""))})
	c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: verdict(expr.VerdictDrop, "")})
	if err := c.SetAddElements(sandboxesMap(), []nftables.SetElement{{
		Key:         ifnameKey(veth),
		VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: ch.Name},
	}}); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding nftables chain %s: %w", ch.Name, err)
	}
	return nil
}

// unregister removes a sandbox's map element and chain; either being gone
// already is not an error.
func unregister(c *nftables.Conn, sandbox, veth string) error {
	ch := &nftables.Chain{Name: ChainPrefix + sandbox, Table: table}
	elem := []nftables.SetElement{{Key: ifnameKey(veth)}}
	if err := c.SetDeleteElements(sandboxesMap(), elem); err != nil {
		return err
	}
	c.DelChain(ch)
	err := c.Flush()
	if err == nil || !errors.Is(err, unix.ENOENT) {
		if err != nil {
			return fmt.Errorf("removing nftables chain %s: %w", ch.Name, err)
		}
		return nil
	}
	// Something was gone already; remove what is left one by one.
	if err := c.SetDeleteElements(sandboxesMap(), elem); err != nil {
		return err
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing nftables map element of %s: %w", sandbox, err)
	}
	c.DelChain(ch)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing nftables chain %s: %w", ch.Name, err)
	}
	return nil
}

// deniedPackets sums the counters of a sandbox's chain; ok is false when
// the chain does not exist.
func deniedPackets(c *nftables.Conn, sandbox string) (n uint64, ok bool, err error) {
	rules, err := c.GetRules(table, &nftables.Chain{Name: ChainPrefix + sandbox, Table: table})
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("reading nftables chain %s%s: %w", ChainPrefix, sandbox, err)
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if ctr, isCounter := e.(*expr.Counter); isCounter {
				n += ctr.Packets
			}
		}
	}
	return n, true, nil
}

// sandboxChains lists the sandboxes that have a chain in the table.
func sandboxChains(c *nftables.Conn) ([]string, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var names []string
	for _, ch := range chains {
		if ch.Table.Name == TableName && len(ch.Name) > len(ChainPrefix) && ch.Name[:len(ChainPrefix)] == ChainPrefix {
			names = append(names, ch.Name[len(ChainPrefix):])
		}
	}
	return names, nil
}

func verdict(kind expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}
}

// ifname matches (or, with match false, does not match) interfaces named
// with VethPrefix.
func ifname(key expr.MetaKey, match bool) []expr.Any {
	op := expr.CmpOpEq
	if !match {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(VethPrefix)},
	}
}

// ifnameKey is name as an ifname set key: 16 bytes, zero padded.
func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// dport matches the transport header's destination port (after l4proto).
func dport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// ipDaddrIn matches IPv4 packets whose destination is in set.
func ipDaddrIn(set *nftables.Set) []expr.Any {
	return slices.Concat(nfproto(unix.NFPROTO_IPV4), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	})
}

// ipSaddrIn matches IPv4 packets whose source is in p (after nfproto).
func ipSaddrIn(p netip.Prefix) []expr.Any {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// ctState matches packets whose conntrack state has any of bits.
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// spoofed matches packets whose source address is not routed back through
// the interface they came in on (reverse path filtering).
func spoofed() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// intervalElements encodes IPv4 prefixes as the elements of an interval
// set: merged, since the kernel refuses overlapping intervals, each a start
// element and an end element one past its last address (none for a range
// that runs to 255.255.255.255).
func intervalElements(prefixes []netip.Prefix) []nftables.SetElement {
	var elems []nftables.SetElement
	for _, r := range mergeRanges(prefixes) {
		elems = append(elems, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, r.first)})
		if r.last != ^uint32(0) {
			elems = append(elems, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, r.last+1), IntervalEnd: true})
		}
	}
	return elems
}

// addrRange is an inclusive range of IPv4 addresses.
type addrRange struct{ first, last uint32 }

// mergeRanges turns IPv4 prefixes into sorted, disjoint, non-adjacent
// ranges.
func mergeRanges(prefixes []netip.Prefix) []addrRange {
	var rs []addrRange
	for _, p := range prefixes {
		if !p.Addr().Is4() {
			continue
		}
		first := binary.BigEndian.Uint32(p.Masked().Addr().AsSlice())
		rs = append(rs, addrRange{first, first | (^uint32(0) >> p.Bits())})
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return cmp.Compare(a.first, b.first) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].last == ^uint32(0) || r.first <= out[n-1].last+1) {
			out[n-1].last = max(out[n-1].last, r.last)
			continue
		}
		out = append(out, r)
	}
	return out
}
