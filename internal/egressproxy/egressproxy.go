// Package egressproxy is the executor's way out to public repositories: an
// HTTP proxy on the host's loopback through which the executor's own git
// fetches a job's public repository URL, and which connects to public
// addresses only.
//
// The executor host sits on a private network (its coordinator, its cloud's
// metadata service, other internal hosts) and runs git as root. A job naming
// "https://10.0.0.5/internal.git" or a name that resolves to 169.254.169.254
// must not turn that git into a way in, so every connection the proxy makes
// is checked against the same list the sandboxes' egress policy denies
// (netpolicy.DeniedRanges, the coordinator's addresses, the sandbox subnet),
// plus the host's own addresses and anything but IPv4. The check runs on the
// address actually dialled, in the dialer's Control hook, after name
// resolution: a name that resolves to a public address for one lookup and a
// private one for the next (DNS rebinding) is caught at the connect, and so
// is every redirect, since each is a connection of its own.
//
// It serves CONNECT (https://) and absolute-form requests (http://). Each
// checkout gets a Session: a proxy URL with credentials of its own, dead once
// the session ends, that records what the proxy refused so the job's log can
// say why a fetch failed ("10.66.0.10 is not a public address"). Git hears
// only "403" from a refused CONNECT.
package egressproxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/airlock-run/airlock/internal/netpolicy"
)

// Options configure a Proxy.
type Options struct {
	// Deny lists destinations refused besides netpolicy.DeniedRanges and the
	// host's own addresses: the coordinator's addresses, the sandbox subnet.
	Deny []netip.Prefix
	// Resolvers are the DNS servers (port 53) names are resolved with;
	// empty uses the system's resolver.
	Resolvers []netip.Addr
	// DialTimeout bounds one connection attempt. Default 30s.
	DialTimeout time.Duration
	Logger      *slog.Logger

	// check replaces the destination check (tests only: they have nothing
	// public to connect to).
	check func(netip.Addr) error
}

// Proxy is a running egress proxy.
type Proxy struct {
	opts     Options
	ln       net.Listener
	srv      *http.Server
	resolver *net.Resolver
	log      *slog.Logger

	mu       sync.Mutex
	sessions map[string]*Session // by password
}

// Start listens on 127.0.0.1 (an ephemeral port) and serves until Close.
func Start(opts Options) (*Proxy, error) {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("starting the egress proxy: %w", err)
	}
	p := &Proxy{opts: opts, ln: ln, log: opts.Logger, sessions: map[string]*Session{}}
	p.resolver = net.DefaultResolver
	if len(opts.Resolvers) > 0 {
		servers := opts.Resolvers
		p.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			var err error
			for _, s := range servers {
				var c net.Conn
				if c, err = d.DialContext(ctx, network, netip.AddrPortFrom(s, 53).String()); err == nil {
					return c, nil
				}
			}
			return nil, err
		}}
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn)}
	go p.srv.Serve(ln)
	return p, nil
}

// Close stops the proxy and every tunnel through it.
func (p *Proxy) Close() error { return p.srv.Close() }

// Session is one checkout's use of the proxy.
type Session struct {
	p        *Proxy
	password string

	mu      sync.Mutex
	refused []string
}

// Session opens a session; End it when the checkout is done.
func (p *Proxy) Session() *Session {
	var b [16]byte
	rand.Read(b[:])
	s := &Session{p: p, password: hex.EncodeToString(b[:])}
	p.mu.Lock()
	p.sessions[s.password] = s
	p.mu.Unlock()
	return s
}

// URL is the proxy URL for git's http.proxy, credentials included.
func (s *Session) URL() string {
	return (&url.URL{Scheme: "http", User: url.UserPassword("airlock", s.password), Host: s.p.ln.Addr().String()}).String()
}

// Secret is the part of URL that must not be shown.
func (s *Session) Secret() string { return s.password }

// Refused lists what the proxy refused in this session, oldest first.
func (s *Session) Refused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.refused)
}

// End makes the session's credentials invalid.
func (s *Session) End() {
	s.p.mu.Lock()
	delete(s.p.sessions, s.password)
	s.p.mu.Unlock()
}

func (s *Session) refuse(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.refused) < 20 && !slices.Contains(s.refused, err.Error()) {
		s.refused = append(s.refused, err.Error())
	}
}

// session authenticates a request by its Proxy-Authorization.
func (p *Proxy) session(r *http.Request) *Session {
	auth, ok := strings.CutPrefix(r.Header.Get("Proxy-Authorization"), "Basic ")
	if !ok {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(auth)
	if err != nil {
		return nil
	}
	_, password, _ := strings.Cut(string(raw), ":")
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, s := range p.sessions {
		if subtle.ConstantTimeCompare([]byte(k), []byte(password)) == 1 {
			return s
		}
	}
	return nil
}

// ErrDenied is a destination the proxy does not connect to.
var ErrDenied = errors.New("not a public address")

// Check says whether the proxy may connect to a: nil for a public IPv4
// address, an error wrapping ErrDenied that says why not otherwise.
func (p *Proxy) Check(a netip.Addr) error {
	if p.opts.check != nil {
		return p.opts.check(a)
	}
	return checkAddr(a, p.opts.Deny, hostAddrs())
}

func checkAddr(a netip.Addr, deny []netip.Prefix, host []netip.Addr) error {
	a = a.Unmap()
	if !a.Is4() {
		return fmt.Errorf("%s: %w (only IPv4 destinations are allowed)", a, ErrDenied)
	}
	for _, pr := range netpolicy.DeniedRanges {
		if pr.Contains(a) {
			return fmt.Errorf("%s: %w (%s is %s)", a, ErrDenied, pr, rangeName(pr))
		}
	}
	if slices.Contains(host, a) {
		return fmt.Errorf("%s: %w (it is this host's own address)", a, ErrDenied)
	}
	for _, pr := range deny {
		if pr.Contains(a) {
			return fmt.Errorf("%s: %w (%s is denied to jobs on this executor)", a, ErrDenied, pr)
		}
	}
	return nil
}

func rangeName(p netip.Prefix) string {
	switch p.String() {
	case "127.0.0.0/8":
		return "loopback"
	case "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16":
		return "a private network"
	case "100.64.0.0/10":
		return "carrier-grade NAT"
	case "169.254.0.0/16":
		return "link-local, where cloud metadata services live"
	case "224.0.0.0/4":
		return "multicast"
	}
	return "reserved"
}

// hostAddrs are the addresses of this host's interfaces.
func hostAddrs() []netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// dial connects to host:port, trying the host's IPv4 addresses in turn and
// checking each in the dialer's Control hook (after resolution, at the
// connect itself).
func (p *Proxy) dial(ctx context.Context, s *Session, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	portNum, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port in %q", hostport)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = p.resolver.LookupNetIP(ctx, "ip4", host)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
	}
	d := net.Dialer{Timeout: p.opts.DialTimeout, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		return p.Check(ap.Addr())
	}}
	var errs []error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp4", netip.AddrPortFrom(a.Unmap(), uint16(portNum)).String())
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrDenied) {
			var oe *net.OpError
			if errors.As(err, &oe) {
				err = oe.Err // drop "dial tcp4 …:", the check says it all
			}
			if host != a.String() {
				err = fmt.Errorf("%s resolves to %w", host, err)
			}
			s.refuse(err)
			p.log.Warn("egress proxy refused a destination", "host", host, "addr", a.String(), "err", err)
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%s has no IPv4 address", host)
	}
	return nil, errors.Join(errs...)
}

// ServeHTTP proxies one request: CONNECT, or an absolute-form request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := p.session(r)
	if s == nil {
		w.Header().Set("Proxy-Authenticate", `Basic realm="airlock"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	if r.Method == http.MethodConnect {
		p.connect(w, r, s)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "only CONNECT and absolute http:// requests are proxied", http.StatusBadRequest)
		return
	}
	p.forward(w, r, s)
}

func (p *Proxy) connect(w http.ResponseWriter, r *http.Request, s *Session) {
	up, err := p.dial(r.Context(), s, r.Host)
	if err != nil {
		http.Error(w, err.Error(), statusFor(err))
		return
	}
	defer up.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot tunnel", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer down.Close()
	if _, err := down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, buf) // what the client sent after the CONNECT, then the rest
		if tc, ok := up.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		close(done)
	}()
	io.Copy(down, up)
	down.Close()
	<-done
}

// hopHeaders are dropped when forwarding (RFC 9110 7.6.1, and the proxy's own).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, s *Session) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	host := out.URL.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "80")
	}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return p.dial(ctx, s, host)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // the client follows redirects, each through us
	}}).Do(out)
	if err != nil {
		http.Error(w, err.Error(), statusFor(err))
		return
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(flushWriter{w}, resp.Body)
}

func statusFor(err error) int {
	if errors.Is(err, ErrDenied) {
		return http.StatusForbidden
	}
	return http.StatusBadGateway
}

// flushWriter flushes after every write, so a slow upstream streams.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}
