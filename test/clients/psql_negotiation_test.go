package clients

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestPsqlEncryptionNegotiation: libpq's sslmode/gssencmode settings against
// a proxy without client TLS. A recording relay between psql and the proxy
// shows what psql really sent before its StartupMessage, so the test proves
// the proxy answered each request (with 'N') and the session then worked.
func TestPsqlEncryptionNegotiation(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	cases := []struct {
		name string
		env  []string
		want []uint32 // codes of the one connection psql makes
	}{
		{"sslmode=disable", []string{"PGSSLMODE=disable", "PGGSSENCMODE=disable"}, []uint32{codeProtocol30}},
		{"sslmode=prefer", []string{"PGSSLMODE=prefer", "PGGSSENCMODE=disable"}, []uint32{codeSSLRequest, codeProtocol30}},
		{"sslmode=allow", []string{"PGSSLMODE=allow", "PGGSSENCMODE=disable"}, []uint32{codeProtocol30}},
		// Without Kerberos credentials libpq does not send GSSENCRequest
		// for prefer; see TestPsqlGSSENCRequest for the case where it does.
		{"gssencmode=prefer sslmode=disable", []string{"PGSSLMODE=disable", "PGGSSENCMODE=prefer"}, []uint32{codeProtocol30}},
		{"gssencmode=prefer sslmode=prefer", []string{"PGSSLMODE=prefer", "PGGSSENCMODE=prefer"}, []uint32{codeSSLRequest, codeProtocol30}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder(t, p.WriteAddr())
			env := append(pgEnv(rec.Addr(), "postgres", "postgres"), c.env...)
			r := psql(ctxT(t, 30*time.Second), env, "", "-c", "SELECT 'ok', ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
			if r.err != nil || strings.TrimSpace(r.stdout) != "ok|f" {
				t.Fatalf("want ok|f\n%s", r)
			}
			codes := rec.Codes()
			if len(codes) != 1 || fmt.Sprint(codes[0]) != fmt.Sprint(c.want) {
				t.Fatalf("psql sent %v, want one connection with %v", codes, c.want)
			}
		})
	}
}

// TestPsqlGSSENCRequest: with Kerberos credentials in its cache, libpq's
// default gssencmode=prefer sends a GSSENCRequest first. The proxy must
// answer 'N' (closing the socket instead makes psql fail), after which psql
// continues on the same connection. The credential cache here holds a fake
// TGT: enough for gss_acquire_cred, never used for authentication (the
// postgres role is trusted).
func TestPsqlGSSENCRequest(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	dir := t.TempDir()
	ccache := filepath.Join(dir, "krb5cc")
	if err := os.WriteFile(ccache, fakeCCache("EXAMPLE.TEST", "tester", time.Now().Add(24*time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	krb5conf := filepath.Join(dir, "krb5.conf")
	if err := os.WriteFile(krb5conf, []byte("[libdefaults]\n default_realm = EXAMPLE.TEST\n dns_lookup_kdc = false\n dns_lookup_realm = false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		env  []string
		want []uint32
	}{
		{"gssencmode=prefer sslmode=disable", []string{"PGGSSENCMODE=prefer", "PGSSLMODE=disable"}, []uint32{codeGSSENCRequest, codeProtocol30}},
		{"gssencmode=prefer sslmode=prefer", []string{"PGGSSENCMODE=prefer", "PGSSLMODE=prefer"}, []uint32{codeGSSENCRequest, codeSSLRequest, codeProtocol30}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, addr := range []string{p.WriteAddr(), p.ReadAddr()} {
				rec := newRecorder(t, addr)
				env := append(pgEnv(rec.Addr(), "postgres", "postgres", "KRB5CCNAME=FILE:"+ccache, "KRB5_CONFIG="+krb5conf), c.env...)
				r := psql(ctxT(t, 30*time.Second), env, "", "-c", "SELECT 'ok', encrypted FROM pg_stat_gssapi WHERE pid = pg_backend_pid()")
				if r.err != nil || strings.TrimSpace(r.stdout) != "ok|f" {
					t.Fatalf("via %s: want ok|f\n%s", addr, r)
				}
				codes := rec.Codes()
				if len(codes) != 1 || fmt.Sprint(codes[0]) != fmt.Sprint(c.want) {
					t.Fatalf("via %s: psql sent %v, want one connection with %v", addr, codes, c.want)
				}
			}
		})
	}
}

// The control: a server that closes the connection on GSSENCRequest (what
// CLIENTS.md warns about) makes psql 15 fail, so answering 'N' matters and
// TestPsqlGSSENCRequest could catch a proxy that closes instead.
func TestPsqlGSSENCRequestClosedBreaksPsql(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	dir := t.TempDir()
	ccache := filepath.Join(dir, "krb5cc")
	if err := os.WriteFile(ccache, fakeCCache("EXAMPLE.TEST", "tester", time.Now().Add(24*time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	krb5conf := filepath.Join(dir, "krb5.conf")
	if err := os.WriteFile(krb5conf, []byte("[libdefaults]\n default_realm = EXAMPLE.TEST\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := startRecorder(t, p.WriteAddr(), true)
	env := pgEnv(rec.Addr(), "postgres", "postgres", "KRB5CCNAME=FILE:"+ccache, "KRB5_CONFIG="+krb5conf, "PGGSSENCMODE=prefer", "PGSSLMODE=disable")
	r := psql(ctxT(t, 30*time.Second), env, "", "-c", "SELECT 'ok'")
	if r.err == nil {
		t.Fatalf("psql succeeded although the connection was closed on its GSSENCRequest (codes %v): the GSSENC tests prove nothing\n%s", rec.Codes(), r)
	}
	t.Logf("as expected, psql failed: %s", strings.TrimSpace(r.stderr))
}

// fakeCCache is an MIT krb5 FILE credential cache (format version 4, see
// MIT's ccache_file_format) for client@realm holding one krbtgt/realm@realm
// credential that expires at end. The ticket bytes are not a real ticket.
func fakeCCache(realm, client string, end time.Time) []byte {
	var b []byte
	u16 := func(v uint16) { b = binary.BigEndian.AppendUint16(b, v) }
	u32 := func(v uint32) { b = binary.BigEndian.AppendUint32(b, v) }
	octets := func(s []byte) { u32(uint32(len(s))); b = append(b, s...) }
	principal := func(components ...string) {
		u32(1) // KRB5_NT_PRINCIPAL
		u32(uint32(len(components)))
		octets([]byte(realm))
		for _, c := range components {
			octets([]byte(c))
		}
	}
	u16(0x0504) // version 4
	u16(0)      // no header tags
	principal(client)
	// the credential
	principal(client)
	principal("krbtgt", realm)
	u16(18) // aes256-cts-hmac-sha1-96
	octets(make([]byte, 32))
	now := uint32(time.Now().Unix())
	u32(now)                // authtime
	u32(now)                // starttime
	u32(uint32(end.Unix())) // endtime
	u32(uint32(end.Unix())) // renew_till
	b = append(b, 0)        // is_skey
	u32(0x00400000)         // ticket flags: initial
	u32(0)                  // addresses
	u32(0)                  // authdata
	octets([]byte("not a real ticket"))
	octets(nil) // second ticket
	return b
}
