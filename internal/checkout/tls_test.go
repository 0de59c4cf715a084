package checkout

import (
	"context"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckoutTrustsTheGivenCA(t *testing.T) {
	t.Parallel()
	plain := newServer(t, "tok")
	url, commits := plain.repo(t, "r.git", genOpts{Commits: 2, Files: 2, FileSize: 100})
	tlsSrv := httptest.NewTLSServer(plain.Config.Handler)
	t.Cleanup(tlsSrv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	tlsURL := tlsSrv.URL + strings.TrimPrefix(url, plain.URL)
	for _, withCA := range []bool{false, true} {
		opts := Options{Root: t.TempDir()}
		if withCA {
			opts.CAFile = ca
		}
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		dir := t.TempDir()
		_, err = c.Checkout(context.Background(), Params{Dir: dir, URL: tlsURL, Token: "tok", Commit: commits[len(commits)-1]})
		if withCA && err != nil {
			t.Errorf("with the CA: %v", err)
		}
		if !withCA && (err == nil || !strings.Contains(err.Error(), "certificate")) {
			t.Errorf("without the CA: %v, want a certificate error", err)
		}
	}
}
