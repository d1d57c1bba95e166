package proxy_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/proxy"
)

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

// candidatesDirector hands out its backends in order, skipping excluded
// ones, and counts acquisitions and releases (the router's session count).
type candidatesDirector struct {
	addrs              []string
	acquired, released atomic.Int32
	tried              chan string
}

func (d *candidatesDirector) Direct(_ proxy.Listener, _ []proxy.Param, exclude []string) (*proxy.Target, error) {
	for _, a := range d.addrs {
		if slices.Contains(exclude, a) {
			continue
		}
		d.acquired.Add(1)
		d.tried <- a
		var once sync.Once
		return &proxy.Target{Addr: a, Route: "write", Reason: "test",
			Release: func() { once.Do(func() { d.released.Add(1) }) }}, nil
	}
	return nil, &pgErr{code: "57P03", msg: "no backend left"}
}

type pgErr struct{ code, msg string }

func (e *pgErr) Error() string    { return e.msg }
func (e *pgErr) SQLState() string { return e.code }

// TestBackendTLSModes: every backend_tls mode against backends that refuse
// TLS, fail the handshake, are unreachable or do TLS; a failed candidate is
// released and the next one tried, and when none is left the client gets
// 57P03, never a bare EOF.
func TestBackendTLSModes(t *testing.T) {
	cert := selfSignedTLS(t)
	for _, tt := range []struct {
		name    string
		mode    string
		answers []tlsAnswer
		serves  int  // index of the candidate that serves the session, -1 = none
		overTLS bool // the serving backend got TLS
	}{
		{"disable: plaintext", "disable", []tlsAnswer{answerNoTLS}, 0, false},
		{"prefer: N → plaintext on the same backend", "prefer", []tlsAnswer{answerNoTLS}, 0, false},
		{"prefer: TLS", "prefer", []tlsAnswer{answerTLS}, 0, true},
		{"prefer: failed handshake → next candidate", "prefer", []tlsAnswer{answerBadTLS, answerNoTLS}, 1, false},
		{"prefer: failed handshake, none left → 57P03", "prefer", []tlsAnswer{answerBadTLS}, -1, false},
		{"require: N → next candidate over TLS", "require", []tlsAnswer{answerNoTLS, answerTLS}, 1, true},
		{"require: N everywhere → 57P03", "require", []tlsAnswer{answerNoTLS, answerNoTLS}, -1, false},
		{"require: failed handshake → next candidate", "require", []tlsAnswer{answerBadTLS, answerTLS}, 1, true},
		{"require: unreachable → next candidate", "require", []tlsAnswer{answerUnreachable, answerTLS}, 1, true},
		{"verify-full: untrusted certificate → 57P03", "verify-full", []tlsAnswer{answerTLS}, -1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			var backends []*scriptedBackend
			d := &candidatesDirector{tried: make(chan string, 16)}
			for _, a := range tt.answers {
				b := startScriptedBackend(t, a, cert)
				backends = append(backends, b)
				d.addrs = append(d.addrs, b.addr)
			}
			tp := startProxy(t, proxy.Config{BackendTLS: proxy.BackendTLS{Mode: tt.mode}}, d)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgconn.Connect(ctx, tp.dsn("u", "db"))
			if tt.serves < 0 {
				if err == nil {
					conn.Close(ctx)
					t.Fatal("connected, want 57P03")
				}
				if got := sqlState(err); got != "57P03" {
					t.Fatalf("err = %v (SQLSTATE %q), want 57P03", err, got)
				}
			} else {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				if err := conn.Exec(ctx, "").Close(); err != nil {
					t.Fatalf("query: %v", err)
				}
				conn.Close(ctx)
			}
			for i, b := range backends {
				want := int32(0)
				if i == tt.serves {
					want = 1
				}
				if got := b.sessions.Load(); got != want {
					t.Errorf("backend %d (%v) served %d sessions, want %d", i, tt.answers[i], got, want)
				}
				if i == tt.serves && (b.overTLS.Load() == 1) != tt.overTLS {
					t.Errorf("backend %d: over TLS = %v, want %v", i, b.overTLS.Load() == 1, tt.overTLS)
				}
			}
			wantTried := tt.serves + 1 // each candidate up to the one that serves
			if tt.serves < 0 {
				wantTried = len(tt.answers) // every one
			}
			if tried := len(d.tried); tried != wantTried {
				t.Errorf("%d candidates tried, want %d", tried, wantTried)
			}
			// The session's release runs when it ends; wait for the proxy to finish it.
			deadline := time.Now().Add(5 * time.Second)
			for d.released.Load() != d.acquired.Load() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if a, r := d.acquired.Load(), d.released.Load(); a != r {
				t.Errorf("acquired %d backends, released %d", a, r)
			}
		})
	}
}
