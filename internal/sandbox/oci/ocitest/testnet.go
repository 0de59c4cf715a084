// A test network for the runtimes' network hook.
//
// Net makes, with iproute2, a peer network namespace holding a bridge at
// PeerAddr (198.51.100.10, a documentation address) and a TCP server on
// it, listening from inside that namespace. Its NetworkFunc gives each
// attempt a namespace of its own whose eth0 is a veth into the peer's bridge,
// with a /24 address and a default route through the peer. Nothing is
// routed anywhere else: packets to any other address go to the peer's bridge
// and die there. Everything is created in namespaces the test owns and
// removed by the test's cleanup.
package ocitest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/sandbox/oci"
	"github.com/airlock-run/airlock/internal/testenv"
)

// PeerAddr is the peer server's address.
var PeerAddr = netip.MustParseAddr("198.51.100.10")

// PeerGreeting is what the peer's server writes to every connection.
const PeerGreeting = "hello from the peer\n"

// Net is a test network; see the file comment.
type Net struct {
	// Addr is the peer server's address, 198.51.100.10:PORT: it writes
	// PeerGreeting to every connection and closes it.
	Addr netip.AddrPort
	// Nameservers is what every attempt's Network reports (documentation
	// addresses; nothing answers there).
	Nameservers []netip.Addr
	// Denied is what every attempt's Network reports as its denial count.
	Denied uint64

	t    testing.TB
	name string // prefix of the namespaces' names
	peer string // the peer namespace's name

	mu       sync.Mutex
	attempts map[string]*Attempt
}

var netSeq atomic.Int64

// NewNet makes a test network, or ends the test as missing a component when
// iproute2 or network namespaces are unavailable. Cleanup removes it.
func NewNet(t testing.TB) *Net {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		testenv.Missing(t, "iproute2 (ip)", err)
	}
	n := &Net{
		Nameservers: []netip.Addr{netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("2001:db8::53")},
		Denied:      7,
		t:           t,
		name:        fmt.Sprintf("airlock-t%d-%d", os.Getpid(), netSeq.Add(1)),
		attempts:    make(map[string]*Attempt),
	}
	n.peer = n.name + "-peer"
	if err := ip("netns", "add", n.peer); err != nil {
		testenv.Missing(t, "network namespaces (ip netns add)", err)
	}
	t.Cleanup(func() {
		if err := ip("netns", "del", n.peer); err != nil {
			t.Errorf("removing the peer namespace: %v", err)
		}
	})
	err := ipBatch(n.peer,
		"link set lo up",
		"link add br0 type bridge",
		"addr add "+PeerAddr.String()+"/24 dev br0",
		"link set br0 up")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenIn("/run/netns/"+n.peer, PeerAddr.String()+":0")
	if err != nil {
		t.Fatalf("listening in the peer namespace: %v", err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			fmt.Fprint(c, PeerGreeting)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	n.Addr = ln.Addr().(*net.TCPAddr).AddrPort()
	return n
}

// Attempt is the network of one attempt, as the runtime sees it.
type Attempt struct {
	Sandbox   string
	Policy    job.Network
	Refreshes atomic.Int64
	Closes    atomic.Int64

	net  *Net
	ns   string // namespace name
	addr netip.Addr
}

var _ oci.Network = (*Attempt)(nil)

// Func returns the NetworkFunc to configure the runtime with.
func (n *Net) Func() oci.NetworkFunc {
	return func(ctx context.Context, sandbox string, policy job.Network) (oci.Network, error) {
		n.mu.Lock()
		k := len(n.attempts)
		a := &Attempt{
			Sandbox: sandbox, Policy: policy, net: n,
			ns:   fmt.Sprintf("%s-a%d", n.name, k),
			addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(20 + k)}),
		}
		n.attempts[sandbox] = a
		n.mu.Unlock()
		if k > 200 {
			return nil, errors.New("the test network has no addresses left")
		}
		if err := ip("netns", "add", a.ns); err != nil {
			return nil, err
		}
		n.t.Cleanup(func() { _ = ip("netns", "del", a.ns) }) // a test that never closed it
		peerEnd := fmt.Sprintf("vp%d", k)
		if err := ip("link", "add", "eth0", "netns", a.ns, "type", "veth", "peer", "name", peerEnd, "netns", n.peer); err != nil {
			return nil, err
		}
		if err := ipBatch(n.peer, "link set "+peerEnd+" master br0 up"); err != nil {
			return nil, err
		}
		return a, a.configure()
	}
}

// Attempt returns the network made for sandbox, or nil.
func (n *Net) Attempt(sandbox string) *Attempt {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attempts[sandbox]
}

// Path returns the attempt's namespace file.
func (a *Attempt) Path() string { return "/run/netns/" + a.ns }

// Addr returns the attempt's address.
func (a *Attempt) Addr() netip.Addr { return a.addr }

// Refresh counts the call and configures the namespace again.
func (a *Attempt) Refresh(ctx context.Context) error {
	a.Refreshes.Add(1)
	return a.configure()
}

// configure brings up loopback and eth0 with its address and the default
// route through the peer.
func (a *Attempt) configure() error {
	return ipBatch(a.ns,
		"link set lo up",
		"link set eth0 up",
		"addr replace "+a.addr.String()+"/24 dev eth0",
		"route replace default via "+PeerAddr.String()+" dev eth0")
}

// Nameservers returns the Net's Nameservers.
func (a *Attempt) Nameservers() []netip.Addr { return a.net.Nameservers }

// Denied returns the Net's Denied.
func (a *Attempt) Denied(ctx context.Context) (uint64, error) { return a.net.Denied, nil }

// Close removes the attempt's namespace, and with it the veth.
func (a *Attempt) Close(ctx context.Context) error {
	if a.Closes.Add(1) > 1 {
		return fmt.Errorf("network of %s closed twice", a.Sandbox)
	}
	return ip("netns", "del", a.ns)
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipBatch runs iproute2 commands in namespace ns.
func ipBatch(ns string, cmds ...string) error {
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s: %q: %w: %s", ns, cmds, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// listenIn opens a TCP listener on addr in the network namespace at nsPath:
// a socket stays in the namespace it was made in.
func listenIn(nsPath, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering %s: %w", nsPath, err)
	}
	ln, lerr := net.Listen("tcp", addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, and ends with its goroutine.
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("leaving %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	return ln, lerr
}
