package proxy_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/internal/sqlscan"
	"github.com/ofitec/pgproxy/proxy"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/pgtest"
)

func ctxT(t *testing.T, d time.Duration) context.Context { return pgtest.Ctx(t, d) }

func connect(t *testing.T, dsn string) *pgx.Conn { t.Helper(); return pgtest.Connect(t, dsn) }

func sqlState(err error) string { return pgtest.SQLState(err) }

// rawSession opens a pgconn session through the proxy (for tests that
// drive the protocol message by message); closed when the test ends.
func rawSession(t *testing.T, tp *testProxy) *pgconn.PgConn {
	t.Helper()
	pc, err := pgconn.Connect(ctxT(t, 10*time.Second), tp.dsn("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(context.Background()) })
	return pc
}

func primaryProxy(t *testing.T, cfg proxy.Config) *testProxy {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	return startProxy(t, cfg, staticDirector{addr: cluster.Primary().Addr()})
}

func TestAuthMethodsPassThrough(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	ctx := ctxT(t, 30*time.Second)
	for _, c := range []struct{ user, pass string }{
		{pgcluster.MD5User, pgcluster.MD5Password},
		{pgcluster.ScramUser, pgcluster.ScramPassword},
		{"postgres", ""},
	} {
		conn := connect(t, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", c.user, c.pass, tp.addr))
		var u string
		if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&u); err != nil || u != c.user {
			t.Fatalf("%s: current_user=%q err=%v", c.user, u, err)
		}
	}
	for _, user := range []string{pgcluster.MD5User, pgcluster.ScramUser} {
		_, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s:wrong@%s/postgres?sslmode=disable", user, tp.addr))
		if sqlState(err) != "28P01" {
			t.Fatalf("%s with a wrong password: %v, want 28P01", user, err)
		}
	}
}

func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
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

func TestClientTLS(t *testing.T) {
	tlsCfg := selfSignedTLS(t)
	tp := primaryProxy(t, proxy.Config{TLS: tlsCfg})
	ctx := ctxT(t, 30*time.Second)
	for _, mode := range []string{"sslmode=require", "sslmode=require&sslnegotiation=direct", "sslmode=disable", "sslmode=prefer"} {
		conn := connect(t, fmt.Sprintf("postgres://%s:%s@%s/postgres?%s", pgcluster.ScramUser, pgcluster.ScramPassword, tp.addr, mode))
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		_, isTLS := conn.PgConn().Conn().(*tls.Conn)
		if want := mode != "sslmode=disable"; isTLS != want {
			t.Fatalf("%s: TLS=%v, want %v", mode, isTLS, want)
		}
		if isTLS {
			cs := conn.PgConn().Conn().(*tls.Conn).ConnectionState()
			if !bytes.Equal(cs.PeerCertificates[0].Raw, tlsCfg.Certificates[0].Certificate[0]) {
				t.Fatalf("%s: the server certificate is not the proxy's", mode)
			}
		}
	}
	// Without tls configured: SSLRequest → N, sslmode=require fails, prefer works.
	tp2 := startProxy(t, proxy.Config{}, staticDirector{addr: cluster.Primary().Addr()})
	if _, err := pgx.Connect(ctx, "postgres://postgres@"+tp2.addr+"/postgres?sslmode=require"); err == nil {
		t.Fatal("sslmode=require worked against a proxy without TLS")
	}
	connect(t, "postgres://postgres@"+tp2.addr+"/postgres?sslmode=prefer")
}

// rawStartup writes a startup-phase packet with the given code and body.
func rawPacket(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

func startupBody(params ...string) []byte {
	var b []byte
	for _, p := range params {
		b = append(append(b, p...), 0)
	}
	return append(b, 0)
}

func TestGSSENCAndSecondSSLRequest(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	conn, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(rawPacket(1234<<16|5680, nil)) // GSSENCRequest
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("GSSENCRequest answer %q err=%v", b[0], err)
	}
	conn.Write(rawPacket(1234<<16|5679, nil)) // SSLRequest
	if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != 'N' {
		t.Fatalf("SSLRequest answer %q err=%v", b[0], err)
	}
	conn.Write(rawPacket(1234<<16|5679, nil)) // a second SSLRequest is refused
	fe := pgproto3.NewFrontend(conn, conn)
	msg, err := fe.Receive()
	if er, ok := msg.(*pgproto3.ErrorResponse); !ok || er.Code != "08P01" {
		t.Fatalf("second SSLRequest: %#v %v", msg, err)
	}
}

func TestProtocolNegotiation(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	conn, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(rawPacket(3<<16|2, startupBody("user", "postgres", "database", "postgres", "_pq_.test_option", "x")))
	fe := pgproto3.NewFrontend(conn, conn)
	var sawNegotiate, sawReady int
	for sawReady == 0 {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.NegotiateProtocolVersion:
			sawNegotiate++
			if m.NewestMinorProtocol != 0 || len(m.UnrecognizedOptions) != 1 || m.UnrecognizedOptions[0] != "_pq_.test_option" {
				t.Fatalf("NegotiateProtocolVersion %+v", m)
			}
		case *pgproto3.ErrorResponse:
			t.Fatalf("error: %+v", m)
		case *pgproto3.ReadyForQuery:
			sawReady++
		}
	}
	if sawNegotiate != 1 {
		t.Fatalf("NegotiateProtocolVersion sent %d times", sawNegotiate)
	}
}

func TestHostileStartup(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{StartupTimeout: 500 * time.Millisecond})
	good := connect(t, tp.dsn("postgres", "postgres"))
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cases := map[string][]byte{
		"2GB length":   binary.BigEndian.AppendUint32(nil, 2<<30),
		"garbage":      []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tiny length":  binary.BigEndian.AppendUint32(nil, 3),
		"old protocol": rawPacket(2<<16, startupBody("user", "x")),
		"no user":      rawPacket(3<<16, startupBody("database", "x")),
		"silent":       nil,
	}
	for name, payload := range cases {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			conn, err := net.Dial("tcp", tp.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(payload)
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			start := time.Now()
			rest, err := io.ReadAll(conn) // the proxy must close the socket
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("socket not closed by the proxy: %v", err)
			}
			if name == "silent" && time.Since(start) < 400*time.Millisecond {
				t.Fatalf("silent socket closed after %v, before startup_timeout", time.Since(start))
			}
			if len(rest) > 0 && rest[0] != 'E' {
				t.Fatalf("answer %q is not an ErrorResponse", rest)
			}
		})
	}
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 8<<20 {
		t.Fatalf("hostile startups allocated %d bytes", d)
	}
	var one int
	if err := good.QueryRow(ctxT(t, 10*time.Second), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("an established session was affected: %v", err)
	}
}

func TestMaxSessions(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{MaxSessions: 2})
	connect(t, tp.dsn("postgres", "postgres"))
	connect(t, tp.dsn("postgres", "postgres"))
	_, err := pgx.Connect(ctxT(t, 10*time.Second), tp.dsn("postgres", "postgres"))
	if sqlState(err) != "53300" {
		t.Fatalf("third session: %v, want 53300", err)
	}
}

func TestCancelRequest(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	pc := rawSession(t, tp)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = pc.CancelRequest(context.Background())
	}()
	start := time.Now()
	_, err := pc.Exec(ctxT(t, 20*time.Second), "SELECT pg_sleep(30)").ReadAll()
	if sqlState(err) != "57014" {
		t.Fatalf("canceled query: %v, want 57014", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("cancel took %v", d)
	}
	// The session stays usable after the cancel.
	if _, err := pc.Exec(ctxT(t, 5*time.Second), "SELECT 1").ReadAll(); err != nil {
		t.Fatal(err)
	}
}

func TestExtendedPipelineFlushPortalSuspended(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	ctx := ctxT(t, 30*time.Second)
	pc := rawSession(t, tp)

	// Flush without Sync: Parse/Bind/Execute(max 2 rows)/Flush must be answered.
	fe := pc.Frontend()
	fe.Send(&pgproto3.Parse{Query: "SELECT g FROM generate_series(1,5) g"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{MaxRows: 2})
	fe.Send(&pgproto3.Flush{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = pc.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []string
	for len(got) < 5 {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("after Flush without Sync (got %v): %v", got, err)
		}
		got = append(got, fmt.Sprintf("%T", msg))
	}
	want := []string{"*pgproto3.ParseComplete", "*pgproto3.BindComplete", "*pgproto3.DataRow", "*pgproto3.DataRow", "*pgproto3.PortalSuspended"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	fe.Send(&pgproto3.Sync{})
	_ = fe.Flush()
	if msg, err := fe.Receive(); err != nil {
		t.Fatal(err)
	} else if _, ok := msg.(*pgproto3.ReadyForQuery); !ok {
		t.Fatalf("after Sync: %T", msg)
	}
	_ = pc.Conn().SetReadDeadline(time.Time{})

	// A pipeline with several Syncs in flight and an error in the middle.
	p := pc.StartPipeline(ctx)
	p.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	var states []string
	for i := 0; i < 6; i++ {
		res, err := p.GetResults()
		if err != nil {
			states = append(states, "result:"+sqlState(err))
			continue
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			_, err := r.Close()
			states = append(states, "result:"+sqlState(err))
		case *pgconn.PipelineSync:
			states = append(states, "sync")
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(states) != "[result: sync result:22012 sync result: sync]" {
		t.Fatalf("pipeline: %v", states)
	}
}

func TestPgxModesBatchCopy(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	ctx := ctxT(t, 60*time.Second)
	for _, mode := range []string{"cache_statement", "cache_describe", "describe_exec", "exec", "simple_protocol"} {
		conn := connect(t, tp.dsn("postgres", "postgres")+"&default_query_exec_mode="+mode)
		for i := 0; i < 7; i++ { // past pgx's and the server's prepare thresholds
			var n int64
			var s string
			if err := conn.QueryRow(ctx, "SELECT $1::int8 * 2, $2::text", int64(i), "x").Scan(&n, &s); err != nil || n != int64(2*i) || s != "x" {
				t.Fatalf("%s: n=%d s=%q err=%v", mode, n, s, err)
			}
		}
	}
	conn := connect(t, tp.dsn("postgres", "postgres"))
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS t_copy; CREATE TABLE t_copy(id int, v text)"); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 50000)
	for i := range rows {
		rows[i] = []any{int32(i), fmt.Sprintf("row-%d", i)}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"t_copy"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	if err != nil || n != 50000 {
		t.Fatalf("CopyFrom: %d %v", n, err)
	}
	var buf bytes.Buffer
	tag, err := conn.PgConn().CopyTo(ctx, &buf, "COPY t_copy TO STDOUT")
	if err != nil || tag.RowsAffected() != 50000 || strings.Count(buf.String(), "\n") != 50000 {
		t.Fatalf("CopyTo: %v %v lines=%d", tag, err, strings.Count(buf.String(), "\n"))
	}
	// CopyFail: an error in the middle of COPY FROM leaves the session usable.
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("1\tok\nnot-a-number\tbad\n"), "COPY t_copy FROM STDIN")
	if sqlState(err) != "22P02" {
		t.Fatalf("bad COPY: %v", err)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT count(*) FROM t_copy")
	b.Queue("SELECT 42")
	br := conn.SendBatch(ctx, b)
	var cnt, v int
	if err := br.QueryRow().Scan(&cnt); err != nil || cnt != 50000 {
		t.Fatalf("batch 1: %d %v", cnt, err)
	}
	if err := br.QueryRow().Scan(&v); err != nil || v != 42 {
		t.Fatalf("batch 2: %d %v", v, err)
	}
	br.Close()
}

func TestFunctionCall(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	pc := rawSession(t, tp)
	_ = pc.Conn().SetReadDeadline(time.Now().Add(20 * time.Second))
	fe := pc.Frontend()
	// int4pl (OID 177): 40 + 2, binary arguments and result.
	fe.Send(&pgproto3.FunctionCall{Function: 177, ArgFormatCodes: []uint16{1}, Arguments: [][]byte{{0, 0, 0, 40}, {0, 0, 0, 2}}, ResultFormatCode: 1})
	_ = fe.Flush()
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	r, ok := msg.(*pgproto3.FunctionCallResponse)
	if !ok || binary.BigEndian.Uint32(r.Result) != 42 {
		t.Fatalf("FunctionCall: %#v", msg)
	}
	if msg, _ := fe.Receive(); fmt.Sprintf("%T", msg) != "*pgproto3.ReadyForQuery" {
		t.Fatalf("after FunctionCallResponse: %T", msg)
	}
}

// TestLargeDataRowStreams checks a 64 MB DataRow crosses the proxy without
// the proxy buffering it: the whole test process allocates far less than
// the row while a raw client drains it.
func TestLargeDataRowStreams(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	pc := rawSession(t, tp)
	raw := pc.Conn()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	q := append([]byte("SELECT repeat('x', 64*1024*1024)"), 0)
	msg := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, uint32(4+len(q)))...)
	if _, err := raw.Write(append(msg, q...)); err != nil {
		t.Fatal(err)
	}
	// Read until ReadyForQuery ('Z' header, length 5) with a small buffer.
	_ = raw.SetReadDeadline(time.Now().Add(60 * time.Second))
	var total int64
	buf := make([]byte, 64<<10)
	for {
		n, err := raw.Read(buf)
		total += int64(n)
		if n >= 6 && bytes.HasSuffix(buf[:n], []byte{'Z', 0, 0, 0, 5, 'I'}) {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
	}
	runtime.ReadMemStats(&ms1)
	if total < 64<<20 {
		t.Fatalf("received %d bytes", total)
	}
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 16<<20 {
		t.Fatalf("relaying a 64 MB row allocated %d MB", d>>20)
	}
}

func TestNotificationWhileIdle(t *testing.T) {
	tp := primaryProxy(t, proxy.Config{})
	ctx := ctxT(t, 30*time.Second)
	listener := connect(t, tp.dsn("postgres", "postgres"))
	if _, err := listener.Exec(ctx, "LISTEN imbus"); err != nil {
		t.Fatal(err)
	}
	notifier := connect(t, tp.dsn("postgres", "postgres"))
	sent := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := notifier.Exec(ctx, "SELECT pg_notify('imbus', 'hello')")
		sent <- err
	}()
	n, err := listener.WaitForNotification(ctx)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err != nil || n.Channel != "imbus" || n.Payload != "hello" {
		t.Fatalf("notification %+v err=%v", n, err)
	}
}

func TestShutdownTerminatesSessions(t *testing.T) {
	pgcluster.Require(t, cluster)
	forRelays(t, func(t *testing.T, cfg proxy.Config) { shutdownTerminates(t, cfg) })
}

func shutdownTerminates(t *testing.T, cfg proxy.Config) {
	checkLeaks(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := proxy.NewServer(cfg, staticDirector{addr: cluster.Primary().Addr()}, nil, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, proxy.Listener{Addr: ln.Addr().String()}) }()
	conn, err := pgx.Connect(ctxT(t, 10*time.Second), "postgres://postgres@"+ln.Addr().String()+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with an idle session open: %v", err)
	}
	if err := <-done; err != proxy.ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	_, err = conn.Exec(ctxT(t, 5*time.Second), "SELECT 1")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Fatalf("query after shutdown: %v, want FATAL 57P01 (admin_shutdown)", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after shutdown")
	}
}

// TestReadOnlyGuard runs bypass attempts on an enforced read-only session
// (a read session that fell back to the primary) and checks each is refused
// with 25006 and nothing changed on the primary.
func TestReadOnlyGuard(t *testing.T) {
	pgcluster.Require(t, cluster)
	checkLeaks(t)
	ctx := ctxT(t, 60*time.Second)
	if err := cluster.Primary().Exec(ctx, "CREATE TABLE IF NOT EXISTS guard_t(v int); CREATE SEQUENCE IF NOT EXISTS guard_seq"); err != nil {
		t.Fatal(err)
	}
	tp := startProxy(t, proxy.Config{ReadOnlyCheck: sqlscan.ReadOnlyViolation}, staticDirector{addr: cluster.Primary().Addr(), readOnly: true})
	attempts := []string{
		"SET default_transaction_read_only = off",
		"set DEFAULT_TRANSACTION_READ_ONLY to 'off'",
		"SET SESSION default_transaction_read_only = false",
		"RESET default_transaction_read_only",
		"RESET ALL",
		"SET default_transaction_read_only TO DEFAULT",
		"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
		"BEGIN READ WRITE",
		"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
		"SET transaction_read_only = off",
		"SET LOCAL transaction_read_only = off",
		"SELECT set_config('default_transaction_read_only', 'off', false)",
		"SELECT set_config('transaction_read_only', 'off', true)",
		"DO $$BEGIN EXECUTE 'SET default_transaction_read_only = off'; END$$",
		"SELECT 1; SET default_transaction_read_only = off; INSERT INTO guard_t VALUES (1)",
		"/* hi */ SeT /* x */ default_transaction_read_only=off",
		"COMMIT; SET default_transaction_read_only = off",
		"INSERT INTO guard_t VALUES (1)",
		"SELECT nextval('guard_seq')",
		"COPY guard_t FROM PROGRAM 'echo 1'",
		"COPY guard_t FROM STDIN",
		"SELECT lo_create(0)",
		"PREPARE p1 AS INSERT INTO guard_t VALUES (1); EXECUTE p1",
		"SELECT set_config(current_setting('application_name') || 'x', 'off', false)",
	}
	for _, mode := range []string{"simple_protocol", "exec", "cache_statement"} {
		conn := connect(t, tp.dsn("postgres", "postgres")+"&default_query_exec_mode="+mode)
		for _, q := range attempts {
			_, err := conn.Exec(ctx, q)
			if code := sqlState(err); code != "25006" {
				t.Errorf("%s: %q: %v, want 25006", mode, q, err)
			}
			if conn.PgConn().TxStatus() != 'I' {
				_, _ = conn.Exec(ctx, "ROLLBACK")
			}
		}
		var ro string
		if err := conn.QueryRow(ctx, "SHOW default_transaction_read_only").Scan(&ro); err != nil || ro != "on" {
			t.Fatalf("%s: default_transaction_read_only=%q err=%v", mode, ro, err)
		}
	}
	var n int
	var last int64
	if err := cluster.Primary().QueryRow(ctx, "SELECT count(*) FROM guard_t", &n); err != nil || n != 0 {
		t.Fatalf("primary changed: %d rows, err=%v", n, err)
	}
	if err := cluster.Primary().QueryRow(ctx, "SELECT last_value FROM guard_seq", &last); err != nil || last != 1 {
		t.Fatalf("sequence moved: %d %v", last, err)
	}
	if err := cluster.Primary().QueryRow(ctx, "SELECT count(*) FROM pg_largeobject_metadata", &n); err != nil || n != 0 {
		t.Fatalf("%d large objects created through a read-only session (err %v)", n, err)
	}
	// Reads still work.
	conn := connect(t, tp.dsn("postgres", "postgres"))
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM guard_t").Scan(&n); err != nil {
		t.Fatal(err)
	}
}
