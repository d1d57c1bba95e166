package proxy_test

// Scripted fake backends for tests that need a server PostgreSQL cannot be
// made to be: canned results without allocation (relay benchmarks, close and
// reset races), and TLS answers of every kind (backend_tls tests).

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeBackend answers a trust startup, then every Query with a canned
// result (RowDescription, rows DataRows, CommandComplete, ReadyForQuery),
// without allocating per query.
func fakeBackend(b testing.TB, rows int) (addr string, responseLen int) {
	var resp []byte
	resp, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("aid"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}, {Name: []byte("abalance"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}).Encode(resp)
	for i := 0; i < rows; i++ {
		resp, _ = (&pgproto3.DataRow{Values: [][]byte{[]byte("12345"), []byte("-4711")}}).Encode(resp)
	}
	resp, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(resp)
	resp, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(resp)
	addr = fakeServer(b, func(c net.Conn, buf []byte) {
		var hdr [5]byte
		for {
			if _, err := io.ReadFull(c, hdr[:]); err != nil {
				return
			}
			n := int(binary.BigEndian.Uint32(hdr[1:]))
			if n-4 > len(buf) { // hostile-length tests: stream it away
				if _, err := io.CopyN(io.Discard, c, int64(n-4)); err != nil {
					return
				}
				continue
			}
			if _, err := io.ReadFull(c, buf[:n-4]); err != nil {
				return
			}
			switch hdr[0] {
			case 'Q':
				c.Write(resp)
			case 'X':
				return
			}
		}
	})
	return addr, len(resp)
}

// fakeServer listens on loopback until the test ends and, for each
// connection, answers the startup packet as a trust server would
// (AuthenticationOk, a ParameterStatus, BackendKeyData, ReadyForQuery),
// then hands the connection and an 8 KiB buffer to serve, and closes it
// when serve returns.
func fakeServer(tb testing.TB, serve func(c net.Conn, buf []byte)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return fakeServerOn(tb, ln, serve)
}

// fakeServerOn is fakeServer on a listener of the caller's.
func fakeServerOn(tb testing.TB, ln net.Listener, serve func(c net.Conn, buf []byte)) string {
	tb.Cleanup(func() { ln.Close() })
	var hello []byte
	hello, _ = (&pgproto3.AuthenticationOk{}).Encode(hello)
	hello, _ = (&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"}).Encode(hello)
	hello, _ = (&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}).Encode(hello)
	hello, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(hello)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 8<<10)
				var hdr [4]byte
				if _, err := io.ReadFull(c, hdr[:]); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(hdr[:]))
				if n < 8 || n-4 > len(buf) {
					return
				}
				if _, err := io.ReadFull(c, buf[:n-4]); err != nil {
					return
				}
				if _, err := c.Write(hello); err != nil {
					return
				}
				serve(c, buf)
			}()
		}
	}()
	return ln.Addr().String()
}

// tlsAnswer is how a scripted backend answers an SSLRequest.
type tlsAnswer int

const (
	answerNoTLS       tlsAnswer = iota // 'N', then plaintext
	answerTLS                          // 'S' and a good handshake
	answerBadTLS                       // 'S', then garbage instead of a ServerHello
	answerUnreachable                  // nothing listens
)

// scriptedBackend is a fake PostgreSQL server: it answers SSLRequest as told,
// then trusts any StartupMessage (AuthenticationOk, BackendKeyData,
// ReadyForQuery) and serves until Terminate or EOF. It records how each
// session it served was carried.
type scriptedBackend struct {
	addr     string
	sessions atomic.Int32 // sessions that reached ReadyForQuery
	overTLS  atomic.Int32 // of which over TLS
}

func startScriptedBackend(t *testing.T, answer tlsAnswer, cert *tls.Config) *scriptedBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &scriptedBackend{addr: ln.Addr().String()}
	if answer == answerUnreachable {
		ln.Close() // the port is free again: connects are refused
		return b
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				b.serve(c, answer, cert)
			}()
		}
	}()
	return b
}

func readPacket(r io.Reader) (code uint32, body []byte, err error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 8 || n > 10000 {
		return 0, nil, errors.New("bad length")
	}
	body = make([]byte, n-8)
	_, err = io.ReadFull(r, body)
	return binary.BigEndian.Uint32(hdr[4:]), body, err
}

func (b *scriptedBackend) serve(c net.Conn, answer tlsAnswer, cert *tls.Config) {
	code, _, err := readPacket(c)
	if err != nil {
		return
	}
	var conn net.Conn = c
	tlsUsed := false
	if code == 80877103 { // SSLRequest
		switch answer {
		case answerNoTLS:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
		case answerTLS:
			if _, err := c.Write([]byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(c, cert)
			if tc.Handshake() != nil {
				return
			}
			conn, tlsUsed = tc, true
		case answerBadTLS:
			_, _ = c.Write([]byte("Snot a TLS server hello\n"))
			return
		}
		if code, _, err = readPacket(conn); err != nil {
			return
		}
	}
	if code != 196608 { // protocol 3.0
		return
	}
	be := pgproto3.NewBackend(conn, conn)
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	b.sessions.Add(1)
	if tlsUsed {
		b.overTLS.Add(1)
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.Terminate:
			return
		case *pgproto3.Query:
			be.Send(&pgproto3.EmptyQueryResponse{})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		}
	}
}
