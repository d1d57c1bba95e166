package proxy_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/proxy"
)

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
