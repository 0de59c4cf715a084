package nettest_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/netpolicy/nettest"
)

// The enclosure itself reaches every host and service of the world: these
// are the controls for the policy tests, which expect silence instead.
func TestEnclosureReachesEveryHost(t *testing.T) {
	w := nettest.New(t)
	hosts := []netip.Addr{nettest.PublicAddr, nettest.OtherDNSAddr, nettest.PrivateAddr, nettest.ResolverAddr, nettest.MetadataAddr}
	for _, h := range hosts {
		t.Run(h.String(), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			echo := netip.AddrPortFrom(h, nettest.EchoPort)
			if err := w.Enclosure.TCPEcho(ctx, echo); err != nil {
				t.Errorf("TCP echo: %v", err)
			}
			if err := w.Enclosure.UDPEcho(ctx, echo); err != nil {
				t.Errorf("UDP echo: %v", err)
			}
			if got, want := w.Hits(echo), 2; got != want {
				t.Errorf("Hits(%s) = %d, want %d", echo, got, want)
			}
			if err := w.Enclosure.Ping(ctx, h); err != nil {
				t.Errorf("ping: %v", err)
			}
			body, err := w.Enclosure.HTTPGet(ctx, fmt.Sprintf("http://%s/", h))
			if want := fmt.Sprintf("hello from %s\n", h); err != nil || body != want {
				t.Errorf("HTTP GET: %q, %v; want %q", body, err, want)
			}
			for _, network := range []string{"udp", "tcp"} {
				dns := netip.AddrPortFrom(h, nettest.DNSPort)
				got, err := w.Enclosure.Lookup(ctx, network, dns, nettest.TestName)
				if want := []netip.Addr{nettest.PublicAddr}; err != nil || !slices.Equal(got, want) {
					t.Errorf("DNS over %s: %v, %v; want %v", network, got, err, want)
				}
				if _, err := w.Enclosure.Lookup(ctx, network, dns, "unknown.airlock.test."); !errors.Is(err, nettest.ErrNotFound) {
					t.Errorf("DNS over %s for an unknown name: %v, want ErrNotFound", network, err)
				}
			}
		})
	}
}

// The world reaches the enclosure's services on its uplink, and its
// loopback service is there.
func TestEnclosureServices(t *testing.T) {
	w := nettest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	uplink := netip.AddrPortFrom(nettest.UplinkAddr, nettest.EchoPort)
	if err := w.Internet.TCPEcho(ctx, uplink); err != nil {
		t.Errorf("TCP echo from the internet to the uplink: %v", err)
	}
	if err := w.Internet.UDPEcho(ctx, uplink); err != nil {
		t.Errorf("UDP echo from the internet to the uplink: %v", err)
	}
	loop := netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", nettest.EchoPort))
	if err := w.Enclosure.TCPEcho(ctx, loop); err != nil {
		t.Errorf("TCP echo on the enclosure's loopback: %v", err)
	}
	if got, want := w.Hits(uplink), 2; got != want {
		t.Errorf("Hits(%s) = %d, want %d", uplink, got, want)
	}
	out, err := w.Enclosure.Command(ctx, "cat", "/proc/net/dev").Output()
	if err != nil {
		t.Fatalf("nsenter: %v", err)
	}
	if !strings.Contains(string(out), "uplink") {
		t.Errorf("a command in the enclosure sees these interfaces:\n%s\nwant uplink among them", out)
	}
}

// A probe that gets no answer is silent; one refused is not, and neither is
// one that cannot even be sent.
func TestSilent(t *testing.T) {
	w := nettest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := w.Enclosure.TCPEcho(ctx, netip.AddrPortFrom(nettest.PublicAddr, 9)); err == nil || nettest.Silent(err) {
		t.Errorf("TCP to a closed port: %v, want a refusal", err)
	}
	short, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	// A DNS server ignores what is not a DNS query.
	dns := netip.AddrPortFrom(nettest.ResolverAddr, nettest.DNSPort)
	if err := w.Enclosure.UDPEcho(short, dns); !nettest.Silent(err) {
		t.Errorf("UDP junk to a DNS server: %v, want silence", err)
	}
	if got, want := w.Hits(dns), 1; got != want {
		t.Errorf("Hits(%s) = %d, want %d", dns, got, want)
	}
	empty := nettest.NewNamespace(t)
	if err := empty.UDPEcho(ctx, netip.AddrPortFrom(nettest.PublicAddr, nettest.EchoPort)); err == nil || nettest.Silent(err) {
		t.Errorf("UDP from a namespace without routes: %v, want an immediate error", err)
	}
}

// Cleanup removes the namespaces' files.
func TestCleanup(t *testing.T) {
	var paths []string
	t.Run("world", func(t *testing.T) {
		w := nettest.New(t)
		paths = append(paths, w.Enclosure.Path(), w.Internet.Path())
	})
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after cleanup: %v, want it gone", filepath.Base(p), err)
		}
	}
}
