package coordinator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/queue"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns their paths.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "airlock test coordinator"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestServeTLS serves over TLS with Serve, talks to it with a client that
// trusts the certificate, and shuts down with a claim parked in a long
// poll: the shutdown releases it at once.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	e := setup(t)
	certFile, keyFile := selfSigned(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ctx, ln, certFile, keyFile) }()

	base := "https://" + ln.Addr().String()
	tlsCfg, err := api.ClientTLSConfig(certFile)
	if err != nil {
		t.Fatal(err)
	}
	client := api.NewClient(base, clientToken, api.WithTLSConfig(tlsCfg))
	j, err := client.Submit(ctx, testSpec("tls"))
	if err != nil {
		t.Fatalf("Submit over TLS: %v", err)
	}
	if got, err := client.Get(ctx, j.ID); err != nil || got.ID != j.ID {
		t.Fatalf("Get over TLS = %+v, %v", got, err)
	}

	// A client that does not trust the certificate is refused.
	if _, err := api.NewClient(base, clientToken).Get(ctx, j.ID); err == nil {
		t.Error("Get with an untrusting client succeeded")
	}
	// Plain HTTP to the TLS port is not served.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP to the TLS listener answered 200")
		}
	}

	exec := api.NewClient(base, executorToken, api.WithTLSConfig(tlsCfg))
	claimed := make(chan error, 1)
	go func() {
		c, err := exec.Claim(context.Background(), api.ClaimRequest{
			Executor: queue.ExecutorInfo{Name: "exec"}, Queues: []string{"empty"}, WaitMS: 30_000,
		})
		if c != nil {
			err = errors.New("claimed a job from an empty queue")
		}
		claimed <- err
	}()
	waitFor(t, "the claim to wait", func() bool { return e.srv.claims.waitingOn("empty") == 1 })

	stopped := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if err := <-claimed; err != nil {
		t.Errorf("parked claim: %v, want a 204", err)
	}
	t.Logf("shutdown with a parked claim took %v", time.Since(stopped))
	if took := time.Since(stopped); took > 5*time.Second {
		// Shutdown itself may take ~1s: HTTP/2 waits that long after its GOAWAY.
		t.Errorf("shutdown took %v with a parked claim, want well under its 30s wait", took)
	}
}

func TestServeNeedsCertAndKey(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := e.srv.Serve(context.Background(), ln, "cert.pem", ""); err == nil {
		t.Error("Serve with a certificate and no key succeeded")
	}
}

// TestHTTPTestTLS runs the API behind httptest's TLS server and the client
// with the server's own http.Client.
func TestHTTPTestTLS(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ts := httptest.NewTLSServer(e.srv.Handler())
	defer ts.Close()
	client := api.NewClient(ts.URL, clientToken, api.WithHTTPClient(ts.Client()))
	j, err := client.Submit(context.Background(), testSpec("q"))
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if _, err := client.Get(context.Background(), j.ID); err != nil {
		t.Fatalf("Get: %v", err)
	}
}
