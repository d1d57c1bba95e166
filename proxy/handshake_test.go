package proxy_test

import (
	"bufio"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// startupMsg is a StartupMessage for user and database postgres.
func startupMsg(user string) []byte {
	body := binary.BigEndian.AppendUint32(nil, 3<<16)
	for _, kv := range [][2]string{{"user", user}, {"database", "postgres"}} {
		body = append(append(append(append(body, kv[0]...), 0), kv[1]...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func queryMsg(sql string) []byte { return pgwire.AppendMessage(nil, 'Q', append([]byte(sql), 0)) }

// readUntilReady reads messages up to a ReadyForQuery and returns their
// types and the text of the DataRows' first column.
func readUntilReady(t *testing.T, br *bufio.Reader) (types string, values []string) {
	t.Helper()
	for {
		typ, body, err := pgwire.ReadMessage(br, 1<<20)
		if err != nil {
			t.Fatalf("after %q: %v", types, err)
		}
		types += string(typ)
		switch typ {
		case 'D':
			n := int(binary.BigEndian.Uint32(body[2:6]))
			values = append(values, string(body[6:6+n]))
		case 'E':
			code, msg := pgwire.ErrorFields(body)
			t.Fatalf("error %s: %s", code, msg)
		case 'Z':
			return types, values
		}
	}
}

// TestClientSendsAheadOfHandshake: what a client sends right behind its
// last handshake message, in the same packet, belongs to the session. The
// handshake reads ahead (one read per message), so this checks that the
// relay gets those bytes: without it the query is lost and the client
// waits forever.
func TestClientSendsAheadOfHandshake(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	pipelined := func(t *testing.T, c net.Conn, br *bufio.Reader, first []byte) {
		t.Helper()
		if _, err := c.Write(append(first, queryMsg("SELECT 40 + 2")...)); err != nil {
			t.Fatal(err)
		}
		if types, _ := readUntilReady(t, br); !strings.HasPrefix(types, "R") {
			t.Fatalf("welcome: %q", types)
		}
		_, values := readUntilReady(t, br)
		if len(values) != 1 || values[0] != "42" {
			t.Fatalf("the pipelined query answered %q, want [42]", values)
		}
	}
	dial := func(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}
	forRelays(t, func(t *testing.T, cfg proxy.Config) {
		// Pass-through (the cluster trusts postgres): the query rides with
		// the StartupMessage.
		tp := startProxy(t, cfg, staticDirector{addr: cluster.Primary().Addr()})
		c, br := dial(t, tp.addr)
		pipelined(t, c, br, startupMsg("postgres"))
	})
	for _, trx := range []bool{false, true} {
		t.Run(fmt.Sprintf("proxy_auth_transaction_%v", trx), func(t *testing.T) {
			// Proxy authentication (md5): the query rides with the password.
			tp := startProxy(t, pooledConfig(trx, 2), staticDirector{addr: cluster.Primary().Addr()})
			c, br := dial(t, tp.addr)
			if _, err := c.Write(startupMsg(pgcluster.MD5User)); err != nil {
				t.Fatal(err)
			}
			typ, body, err := pgwire.ReadMessage(br, 1024)
			if err != nil || typ != 'R' || len(body) != 8 || binary.BigEndian.Uint32(body) != 5 {
				t.Fatalf("want AuthenticationMD5Password, got %q %x %v", typ, body, err)
			}
			inner := md5.Sum([]byte(pgcluster.MD5Password + pgcluster.MD5User))
			outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), body[4:]...))
			pw := pgwire.AppendMessage(nil, 'p', append([]byte("md5"+hex.EncodeToString(outer[:])), 0))
			pipelined(t, c, br, pw)
		})
	}
}

// TestPlaintextAfterSSLRequestRefused: bytes sent behind an SSLRequest,
// before the TLS handshake, are refused as PostgreSQL refuses them (they
// could be a man in the middle's), not taken into the session or the
// handshake.
func TestPlaintextAfterSSLRequestRefused(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	tp := startProxy(t, proxy.Config{TLS: selfSignedTLS(t)}, staticDirector{addr: cluster.Primary().Addr()})
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	sslRequest := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), pgwire.SSLRequestCode)
	if _, err := c.Write(append(sslRequest, startupMsg("postgres")...)); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c) // the proxy answers and closes
	if len(got) == 0 || got[0] != 'E' {
		t.Fatalf("got %q, want an ErrorResponse (and no 'S')", got)
	}
	_, body, err := pgwire.ReadMessage(bufio.NewReader(strings.NewReader(string(got))), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := pgwire.ErrorFields(body); code != "08P01" || !strings.Contains(msg, "unencrypted data after SSL request") {
		t.Fatalf("got %s %q", code, msg)
	}
}
