package proxy_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// certTLS is a self-signed certificate with a key on curve (P-256: signed
// with ECDSA-SHA256; P-384: ECDSA-SHA384, whose channel binding hash is
// SHA-384).
func certTLS(t *testing.T, curve elliptic.Curve) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgproxy-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestPooledSCRAMChannelBinding: psql (libpq) with channel_binding=require
// logs in through a proxy-auth listener over TLS (SCRAM-SHA-256-PLUS, bound
// to the proxy's certificate), and is refused without TLS.
func TestPooledSCRAMChannelBinding(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not on PATH")
	}
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		t.Run(curve.Params().Name, func(t *testing.T) {
			cfg := pooledConfig(true, 1)
			cfg.TLS = certTLS(t, curve)
			tp := startProxy(t, cfg, staticDirector{addr: cluster.Primary().Addr()})
			host, port, _ := net.SplitHostPort(tp.addr)
			run := func(opts string) (string, error) {
				dsn := fmt.Sprintf("host=%s port=%s user=%s dbname=postgres %s", host, port, pgcluster.ScramUser, opts)
				cmd := exec.Command(psql, "-X", "-A", "-t", "-c", "SELECT current_user", dsn)
				cmd.Env = append(os.Environ(), "PGPASSWORD="+pgcluster.ScramPassword, "PGCONNECT_TIMEOUT=10")
				out, err := cmd.CombinedOutput()
				return strings.TrimSpace(string(out)), err
			}
			if out, err := run("sslmode=require channel_binding=require"); err != nil || out != pgcluster.ScramUser {
				t.Fatalf("TLS, channel_binding=require: %v: %s", err, out)
			}
			if out, err := run("sslmode=require channel_binding=disable"); err != nil || out != pgcluster.ScramUser {
				t.Fatalf("TLS, channel_binding=disable: %v: %s", err, out)
			}
			out, err := run("sslmode=disable channel_binding=require")
			if err == nil || !strings.Contains(out, "channel binding") {
				t.Fatalf("without TLS, channel_binding=require: %v: %s; want refused for channel binding", err, out)
			}
			if out, err := run("sslmode=require channel_binding=require password=wrong"); err == nil || !strings.Contains(out, "password authentication failed") {
				t.Fatalf("TLS, channel_binding=require, wrong password: %v: %s", err, out)
			}
		})
	}
}
