// Package netpolicy gives each sandbox (one job attempt) a network
// namespace whose only way out is a link to the host, through an egress
// firewall with NAT and per-sandbox denial counters, and removes all of it
// again. The container runtimes run every step of the attempt in that
// namespace.
//
// # Policies
//
// job.NetworkInternet: the sandbox reaches public IPv4 destinations over any
// protocol, masqueraded behind whatever host interface routes them. Dropped,
// for every protocol: DeniedRanges (loopback, RFC 1918, CGNAT, link-local
// with 169.254.169.254, multicast, reserved and broadcast), Options.Deny (the
// coordinator), Options.Subnet (so other sandboxes), and anything addressed
// to the host itself, whatever its addresses (the input hook drops all of
// it). DNS (UDP and TCP port 53) goes to Options.Resolvers only, even when a
// resolver lies in a denied range, and to nothing else. Nothing can open a
// connection into a sandbox, from outside or from the host. Sandboxes get no
// IPv6: their link has IPv6 disabled at both ends, and IPv6 from it is
// dropped. A packet whose source address does not belong to the link it
// came from is dropped. Dropped packets of new connections (conntrack state
// new) count towards Sandbox.Denied.
//
// job.NetworkNone: a namespace with loopback only.
//
// rules.go shows the nftables ruleset; the namespace mechanics are in
// netns.go.
//
// # Resources and names
//
// A sandbox called name (sandbox.ValidName) gets:
//   - the namespace file Options.NetnsDir/name (Sandbox.Path);
//   - a veth pair: VethPrefix plus a hash of the name on the host (within the
//     15 characters of an interface name), with the name itself as its
//     alias, and SandboxInterface inside, with a /30 of Options.Subnet;
//   - the nftables chain ChainPrefix+name in table TableName, and one element
//     of its map "sandboxes".
//
// Close removes them, and the host's conntrack entries of the sandbox's
// address. RemoveLeftovers finds leftovers by these names.
//
// # Trust
//
// The rules live in the host namespace, out of the sandbox's reach: a step
// that is root in its namespace can change its own interface and routes, but
// not what the host forwards. One Manager owns a host namespace: it replaces
// the table when it starts and its janitor removes every sandbox it does
// not know. Other firewalls on the host (Docker's FORWARD chain policy
// drop, for one) can still drop sandboxes' traffic; Check reports them.
package netpolicy
