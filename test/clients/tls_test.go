package clients

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// tlsFiles are a self-signed certificate for 127.0.0.1 and its key.
type tlsFiles struct{ cert, key string }

func writeTLSFiles(t *testing.T) tlsFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgproxy clients test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := tlsFiles{cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key")}
	if err := os.WriteFile(f.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startTLSProxy runs a pgproxy that answers SSLRequest with 'S'.
func startTLSProxy(t *testing.T) (*proxytest.Proxy, tlsFiles) {
	t.Helper()
	pgcluster.Require(t, cluster)
	f := writeTLSFiles(t)
	return startProxyWith(t, &proxytest.Options{YAML: fmt.Sprintf("tls:\n  cert: %s\n  key: %s\n", f.cert, f.key)}), f
}

// TestPsqlTLS: client TLS terminated by the proxy, with psql: require and
// verify-full (the proxy's certificate), md5 and SCRAM roles; SCRAM with
// channel_binding=require cannot work through a TLS-terminating proxy and
// must fail cleanly; sslmode=disable still works on the same listener.
func TestPsqlTLS(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p, f := startTLSProxy(t)
	const conninfo = `\conninfo`
	cases := []struct {
		name, addr, user string
		env              []string
		ssl              bool   // the client-proxy connection is TLS
		fail             string // expected error text, if it must fail
	}{
		{"require trust write", p.WriteAddr(), "postgres", []string{"PGSSLMODE=require"}, true, ""},
		{"require trust read", p.ReadAddr(), "postgres", []string{"PGSSLMODE=require"}, true, ""},
		{"verify-full md5", p.WriteAddr(), pgcluster.MD5User, []string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + f.cert}, true, ""},
		{"verify-full scram channel_binding=prefer", p.WriteAddr(), pgcluster.ScramUser, []string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + f.cert, "PGCHANNELBINDING=prefer"}, true, ""},
		{"prefer scram read", p.ReadAddr(), pgcluster.ScramUser, []string{"PGSSLMODE=prefer"}, true, ""},
		{"disable on a TLS listener", p.WriteAddr(), "postgres", []string{"PGSSLMODE=disable"}, false, ""},
		{"scram channel_binding=require", p.WriteAddr(), pgcluster.ScramUser, []string{"PGSSLMODE=require", "PGCHANNELBINDING=require"}, true, "channel binding"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := append(pgEnv(c.addr, c.user, "postgres"), c.env...)
			r := run(ctxT(t, 30*time.Second), env, "", psqlBin, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", conninfo, "-c", "SELECT 'ok:' || current_user || ':' || pg_is_in_recovery()")
			if c.fail != "" {
				if r.err == nil || !strings.Contains(r.stderr, c.fail) {
					t.Fatalf("want a failure mentioning %q\n%s", c.fail, r)
				}
				return
			}
			rec := "false"
			if c.addr == p.ReadAddr() {
				rec = "true"
			}
			if r.err != nil || !strings.Contains(r.stdout, "ok:"+c.user+":"+rec) {
				t.Fatalf("want ok:%s:%s\n%s", c.user, rec, r)
			}
			if got := strings.Contains(r.stdout, "SSL connection (protocol: TLSv1."); got != c.ssl {
				t.Fatalf("TLS in use = %v, want %v\n%s", got, c.ssl, r)
			}
		})
	}

	t.Run("cancel of a TLS session", func(t *testing.T) {
		// libpq 15 sends the CancelRequest in plaintext on a new connection,
		// whatever the session's encryption.
		rec := newRecorder(t, p.WriteAddr())
		app := fmt.Sprintf("clients-tls-cancel-%d", time.Now().UnixNano())
		ctx := ctxT(t, 60*time.Second)
		cmd := exec.CommandContext(ctx, psqlBin, "-X", "-A", "-t", "-v", "VERBOSITY=verbose", "-c", "SELECT pg_sleep(30)")
		cmd.Env = pgEnv(rec.Addr(), "postgres", "postgres", "PGSSLMODE=require", "PGAPPNAME="+app)
		var errb strings.Builder
		cmd.Stderr = &errb
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitActive(t, cluster.Primary(), app, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		sent := time.Now()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		elapsed := time.Since(sent)
		if !strings.Contains(errb.String(), "57014") || elapsed > 2*time.Second {
			t.Fatalf("after %v: stderr %q, want 57014 within 2s", elapsed, errb.String())
		}
		codes := rec.Codes()
		want := fmt.Sprint([][]uint32{{codeSSLRequest, 0x16}, {codeCancelRequest}})
		if fmt.Sprint(codes) != want {
			t.Fatalf("connections sent %v, want %v (TLS session, then a plaintext CancelRequest)", codes, want)
		}
	})
}

// waitActive waits until a statement of application_name app is active on
// node; on timeout it calls stop and fails.
func waitActive(t *testing.T, node *pgcluster.Node, app string, stop func()) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		err := node.QueryRow(ctxT(t, 10*time.Second), "SELECT count(*) FROM pg_stat_activity WHERE application_name = '"+app+"' AND state = 'active' AND query LIKE '%pg_sleep%'", &n)
		if err == nil && n == 1 {
			return
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("the query of %s never showed up on %s (err %v)", app, node.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
