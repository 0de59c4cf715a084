// Package nettest builds an enclosed network for tests of sandbox egress:
// network namespaces that play the executor's host and "the internet", with
// public, private, link-local and DNS hosts, so that a test can send any
// traffic it likes without ever touching a real network.
//
//	sandbox ns ──veth── enclosure ns ──uplink── internet ns
//	(made by the          203.0.113.2/30        203.0.113.1/30, and on lo:
//	 code under test)     default route ──▶       198.51.100.10  PublicAddr
//	                      TCP echo :7 on all      198.51.100.53  OtherDNSAddr
//	                      addresses, UDP echo     10.66.0.10     PrivateAddr
//	                      :7 on 127.0.0.1 and     10.66.0.53     ResolverAddr
//	                      the uplink              169.254.169.254 MetadataAddr
//
// The enclosure has no link to the real host: its only way out is the
// internet namespace, which has no way out at all. Every host address in
// the internet namespace serves TCP and UDP echo (port 7), HTTP (80) and DNS
// (53, UDP and TCP; TestName resolves to PublicAddr), and answers ping. The
// resolver is at a private address on purpose: on the machines we run on,
// the real resolver is too, so the policy's exception for it is exercised.
//
// Services count what they receive (World.Hits), so a test can tell "the
// packet was dropped on the way out" from "the answer was lost". Probes run
// inside a namespace (Netns) and report whether anything answered: Silent
// says a probe got no answer at all, which is what a dropped packet looks
// like, as opposed to a refusal (a reset, an ICMP error).
//
// Everything is uniquely named per test, lives in the test's temporary
// directory, and is removed and checked gone in t.Cleanup.
package nettest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/netpolicy"
	"github.com/airlock-run/airlock/internal/testenv"
)

// Addresses of the enclosed world.
var (
	PublicAddr   = netip.MustParseAddr("198.51.100.10")   // a public host
	OtherDNSAddr = netip.MustParseAddr("198.51.100.53")   // a public host that is a DNS server, but not the resolver
	PrivateAddr  = netip.MustParseAddr("10.66.0.10")      // a host on a private network
	ResolverAddr = netip.MustParseAddr("10.66.0.53")      // the resolver, on a private network
	MetadataAddr = netip.MustParseAddr("169.254.169.254") // a cloud metadata service
	UplinkAddr   = netip.MustParseAddr("203.0.113.2")     // the enclosure's own address
	RouterAddr   = netip.MustParseAddr("203.0.113.1")     // the internet's end of the uplink
)

// Ports of the services.
const (
	EchoPort = 7  // TCP and UDP echo
	HTTPPort = 80 // answers "hello from <address>"
	DNSPort  = 53 // UDP and TCP
)

// TestName is the name the DNS servers resolve, to PublicAddr.
const TestName = "public.airlock.test."

// World is the enclosed network of one test.
type World struct {
	// Enclosure plays the executor's host: give its Path to netpolicy as
	// Options.HostNS, or start an executor inside it with Command.
	Enclosure Netns
	// Internet holds the router and every remote host.
	Internet Netns

	mu   sync.Mutex
	hits map[netip.AddrPort]int
}

// New builds the world for t and removes it when t ends. It needs root; a
// missing kernel feature ends the test through testenv.Missing.
func New(t testing.TB) *World {
	t.Helper()
	dir := t.TempDir()
	w := &World{
		Enclosure: Netns{path: filepath.Join(dir, "enclosure")},
		Internet:  Netns{path: filepath.Join(dir, "internet")},
		hits:      map[netip.AddrPort]int{},
	}
	var closers []io.Closer
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
		wg.Wait()
		for _, n := range []Netns{w.Internet, w.Enclosure} {
			if err := netpolicy.RemoveNamespace(n.path); err != nil {
				t.Errorf("removing the test network: %v", err)
			}
			if _, err := os.Lstat(n.path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("namespace file %s is still there after cleanup (%v)", n.path, err)
			}
		}
	})

	if err := netpolicy.CreateNamespace(w.Enclosure.path, nil); err != nil {
		testenv.Missing(t, "network namespaces", err)
	}
	if err := netpolicy.CreateNamespace(w.Internet.path, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.link(); err != nil {
		t.Fatalf("building the test network: %v", err)
	}

	stream := func(n Netns, port int, handle func(net.Listener)) {
		l, err := n.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			t.Fatalf("test network: %v", err)
		}
		closers = append(closers, l)
		wg.Go(func() { handle(l) })
	}
	packet := func(n Netns, a netip.Addr, port int, answer func([]byte) []byte) {
		// One socket per address, so that answers come from the address
		// asked.
		c, err := n.ListenPacket("udp", netip.AddrPortFrom(a, uint16(port)).String())
		if err != nil {
			t.Fatalf("test network: %v", err)
		}
		closers = append(closers, c)
		wg.Go(func() { w.serveUDP(c, answer) })
	}
	stream(w.Internet, EchoPort, func(l net.Listener) { w.serveTCP(l, echo) })
	stream(w.Internet, DNSPort, func(l net.Listener) { w.serveTCP(l, serveDNSStream) })
	stream(w.Internet, HTTPPort, w.serveHTTP)
	for _, a := range []netip.Addr{PublicAddr, OtherDNSAddr, PrivateAddr, ResolverAddr, MetadataAddr, RouterAddr} {
		packet(w.Internet, a, EchoPort, udpEcho)
		packet(w.Internet, a, DNSPort, answerDNS)
	}
	stream(w.Enclosure, EchoPort, func(l net.Listener) { w.serveTCP(l, echo) })
	for _, a := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), UplinkAddr} {
		packet(w.Enclosure, a, EchoPort, udpEcho)
	}
	return w
}

// link wires the enclosure to the internet namespace and addresses both.
func (w *World) link() error {
	enc, err := handle(w.Enclosure.path)
	if err != nil {
		return err
	}
	defer enc.Close()
	inet, err := handle(w.Internet.path)
	if err != nil {
		return err
	}
	defer inet.Close()
	inetFD, err := os.Open(w.Internet.path)
	if err != nil {
		return err
	}
	defer inetFD.Close()
	err = enc.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "downlink",
		PeerNamespace: netlink.NsFd(inetFD.Fd())})
	if err != nil {
		return fmt.Errorf("creating the uplink: %w", err)
	}
	if err := configure(enc, "uplink", prefix(UplinkAddr, 30)); err != nil {
		return err
	}
	if err := configure(inet, "downlink", prefix(RouterAddr, 30)); err != nil {
		return err
	}
	var hosts []netip.Prefix
	for _, a := range []netip.Addr{PublicAddr, OtherDNSAddr, PrivateAddr, ResolverAddr, MetadataAddr} {
		hosts = append(hosts, prefix(a, 32))
	}
	if err := configure(inet, "lo", hosts...); err != nil {
		return err
	}
	if err := configure(enc, "lo"); err != nil {
		return err
	}
	uplink, err := enc.LinkByName("uplink")
	if err != nil {
		return err
	}
	if err := enc.RouteAdd(&netlink.Route{LinkIndex: uplink.Attrs().Index, Gw: RouterAddr.AsSlice()}); err != nil {
		return fmt.Errorf("routing the enclosure: %w", err)
	}
	return nil
}

// AddAddress gives the internet namespace one more host address, which
// answers ping and serves TCP echo, DNS over TCP and HTTP (the services
// listening on all addresses).
func (w *World) AddAddress(addr netip.Addr) error {
	h, err := handle(w.Internet.path)
	if err != nil {
		return err
	}
	defer h.Close()
	return configure(h, "lo", prefix(addr, 32))
}

// Hits is how many connections, datagrams and DNS queries the world's
// services received at dst so far.
func (w *World) Hits(dst netip.AddrPort) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[dst]
}

func (w *World) hit(local net.Addr) {
	var ap netip.AddrPort
	switch a := local.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	w.mu.Lock()
	w.hits[ap]++
	w.mu.Unlock()
}

// serveTCP serves l until it is closed, and then closes the connections
// still open.
func (w *World) serveTCP(l net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
	)
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		w.hit(c.LocalAddr())
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			handle(c)
		})
	}
}

func (w *World) serveUDP(c net.PacketConn, answer func([]byte) []byte) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		w.hit(c.LocalAddr())
		if reply := answer(buf[:n]); reply != nil {
			c.WriteTo(reply, from)
		}
	}
}

func (w *World) serveHTTP(l net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			local := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
			fmt.Fprintf(rw, "hello from %s\n", local.(*net.TCPAddr).AddrPort().Addr().Unmap())
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				w.hit(c.LocalAddr())
			}
		},
	}
	srv.Serve(l) // until the listener is closed
	srv.Close()
}

func echo(c net.Conn) { io.Copy(c, c) }

func udpEcho(b []byte) []byte { return b }

// Netns is a network namespace bound to a file.
type Netns struct{ path string }

// At is the namespace bound at path, such as a sandbox's.
func At(path string) Netns { return Netns{path: path} }

// Path is the namespace's file.
func (n Netns) Path() string { return n.path }

// Do runs fn on a thread inside the namespace (see netpolicy.InNamespace).
func (n Netns) Do(fn func() error) error { return netpolicy.InNamespace(n.path, fn) }

// Listen listens inside the namespace.
func (n Netns) Listen(network, addr string) (l net.Listener, err error) {
	err = n.Do(func() error {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket listens inside the namespace.
func (n Netns) ListenPacket(network, addr string) (c net.PacketConn, err error) {
	err = n.Do(func() error {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects from inside the namespace (the socket is made there, so
// it stays there).
func (n Netns) Dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.Do(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Command runs name inside the namespace, through nsenter(1).
func (n Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.path, "--", name}, args...)...)
}

// NewNamespace creates an empty namespace (loopback up) for t, removed when
// t ends.
func NewNamespace(t testing.TB) Netns {
	t.Helper()
	n := Netns{path: filepath.Join(t.TempDir(), "netns")}
	if err := netpolicy.CreateNamespace(n.path, nil); err != nil {
		testenv.Missing(t, "network namespaces", err)
	}
	t.Cleanup(func() {
		if err := netpolicy.RemoveNamespace(n.path); err != nil {
			t.Error(err)
		}
	})
	h, err := handle(n.path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := configure(h, "lo"); err != nil {
		t.Fatal(err)
	}
	return n
}

// handle is a netlink handle in the namespace at path.
func handle(path string) (*netlink.Handle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink handle in %s: %w", path, err)
	}
	return h, nil
}

// configure gives the link addrs and brings it up.
func configure(h *netlink.Handle, link string, addrs ...netip.Prefix) error {
	l, err := h.LinkByName(link)
	if err != nil {
		return fmt.Errorf("finding %s: %w", link, err)
	}
	for _, a := range addrs {
		ipn := &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			return fmt.Errorf("adding %s to %s: %w", a, link, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", link, err)
	}
	return nil
}

func prefix(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }
