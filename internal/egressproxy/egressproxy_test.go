package egressproxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCheckAddrAllowsPublicIPv4Only(t *testing.T) {
	t.Parallel()
	host := []netip.Addr{netip.MustParseAddr("203.0.113.7")}
	deny := []netip.Prefix{netip.MustParsePrefix("198.51.100.99/32")}
	for _, tc := range []struct {
		addr string
		want string // "" allowed, else part of the refusal
	}{
		{"198.51.100.10", ""},
		{"8.8.8.8", ""},
		{"::ffff:198.51.100.10", ""}, // v4-mapped is the IPv4 address
		{"10.66.0.10", "10.0.0.0/8 is a private network"},
		{"172.16.5.4", "172.16.0.0/12 is a private network"},
		{"192.168.1.1", "192.168.0.0/16 is a private network"},
		{"169.254.169.254", "169.254.0.0/16 is link-local, where cloud metadata services live"},
		{"127.0.0.1", "127.0.0.0/8 is loopback"},
		{"0.0.0.0", "0.0.0.0/8 is reserved"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"224.0.0.1", "multicast"},
		{"255.255.255.255", "reserved"},
		{"::ffff:10.0.0.1", "a private network"},
		{"::1", "only IPv4 destinations are allowed"},
		{"2001:db8::1", "only IPv4 destinations are allowed"},
		{"fd00::1", "only IPv4 destinations are allowed"},
		{"203.0.113.7", "this host's own address"},
		{"198.51.100.99", "198.51.100.99/32 is denied to jobs on this executor"},
	} {
		err := checkAddr(netip.MustParseAddr(tc.addr), deny, host)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused (%v), want allowed", tc.addr, err)
		case tc.want != "" && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want ErrDenied saying %q", tc.addr, err, tc.want)
		}
	}
}

// counting is a loopback listener that counts the connections it accepts
// and answers HTTP.
func counting(t *testing.T, tlsToo bool) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello through "+r.URL.Path)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	if tlsToo {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, &n
}

func clientVia(s *Session, insecure bool) *http.Client {
	u, _ := url.Parse(s.URL())
	return &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(u),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: insecure},
	}}
}

func start(t *testing.T, opts Options) *Proxy {
	t.Helper()
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestRefusesTheHostsLoopbackAndSaysWhy(t *testing.T) {
	t.Parallel()
	p := start(t, Options{})
	plain, plainHits := counting(t, false)
	secure, secureHits := counting(t, true)
	s := p.Session()
	defer s.End()
	c := clientVia(s, true)

	if _, err := c.Get(secure.URL + "/x"); err == nil {
		t.Error("CONNECT to the host's loopback went through")
	}
	resp, err := c.Get(plain.URL + "/y")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "127.0.0.0/8 is loopback") {
		t.Errorf("GET through the proxy to the host's loopback: %d %q, want 403 naming loopback", resp.StatusCode, body)
	}
	// A name is checked on what it resolves to (localhost comes from /etc/hosts).
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(plain.URL, "http://"))
	if resp, err := c.Get("http://localhost:" + port + "/z"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET http://localhost through the proxy: %d, want 403", resp.StatusCode)
		}
	}
	if n := plainHits.Load() + secureHits.Load(); n != 0 {
		t.Errorf("the loopback servers accepted %d connections through the proxy, want 0", n)
	}
	refused := strings.Join(s.Refused(), "\n")
	for _, want := range []string{"127.0.0.1: not a public address (127.0.0.0/8 is loopback)", "localhost resolves to 127.0.0.1"} {
		if !strings.Contains(refused, want) {
			t.Errorf("session's refusals lack %q:\n%s", want, refused)
		}
	}
}

func TestTunnelsAndForwardsWhereAllowed(t *testing.T) {
	t.Parallel()
	// Nothing public is reachable from a test: allow the loopback instead,
	// which exercises the tunnel and the forwarding.
	p := start(t, Options{check: func(a netip.Addr) error {
		if a == netip.MustParseAddr("127.0.0.1") {
			return nil
		}
		return ErrDenied
	}})
	plain, _ := counting(t, false)
	secure, _ := counting(t, true)
	s := p.Session()
	defer s.End()
	c := clientVia(s, true)
	for _, u := range []string{secure.URL + "/tunnel", plain.URL + "/forward"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "hello through " + u[strings.LastIndex(u, "/"):]; resp.StatusCode != 200 || string(body) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", u, resp.StatusCode, body, want)
		}
	}
	if r := s.Refused(); len(r) != 0 {
		t.Errorf("refusals = %v, want none", r)
	}
}

func TestOnlyALiveSessionMayUseIt(t *testing.T) {
	t.Parallel()
	p := start(t, Options{check: func(netip.Addr) error { return nil }})
	plain, hits := counting(t, false)
	s := p.Session()
	s.End()
	for name, c := range map[string]*http.Client{
		"ended session":  clientVia(s, false),
		"no credentials": {Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: p.ln.Addr().String()})}},
	} {
		resp, err := c.Get(plain.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusProxyAuthRequired {
			t.Errorf("%s: %d, want 407", name, resp.StatusCode)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("the server accepted %d connections, want 0", hits.Load())
	}
}
