package netpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// Resolv.conf files SystemResolvers reads, the first that exists: the one
// systemd-resolved writes with its upstream servers, then the usual one.
var resolvConfs = []string{"/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"}

// SystemResolvers returns the host's IPv4 name servers that a sandbox can
// use for Options.Resolvers: those of the first resolv.conf found (see
// resolvConfs), without loopback addresses. It is an error when none is
// left, say a host whose only server is systemd-resolved's 127.0.0.53
// without its upstream file.
func SystemResolvers() ([]netip.Addr, error) {
	for _, path := range resolvConfs {
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading name servers: %w", err)
		}
		return resolvers(path, b)
	}
	return nil, fmt.Errorf("reading name servers: none of %s exists", strings.Join(resolvConfs, ", "))
}

func resolvers(path string, conf []byte) ([]netip.Addr, error) {
	var usable []netip.Addr
	var skipped []string
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		switch {
		case err != nil:
			skipped = append(skipped, f[1]+" (not an address)")
		case !a.Unmap().Is4():
			skipped = append(skipped, f[1]+" (IPv6)")
		case a.IsLoopback():
			skipped = append(skipped, f[1]+" (loopback)")
		default:
			usable = append(usable, a.Unmap())
		}
	}
	if len(usable) == 0 {
		return nil, fmt.Errorf("no name server in %s that a sandbox can use (skipped: %s): configure the resolvers explicitly",
			path, strings.Join(skipped, ", "))
	}
	return usable, nil
}
