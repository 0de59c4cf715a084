package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// writeSelfSignedCert writes a CA-less self-signed certificate for 127.0.0.1
// and its key, and returns their paths.
func writeSelfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "airlock-e2e"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestOverTLSExecutorsAndClientsTrustTheGivenCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeSelfSignedCert(t, dir)
	coord := start(t, "coordinator", []string{
		"AIRLOCK_CLIENT_TOKENS=" + clientToken,
		"AIRLOCK_EXECUTOR_TOKENS=" + executorToken,
	}, "coordinator", "--addr", "127.0.0.1:0", "--data-dir", dir, "--tls-cert", cert, "--tls-key", key,
		"--heartbeat-interval", "500ms")
	url := coord.waitOutput(servingRE, 20*time.Second)
	if !strings.HasPrefix(url, "https://") {
		t.Fatalf("coordinator serves %s, want https", url)
	}
	start(t, "executor", []string{"AIRLOCK_EXECUTOR_TOKEN=" + executorToken}, "executor",
		"--url", url, "--ca-file", cert, "--runtime", "shell", "--work-dir", filepath.Join(dir, "work"))

	env := []string{"AIRLOCK_URL=" + url, "AIRLOCK_TOKEN=" + clientToken}
	out, stderr, code := runCLIWithEnv(t, env, "submit", "../examples/hello.yaml", "--follow", "--ca-file", cert)
	if code != 0 || !strings.Contains(out, "tick 3") {
		t.Fatalf("submit --follow over TLS: exit %d\n%s\n%s", code, out, stderr)
	}
	// The executor checks a registered repository out over TLS too.
	upstream, commits := gitUpstream(t)
	if out, stderr, code := runCLIWithEnv(t, env, "repos", "add", "acme/api", upstream, "--ca-file", cert); code != 0 {
		t.Fatalf("repos add over TLS: exit %d\n%s\n%s", code, out, stderr)
	}
	spec := filepath.Join(dir, "repo.yaml")
	os.WriteFile(spec, []byte("version: 1\nrepository: {name: acme/api, commit: "+commits[1]+"}\nsteps:\n  - run: cat README\n"), 0o644)
	out, stderr, code = runCLIWithEnv(t, env, "submit", spec, "--follow", "--ca-file", cert)
	if code != 0 || !strings.Contains(out, "second version") {
		t.Fatalf("a job with a repository over TLS: exit %d\n%s\n%s", code, out, stderr)
	}
	// Without the CA, the client refuses the coordinator's certificate.
	_, stderr, code = runCLIWithEnv(t, env, "jobs")
	if code != 5 || !regexp.MustCompile(`certificate`).MatchString(stderr) {
		t.Errorf("jobs without --ca-file: exit %d, stderr %q; want 5 naming the certificate", code, stderr)
	}
}
