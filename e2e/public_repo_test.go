package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/netpolicy/nettest"
	"github.com/airlock-run/airlock/internal/testenv"
)

// TestPublicRepositoryURLsAreFetchedFromPublicAddressesOnly runs an executor
// inside the enclosed test network, where git is served on port 8080 by
// every host of the test "internet": the public one, the private one and the
// metadata address. A job naming a public URL gets its checkout (by address
// and by name, and under the none policy too: the fetch is the executor's);
// one naming a private, link-local, loopback or host address, or a public URL
// that redirects to a private one, fails with the reason, and the hosts it
// named never see a connection.
func TestPublicRepositoryURLsAreFetchedFromPublicAddressesOnly(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("crun"); err != nil {
		testenv.Missing(t, "crun", err)
	}
	e := newAdvEnv(t, []string{"--runtime", "oci", "--oci-runtime", "crun"})
	backend, commits := gitBackend(t)

	const port = 8080
	var mu sync.Mutex
	hits := map[netip.Addr]int{}
	mux := http.NewServeMux()
	mux.Handle("/upstream.git/", backend)
	mux.HandleFunc("/moved.git/", func(w http.ResponseWriter, r *http.Request) {
		to := fmt.Sprintf("http://%s:%d/upstream.git/%s?%s", nettest.PrivateAddr, port,
			strings.TrimPrefix(r.URL.Path, "/moved.git/"), r.URL.RawQuery)
		http.Redirect(w, r, to, http.StatusFound)
	})
	l, err := e.w.Internet.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			a := netip.MustParseAddrPort(c.LocalAddr().String()).Addr().Unmap()
			mu.Lock()
			hits[a]++
			mu.Unlock()
		}
	}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	at := func(host string) string { return fmt.Sprintf("http://%s:%d/upstream.git", host, port) }
	publicName := strings.TrimSuffix(nettest.TestName, ".")
	cases := []struct {
		name    string
		url     string
		network job.Network
		want    string // in the log on success, in the message on failure
		ok      bool
	}{
		{"public address", at(nettest.PublicAddr.String()), "", "first version", true},
		{"public name", at(publicName), "", "first version", true},
		{"public under the none policy", at(nettest.PublicAddr.String()), job.NetworkNone, "first version", true},
		{"private address", at(nettest.PrivateAddr.String()), "", "10.66.0.10: not a public address (10.0.0.0/8 is a private network)", false},
		{"metadata address", at(nettest.MetadataAddr.String()), "", "169.254.169.254: not a public address (169.254.0.0/16 is link-local", false},
		{"host loopback (the coordinator's forwarder)", fmt.Sprintf("http://127.0.0.1:%d/x.git", e.fwdPort), "", "127.0.0.0/8 is loopback", false},
		{"host's own address", fmt.Sprintf("http://%s:%d/x.git", nettest.UplinkAddr, e.fwdPort), "", "this host's own address", false},
		{"redirect to a private address", fmt.Sprintf("http://%s:%d/moved.git", nettest.PublicAddr, port), "", "10.66.0.10: not a public address", false},
	}
	jobs := make([]*api.Job, len(cases))
	for i, tc := range cases {
		spec := job.Spec{Version: 1, Network: tc.network, MaxAttempts: 1,
			Repository: &job.Repository{URL: tc.url, Commit: commits[0]},
			Steps:      []job.Step{{Name: "show", Run: "cat README; cat .git/HEAD"}}}
		jobs[i] = e.c.submit(spec)
	}
	for i, tc := range cases {
		got := e.c.waitJob(jobs[i].ID, 2*time.Minute)
		log := e.c.logOf(got.ID)
		switch {
		case tc.ok && (got.State != job.StateSucceeded || !strings.Contains(log, tc.want) || !strings.Contains(log, commits[0]+"\n")):
			t.Errorf("%s: job ended %s/%s (%s), want succeeded showing %q:\n%s", tc.name, got.State, got.Reason, got.Message, tc.want, log)
		case !tc.ok && (got.State != job.StateFailed || got.Reason != job.ReasonCheckout || !strings.Contains(got.Message, tc.want)):
			t.Errorf("%s: job ended %s/%s (%s), want failed/checkout saying %q:\n%s", tc.name, got.State, got.Reason, got.Message, tc.want, log)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range []netip.Addr{nettest.PrivateAddr, nettest.MetadataAddr} {
		if hits[a] != 0 {
			t.Errorf("%s received %d connections, want 0", a, hits[a])
		}
	}
	if hits[nettest.PublicAddr] == 0 {
		t.Errorf("the public host received no connection: %v", hits)
	}
}
