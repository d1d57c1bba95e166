package pgauth

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

// Against a real PostgreSQL 15: the harness's scram_user (scram-sha-256 in
// pg_hba.conf, verifier made under password_encryption=scram-sha-256) and
// this package's own md5 role (md5 in pg_hba.conf, hash made under
// password_encryption=md5; the harness's md5_user has a SCRAM verifier, its
// SET password_encryption runs on another connection than its CREATE ROLE).

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.MainNoLeaks(m, pgcluster.Options{Replicas: -1}, &cluster))
}

const (
	md5Role     = "pgauth_md5"
	md5RolePass = "md5-role-pass"
)

var prepared = sync.OnceValue(func() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := cluster.Primary()
	if err := p.Exec(ctx, "SET password_encryption = 'md5'; CREATE ROLE "+md5Role+" LOGIN PASSWORD '"+md5RolePass+"'"); err != nil {
		return err
	}
	// md5 for that role, ahead of the harness's trust line.
	hba := filepath.Join(p.DataDir, "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		return err
	}
	if err := os.WriteFile(hba, append([]byte("host all "+md5Role+" 127.0.0.1/32 md5\n"), old...), 0o600); err != nil {
		return err
	}
	if err := p.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	// Wait until the server asks that role for a password.
	for {
		pc, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://%s:wrong@%s/postgres?sslmode=disable", md5Role, p.Addr()))
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "28P01" {
				return nil
			}
			return err
		}
		_ = pc.Close(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
})

func prepare(t *testing.T) {
	t.Helper()
	pgcluster.Require(t, cluster)
	if err := prepared(); err != nil {
		t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// userlistFromAuthid builds an auth file from pg_authid's verifiers, as an
// operator would (psql -Atc "SELECT ... FROM pg_authid").
func userlistFromAuthid(t *testing.T, ctx context.Context, roles ...string) Userlist {
	t.Helper()
	var b strings.Builder
	for _, r := range roles {
		var pw string
		if err := cluster.Primary().QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = '"+r+"'", &pw); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%q %q\n", r, pw)
	}
	ul, warnings, err := ParseUserlist(strings.NewReader(b.String()), "pg_authid")
	if err != nil || len(warnings) != 0 {
		t.Fatalf("%v %q", err, warnings)
	}
	return ul
}

// fakeProxy is a tiny server that authenticates one client with this
// package (SCRAM, or md5 for an md5 secret) and then pretends to be a
// backend just enough for pgconn to finish connecting.
type fakeProxy struct {
	ln   net.Listener
	done chan struct{}
	mu   sync.Mutex
	cred Credential
	err  error
}

func startFakeProxy(t *testing.T, ul Userlist) *fakeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProxy{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		conn, err := ln.Accept()
		if err != nil {
			p.finish(Credential{}, err)
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		cred, err := p.authenticate(conn, ul)
		p.finish(cred, err)
		if err != nil {
			_, _ = conn.Write(mustEncode(pgerr.Response(err, pgerr.InvalidPassword, "authentication failed")))
			return
		}
		out := pgwire.AppendMessage(nil, 'R', binary.BigEndian.AppendUint32(nil, 0))
		out = pgwire.AppendMessage(out, 'K', []byte{0, 0, 0, 1, 0, 0, 0, 2})
		out = pgwire.AppendMessage(out, 'Z', []byte("I"))
		_, _ = conn.Write(out)
		_, _, _ = pgwire.ReadMessage(conn, 1<<16) // Terminate
	}()
	t.Cleanup(func() {
		ln.Close()
		<-p.done
	})
	return p
}

func mustEncode(m interface{ Encode([]byte) ([]byte, error) }) []byte {
	b, _ := m.Encode(nil)
	return b
}

func (p *fakeProxy) finish(c Credential, err error) {
	p.mu.Lock()
	p.cred, p.err = c, err
	p.mu.Unlock()
}

func (p *fakeProxy) result() (Credential, error) {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cred, p.err
}

func (p *fakeProxy) authenticate(conn net.Conn, ul Userlist) (Credential, error) {
	sp, err := pgwire.ReadStartupPacket(conn)
	if err != nil {
		return Credential{}, err
	}
	user, _ := sp.Get("user")
	sec, ok := ul[user]
	if !ok {
		sec = FakeSecret(user, []byte("test fake key, 32 bytes long...."))
	}
	br := bufio.NewReader(conn)
	if sec.Kind == KindMD5 {
		salt := MD5Challenge()
		if _, err := conn.Write(pgwire.AppendMessage(nil, 'R', append(binary.BigEndian.AppendUint32(nil, 5), salt[:]...))); err != nil {
			return Credential{}, err
		}
		_, body, err := pgwire.ReadMessage(br, MaxAuthMessage)
		if err != nil {
			return Credential{}, err
		}
		return VerifyMD5(user, sec, salt, body)
	}
	s := NewSCRAMServer(user, sec)
	defer s.Zero()
	if _, err := conn.Write(pgwire.AppendMessage(nil, 'R', s.Mechanisms())); err != nil {
		return Credential{}, err
	}
	_, body, err := pgwire.ReadMessage(br, MaxAuthMessage)
	if err != nil {
		return Credential{}, err
	}
	cont, err := s.ClientFirst(body)
	if err != nil {
		return Credential{}, err
	}
	if _, err := conn.Write(pgwire.AppendMessage(nil, 'R', cont)); err != nil {
		return Credential{}, err
	}
	if _, body, err = pgwire.ReadMessage(br, MaxAuthMessage); err != nil {
		return Credential{}, err
	}
	fin, err := s.ClientFinal(body)
	if err != nil {
		return Credential{}, err
	}
	if _, err := conn.Write(pgwire.AppendMessage(nil, 'R', fin)); err != nil {
		return Credential{}, err
	}
	return s.Credential(), nil
}

// clientLogin connects pgconn (a real client's SCRAM/md5, with the
// plaintext) to the fake proxy and returns what the proxy learnt.
func clientLogin(t *testing.T, ctx context.Context, ul Userlist, user, password string) (Credential, error, error) {
	t.Helper()
	p := startFakeProxy(t, ul)
	cfg, err := pgconn.ParseConfig("host=127.0.0.1 sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Port = uint16(p.ln.Addr().(*net.TCPAddr).Port)
	cfg.User, cfg.Password, cfg.Database = user, password, "postgres"
	pc, clientErr := pgconn.ConnectConfig(ctx, cfg)
	if clientErr == nil {
		_ = pc.Close(ctx)
	}
	cred, proxyErr := p.result()
	return cred, proxyErr, clientErr
}

// backendLogin logs in to the primary with cred and runs a query.
func backendLogin(t *testing.T, cred *Credential) (string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", cluster.Primary().Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	startup := pgwire.EncodeStartup(nil, []pgwire.Param{{Key: "user", Value: cred.User}, {Key: "database", Value: "postgres"}})
	if _, err := conn.Write(startup); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	if err := Login(conn, br, cred); err != nil {
		return "", err
	}
	var got string
	sentQuery := false
	for {
		typ, body, err := pgwire.ReadMessage(br, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case 'E':
			_, msg := pgwire.ErrorFields(body)
			t.Fatal(msg)
		case 'D':
			n := binary.BigEndian.Uint32(body[2:])
			got = string(body[6 : 6+n])
		case 'Z':
			if sentQuery {
				_, _ = conn.Write(pgwire.AppendMessage(nil, 'X', nil))
				return got, nil
			}
			sentQuery = true
			if _, err := conn.Write(pgwire.AppendMessage(nil, 'Q', []byte("SELECT current_user || ' ' || (6*7)\x00"))); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestSCRAMPassThroughRealServer(t *testing.T) {
	prepare(t)
	ctx := testCtx(t)
	ul := userlistFromAuthid(t, ctx, pgcluster.ScramUser)
	if sec := ul[pgcluster.ScramUser]; sec.Kind != KindSCRAM || sec.Plain != "" {
		t.Fatalf("pg_authid verifier parsed as %v", sec)
	}

	// A real client's SCRAM, with the plaintext, against SCRAMServer.
	cred, proxyErr, clientErr := clientLogin(t, ctx, ul, pgcluster.ScramUser, pgcluster.ScramPassword)
	if proxyErr != nil || clientErr != nil {
		t.Fatalf("proxy: %v; client: %v", proxyErr, clientErr)
	}
	if !cred.CanLogin() || cred.Secret.Kind != KindSCRAM || cred.Secret.Plain != "" || len(cred.ClientKey) != 32 {
		t.Fatalf("credential: %v", cred)
	}

	// The proxy logs in to PostgreSQL (scram-sha-256 in pg_hba.conf) with
	// the ClientKey: no plaintext anywhere.
	got, err := backendLogin(t, &cred)
	if err != nil {
		t.Fatalf("Login with ClientKey: %v", err)
	}
	if got != pgcluster.ScramUser+" 42" {
		t.Fatalf("query returned %q", got)
	}

	// A wrong ClientKey: the server itself refuses, 28P01.
	bad := Credential{User: cred.User, Secret: cred.Secret, ClientKey: append([]byte(nil), cred.ClientKey...)}
	bad.ClientKey[0] ^= 1
	_, err = backendLogin(t, &bad)
	var pe *pgerr.Error
	if !errors.As(err, &pe) || pe.Code != "28P01" || !strings.Contains(pe.Message, "password authentication failed") {
		t.Fatalf("Login with a wrong ClientKey: %v", err)
	}

	// A verifier for the same password with another salt (auth.file out
	// of date after ALTER ROLE ... PASSWORD with the same password): the
	// proxy says so instead of sending a doomed proof.
	other, _ := ParseSecret(SCRAMVerifier(pgcluster.ScramPassword, []byte("another salt 16b"), 4096))
	ck, _, _ := scramKeys(pgcluster.ScramPassword, []byte("another salt 16b"), 4096)
	_, err = backendLogin(t, &Credential{User: pgcluster.ScramUser, Secret: other, ClientKey: ck})
	if err == nil || !strings.Contains(err.Error(), "does not match the proxy's: update auth.file / auth.query") {
		t.Fatalf("Login with another salt: %v", err)
	}

	// The plaintext works too (a KindPlain credential).
	if got, err := backendLogin(t, &Credential{User: pgcluster.ScramUser, Secret: Secret{Kind: KindPlain, Plain: pgcluster.ScramPassword}}); err != nil || got != pgcluster.ScramUser+" 42" {
		t.Fatalf("Login with the plaintext: %q %v", got, err)
	}
	cred.Zero()
}

func TestSCRAMWrongPasswordAndUnknownUserRealClient(t *testing.T) {
	prepare(t)
	ctx := testCtx(t)
	ul := userlistFromAuthid(t, ctx, pgcluster.ScramUser)
	var msgs []string
	for _, user := range []string{pgcluster.ScramUser, "no_such_user"} {
		cred, proxyErr, clientErr := clientLogin(t, ctx, ul, user, "wrong password")
		if !errors.Is(proxyErr, ErrPasswordMismatch) || cred.CanLogin() {
			t.Fatalf("%s: proxy: %v, %v", user, proxyErr, cred)
		}
		var pgErr *pgconn.PgError
		if !errors.As(clientErr, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("%s: client: %v", user, clientErr)
		}
		msgs = append(msgs, strings.Replace(pgErr.Message, user, "USER", 1))
	}
	if msgs[0] != msgs[1] || msgs[0] != `password authentication failed for user "USER"` {
		t.Fatalf("wrong password: %q, unknown user: %q", msgs[0], msgs[1])
	}
}

func TestMD5RealServer(t *testing.T) {
	prepare(t)
	ctx := testCtx(t)
	ul := userlistFromAuthid(t, ctx, md5Role)
	sec := ul[md5Role]
	if sec.Kind != KindMD5 {
		t.Fatalf("pg_authid hash parsed as %v", sec)
	}
	// (b) Login with the md5 secret from pg_authid (md5 in pg_hba.conf).
	if got, err := backendLogin(t, &Credential{User: md5Role, Secret: sec}); err != nil || got != md5Role+" 42" {
		t.Fatalf("Login with md5 secret: %q %v", got, err)
	}
	if got, err := backendLogin(t, &Credential{User: md5Role, Secret: Secret{Kind: KindPlain, Plain: md5RolePass}}); err != nil || got != md5Role+" 42" {
		t.Fatalf("Login with the plaintext: %q %v", got, err)
	}
	wrong, _ := ParseSecret(md5Secret("not the password", md5Role))
	_, err := backendLogin(t, &Credential{User: md5Role, Secret: wrong})
	var pe *pgerr.Error
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("Login with a wrong md5 secret: %v", err)
	}
	// A real client's md5 against VerifyMD5, then on to the backend.
	cred, proxyErr, clientErr := clientLogin(t, ctx, ul, md5Role, md5RolePass)
	if proxyErr != nil || clientErr != nil {
		t.Fatalf("proxy: %v; client: %v", proxyErr, clientErr)
	}
	if got, err := backendLogin(t, &cred); err != nil || got != md5Role+" 42" {
		t.Fatalf("Login with the client's md5 credential: %q %v", got, err)
	}
	if _, proxyErr, _ = clientLogin(t, ctx, ul, md5Role, "wrong"); !errors.Is(proxyErr, ErrPasswordMismatch) {
		t.Fatalf("md5 wrong password: %v", proxyErr)
	}
}

const authQuery = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"

func newSource(query string, ttl time.Duration) *QuerySource {
	return &QuerySource{
		Addr:     func() (string, error) { return cluster.Primary().Addr(), nil },
		User:     pgcluster.ScramUser, // a superuser, logging in with scram-sha-256
		Password: pgcluster.ScramPassword,
		Database: "postgres",
		Query:    query,
		TTL:      ttl,
		Timeout:  10 * time.Second,
	}
}

func TestQuerySourceRealServer(t *testing.T) {
	prepare(t)
	ctx := testCtx(t)
	p := cluster.Primary()
	for _, q := range []string{
		"DROP ROLE IF EXISTS pgauth_cache", "DROP ROLE IF EXISTS pgauth_nopw",
		"SET password_encryption = 'scram-sha-256'; CREATE ROLE pgauth_cache LOGIN PASSWORD 'one'",
		"CREATE ROLE pgauth_nopw LOGIN", // pg_shadow lists only LOGIN roles: this one's passwd is NULL
	} {
		if err := p.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	ul := userlistFromAuthid(t, ctx, pgcluster.ScramUser, md5Role)

	q := newSource(authQuery, 500*time.Millisecond)
	defer q.Close()
	for _, user := range []string{pgcluster.ScramUser, md5Role} {
		sec, found, err := q.Lookup(ctx, user)
		if err != nil || !found || sec.String() != ul[user].String() || fmt.Sprint(sec.StoredKey, sec.MD5) != fmt.Sprint(ul[user].StoredKey, ul[user].MD5) {
			t.Fatalf("%s: %v %v %v", user, sec, found, err)
		}
	}
	for _, user := range []string{"no_such_user", "pgauth_nopw"} {
		if sec, found, err := q.Lookup(ctx, user); err != nil || found || sec.Kind != KindNone {
			t.Fatalf("%s: %v %v %v", user, sec, found, err)
		}
	}
	// Cached: no query, found and not found alike.
	n := q.queries.Load()
	for _, user := range []string{pgcluster.ScramUser, "no_such_user"} {
		if _, _, err := q.Lookup(ctx, user); err != nil {
			t.Fatal(err)
		}
	}
	if got := q.queries.Load(); got != n {
		t.Fatalf("cache hits ran %d queries", got-n)
	}
	// The cache answers until TTL even when the role changed; then the
	// new verifier is seen.
	before, found, err := q.Lookup(ctx, "pgauth_cache")
	if err != nil || !found || before.Kind != KindSCRAM {
		t.Fatalf("pgauth_cache: %v %v %v", before, found, err)
	}
	if err := p.Exec(ctx, "SET password_encryption = 'scram-sha-256'; ALTER ROLE pgauth_cache PASSWORD 'two'"); err != nil {
		t.Fatal(err)
	}
	cached, _, _ := q.Lookup(ctx, "pgauth_cache")
	if string(cached.StoredKey) != string(before.StoredKey) {
		t.Fatal("second lookup within TTL was not served from the cache")
	}
	time.Sleep(600 * time.Millisecond)
	after, found, err := q.Lookup(ctx, "pgauth_cache")
	if err != nil || !found || string(after.StoredKey) == string(before.StoredKey) {
		t.Fatalf("after TTL: %v %v %v (unchanged: %v)", after, found, err, string(after.StoredKey) == string(before.StoredKey))
	}
	// The server drops the source's connection: the next lookup
	// reconnects.
	if err := p.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgproxy-auth-query'"); err != nil {
		t.Fatal(err)
	}
	if _, found, err := q.Lookup(ctx, pgcluster.MonitorUser); err != nil || !found {
		t.Fatalf("after the server closed the connection: %v %v", found, err)
	}
	var open int
	if err := p.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgproxy-auth-query'", &open); err != nil || open != 1 {
		t.Fatalf("the source holds %d connections (%v), want 1 idle", open, err)
	}
	q.mu.Lock()
	idle := append([]*authConn(nil), q.idle...)
	q.mu.Unlock()
	q.Close()
	if _, _, err := q.Lookup(ctx, "pgauth_nopw"); err == nil {
		t.Fatal("lookup after Close")
	}
	for _, ac := range idle {
		if !ac.pc.IsClosed() {
			t.Fatal("Close left an idle connection open")
		}
	}
}

func TestQuerySourceSharesOneQuery(t *testing.T) {
	prepare(t)
	ctx := testCtx(t)
	q := newSource("SELECT usename, passwd FROM pg_shadow, pg_sleep(0.3) WHERE usename = $1", time.Minute)
	defer q.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sec, found, err := q.Lookup(ctx, pgcluster.ScramUser)
			if err == nil && (!found || sec.Kind != KindSCRAM) {
				err = fmt.Errorf("found %v: %v", found, sec)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := q.queries.Load(); n != 1 {
		t.Fatalf("8 concurrent lookups of one user ran %d queries", n)
	}
}

func TestQuerySourceErrors(t *testing.T) {
	prepare(t)
	ctx := testCtx(t)
	const wrong = "Not-The-Password-4711"
	q := newSource(authQuery, time.Minute)
	q.Password = wrong
	defer q.Close()
	_, _, err := q.Lookup(ctx, md5Role)
	var pe *pgerr.Error
	var pgErr *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Message, "could not connect") || !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("bad auth password: %v", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), wrong) {
		t.Fatalf("the error shows the password: %v", err)
	}
	// Errors are not cached: a second lookup tries again (and fails again).
	if _, _, err2 := q.Lookup(ctx, md5Role); err2 == nil || err2 == err {
		t.Fatalf("second lookup: %v", err2)
	}

	for name, tc := range map[string]struct{ query, want string }{
		"bad secret":  {"SELECT $1::text, 'SCRAM-SHA-256$4096:c2VjcmV0'", "bad secret format"},
		"query error": {"SELECT usename, passwd FROM no_such_table WHERE usename = $1", "query failed"},
		"one column":  {"SELECT passwd FROM pg_shadow WHERE usename = $1", "query failed"},
		"two rows":    {"SELECT usename, passwd FROM pg_shadow WHERE usename = $1 OR passwd IS NOT NULL", "query failed"},
	} {
		q := newSource(tc.query, time.Minute)
		_, _, err := q.Lookup(ctx, pgcluster.ScramUser)
		q.Close()
		if !errors.As(err, &pe) || pe.Code != "08006" || !strings.Contains(pe.Message, tc.want) {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(err.Error(), "c2VjcmV0") {
			t.Fatalf("%s: the error shows the secret: %v", name, err)
		}
	}
	q = newSource(authQuery, time.Minute)
	q.Addr = func() (string, error) { return "", errors.New("no primary is up") }
	if _, _, err := q.Lookup(ctx, "x"); !errors.As(err, &pe) || !strings.Contains(err.Error(), "no primary is up") {
		t.Fatalf("no primary: %v", err)
	}
	q.Close()
}
