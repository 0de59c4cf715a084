package netpolicy

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMergeRanges(t *testing.T) {
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		in   []netip.Prefix
		want []string // first-last
	}{
		{"disjoint, sorted", []netip.Prefix{p("192.168.0.0/16"), p("10.0.0.0/8")},
			[]string{"10.0.0.0-10.255.255.255", "192.168.0.0-192.168.255.255"}},
		{"contained", []netip.Prefix{p("10.0.0.0/8"), p("10.213.0.0/16")}, []string{"10.0.0.0-10.255.255.255"}},
		{"adjacent", []netip.Prefix{p("224.0.0.0/4"), p("240.0.0.0/4")}, []string{"224.0.0.0-255.255.255.255"}},
		{"single address", []netip.Prefix{p("198.51.100.80/32")}, []string{"198.51.100.80-198.51.100.80"}},
		{"IPv6 ignored", []netip.Prefix{p("fd00::/8"), p("0.0.0.0/8")}, []string{"0.0.0.0-0.255.255.255"}},
		{"unmasked", []netip.Prefix{p("10.1.2.3/8")}, []string{"10.0.0.0-10.255.255.255"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range mergeRanges(tc.in) {
				got = append(got, addr(r.first).String()+"-"+addr(r.last).String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("mergeRanges(%v) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestIntervalElementsOmitTheEndPastTheLastAddress(t *testing.T) {
	elems := intervalElements([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("240.0.0.0/4")})
	type elem struct {
		Key string
		End bool
	}
	var got []elem
	for _, e := range elems {
		got = append(got, elem{netip.AddrFrom4([4]byte(e.Key)).String(), e.IntervalEnd})
	}
	want := []elem{{"0.0.0.0", false}, {"1.0.0.0", true}, {"240.0.0.0", false}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("intervalElements (-want +got):\n%s", diff)
	}
}

func TestVethNameFitsAnInterfaceName(t *testing.T) {
	a, b := VethName("airlock-42-1"), VethName("airlock-42-2")
	if len(a) != 15 || a[:len(VethPrefix)] != VethPrefix {
		t.Errorf("VethName = %q, want %s and 15 characters", a, VethPrefix)
	}
	if a == b {
		t.Errorf("two sandboxes share the link name %s", a)
	}
}

func TestResolvers(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		want       []netip.Addr
		wantErr    bool
	}{
		{"private resolver", "# generated\nsearch example\nnameserver 10.255.255.53\n", []netip.Addr{netip.MustParseAddr("10.255.255.53")}, false},
		{"loopback and IPv6 skipped", "nameserver 127.0.0.53\nnameserver 2001:db8::53\nnameserver 192.0.2.53\n",
			[]netip.Addr{netip.MustParseAddr("192.0.2.53")}, false},
		{"only systemd-resolved", "nameserver 127.0.0.53\noptions edns0\n", nil, true},
		{"empty", "", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolvers("resolv.conf", []byte(tc.conf))
			if (err != nil) != tc.wantErr {
				t.Fatalf("resolvers: %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("resolvers (-want +got):\n%s", diff)
			}
		})
	}
}

func addr(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}
