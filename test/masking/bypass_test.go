package masking_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/pgtest"
	"github.com/ofitec/pgproxy/test/proxytest"
)

const (
	maskedUser     = "bi_ext"
	maskedPassword = "bi_ext_pass"
	maskingKey     = "test-masking-key"
)

// The clear values: none of them may appear in any byte a masked client
// receives (in text, or as the binary encoding of the integer).
var (
	emails = []string{"alice.secret@example.com", "bob.hidden@example.org", "carol.private@example.net"}
	vats   = []string{"76.123.456-7", "77.987.654-3", "78.555.444-K"}
	phones = []string{"+56-9-1111-2222", "+56-9-3333-4444", "+56-9-5555-6666"}
	scores = []int32{918273, 827364, 736455}
	names  = []string{"Alice", "Bob", "Carol"}
)

const setupSQL = `
CREATE ROLE bi_ext LOGIN PASSWORD 'bi_ext_pass';
CREATE TABLE res_partner (id int PRIMARY KEY, name text, email text, vat varchar(20), phone text, score int);
INSERT INTO res_partner VALUES
 (1, 'Alice', 'alice.secret@example.com', '76.123.456-7', '+56-9-1111-2222', 918273),
 (2, 'Bob',   'bob.hidden@example.org',   '77.987.654-3', '+56-9-3333-4444', 827364),
 (3, 'Carol', 'carol.private@example.net', '78.555.444-K', '+56-9-5555-6666', 736455);
CREATE TABLE sale_order (id int PRIMARY KEY, partner_id int, amount numeric(12,2), note text);
INSERT INTO sale_order VALUES (10, 1, 100.50, 'alice.secret@example.com'), (11, 2, 200.00, 'x'), (12, 3, 300.25, 'y');
CREATE VIEW partner_v AS SELECT id, email, lower(email) AS low_email FROM res_partner;
CREATE FUNCTION leak() RETURNS text LANGUAGE sql AS 'SELECT email FROM res_partner ORDER BY id LIMIT 1';
GRANT SELECT ON ALL TABLES IN SCHEMA public TO bi_ext;
`

const maskingYAML = `masking:
  rules:
    - match: { user: "bi_*" }
      columns:
        public.res_partner.email: hash
        public.res_partner.vat: partial
        public.res_partner.phone: redact
        public.res_partner.score: hash
`

var setupOnce sync.Once

func setup(t *testing.T) {
	t.Helper()
	pgcluster.Require(t, cluster)
	setupOnce.Do(func() {
		ctx := pgtest.Ctx(t, time.Minute)
		if err := cluster.Primary().Exec(ctx, setupSQL); err != nil {
			t.Fatalf("setup: %v", err)
		}
		if err := cluster.WaitReplicasCaughtUp(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// startMasked runs pgproxy with the masking rule, in pass-through or in a
// pooled mode ("session", "transaction").
func startMasked(t *testing.T, pool string) *proxytest.Proxy {
	t.Helper()
	yaml := maskingYAML
	if pool != "" {
		yaml += fmt.Sprintf("auth:\n  mode: proxy\n  file: %s\npool:\n  mode: %s\n  size: 2\n",
			proxytest.Userlist(t, cluster, maskedUser), pool)
	}
	return proxytest.Start(t, cluster, &proxytest.Options{YAML: yaml, Env: []string{"PGPROXY_MASKING_KEY=" + maskingKey}})
}

// recorder keeps every byte a client connection reads.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

type recConn struct {
	net.Conn
	r *recorder
}

func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.r.mu.Lock()
	c.r.buf.Write(b[:n])
	c.r.mu.Unlock()
	return n, err
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}

// connectRecorded connects as the masked user through the read listener,
// recording what the client receives.
func connectRecorded(t *testing.T, p *proxytest.Proxy) (*pgx.Conn, *recorder) {
	t.Helper()
	dsn := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", maskedUser, maskedPassword, p.ReadAddr())
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &recConn{Conn: c, r: rec}, nil
	}
	conn, err := pgx.ConnectConfig(pgtest.Ctx(t, 20*time.Second), cfg)
	if err != nil {
		t.Fatalf("connect as %s: %v", maskedUser, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, rec
}

// leaked returns the first clear value found in b.
func leaked(b []byte) string {
	for _, list := range [][]string{emails, vats, phones} {
		for _, v := range list {
			if bytes.Contains(b, []byte(v)) {
				return v
			}
		}
	}
	for _, s := range scores {
		if bytes.Contains(b, []byte(fmt.Sprint(s))) {
			return fmt.Sprint(s)
		}
		var be [4]byte
		binary.BigEndian.PutUint32(be[:], uint32(s))
		if bytes.Contains(b, be[:]) {
			return fmt.Sprintf("%d (binary int4)", s)
		}
	}
	return ""
}

type outcome int

const (
	refused outcome = iota // 42501 from the proxy
	masked                 // runs; whatever it returns is masked
)

type attempt struct {
	name string
	want outcome
	run  func(ctx context.Context, c *pgx.Conn) ([][]any, error)
}

func query(sql string, mode pgx.QueryExecMode, args ...any) func(context.Context, *pgx.Conn) ([][]any, error) {
	return func(ctx context.Context, c *pgx.Conn) ([][]any, error) {
		rows, err := c.Query(ctx, sql, append([]any{mode}, args...)...)
		if err != nil {
			return nil, err
		}
		var out [][]any
		for rows.Next() {
			v, err := rows.Values()
			if err != nil {
				rows.Close()
				return out, err
			}
			out = append(out, v)
		}
		rows.Close()
		return out, rows.Err()
	}
}

func simple(sql string) func(context.Context, *pgx.Conn) ([][]any, error) {
	return query(sql, pgx.QueryExecModeSimpleProtocol)
}

func extended(sql string, args ...any) func(context.Context, *pgx.Conn) ([][]any, error) {
	return query(sql, pgx.QueryExecModeCacheStatement, args...)
}

func copyTo(sql string) func(context.Context, *pgx.Conn) ([][]any, error) {
	return func(ctx context.Context, c *pgx.Conn) ([][]any, error) {
		_, err := c.PgConn().CopyTo(ctx, io.Discard, sql)
		return nil, err
	}
}

// script runs statements in one transaction (simple protocol); the last
// one's rows are returned.
func script(stmts ...string) func(context.Context, *pgx.Conn) ([][]any, error) {
	return func(ctx context.Context, c *pgx.Conn) ([][]any, error) {
		var out [][]any
		for _, s := range stmts {
			var err error
			if out, err = simple(s)(ctx, c); err != nil {
				return out, err
			}
		}
		return out, nil
	}
}

// rawExecute prepares sql, then binds and executes it with binary results
// and no Describe (as pgjdbc does for a statement it described before):
// the proxy must still know the columns of the rows that come, and the
// client must see no RowDescription it did not ask for.
func rawExecute(sql string) func(context.Context, *pgx.Conn) ([][]any, error) {
	return func(ctx context.Context, c *pgx.Conn) ([][]any, error) {
		pc := c.PgConn()
		fe := pc.Frontend()
		recv := func() ([][]any, error) {
			var out [][]any
			var failed error
			for {
				m, err := pc.ReceiveMessage(ctx)
				if err != nil {
					return out, err
				}
				switch m := m.(type) {
				case *pgproto3.RowDescription:
					failed = errors.New("a RowDescription the client did not ask for")
				case *pgproto3.DataRow:
					row := make([]any, len(m.Values))
					for i, v := range m.Values {
						row[i] = append([]byte(nil), v...)
					}
					out = append(out, row)
				case *pgproto3.ErrorResponse:
					failed = pgconn.ErrorResponseToPgError(m)
				case *pgproto3.ReadyForQuery:
					return out, failed
				}
			}
		}
		fe.Send(&pgproto3.Parse{Name: "raw1", Query: sql})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			return nil, err
		}
		if _, err := recv(); err != nil {
			return nil, err
		}
		fe.Send(&pgproto3.Bind{PreparedStatement: "raw1", ResultFormatCodes: []int16{1}})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		if err := fe.Flush(); err != nil {
			return nil, err
		}
		return recv()
	}
}

var attempts = []attempt{
	{"Bind/Execute without Describe, binary", masked, rawExecute("SELECT score, email, vat FROM res_partner")},
	{"plain columns, simple protocol", masked, simple("SELECT id, name, email, vat, phone, score FROM res_partner ORDER BY id")},
	{"plain columns, extended protocol, binary results", masked, extended("SELECT id, name, email, vat, phone, score FROM res_partner ORDER BY id")},
	{"star, simple", masked, simple("SELECT * FROM res_partner")},
	{"star, extended", masked, extended("SELECT * FROM res_partner WHERE id > $1", 0)},
	{"prepared statement run twice", masked, func(ctx context.Context, c *pgx.Conn) ([][]any, error) {
		if _, err := extended("SELECT email, score FROM res_partner WHERE id = $1", 1)(ctx, c); err != nil {
			return nil, err
		}
		return extended("SELECT email, score FROM res_partner WHERE id = $1", 2)(ctx, c)
	}},
	{"join alias", masked, simple("SELECT j.email, j.amount FROM (res_partner p JOIN sale_order o ON o.partner_id = p.id) AS j")},
	{"view, plain output", masked, extended("SELECT id, email FROM partner_v")},
	{"SQL PREPARE/EXECUTE", masked, script("PREPARE s1 AS SELECT email, vat FROM res_partner", "EXECUTE s1")},
	{"cursor FETCH", masked, script("BEGIN", "DECLARE c1 CURSOR FOR SELECT email, phone, score FROM res_partner", "FETCH ALL c1")},
	{"binary cursor FETCH", masked, script("BEGIN", "DECLARE c2 BINARY CURSOR FOR SELECT score, email FROM res_partner", "FETCH ALL c2")},
	{"function on a masked column", refused, simple("SELECT lower(email) FROM res_partner")},
	{"concatenation", refused, extended("SELECT email || '' FROM res_partner")},
	{"cast", refused, simple("SELECT score::text FROM res_partner")},
	{"WHERE predicate", refused, simple("SELECT id FROM res_partner WHERE email LIKE 'alice%'")},
	{"WHERE with a parameter", refused, extended("SELECT id FROM res_partner WHERE vat = $1", "76.123.456-7")},
	{"JOIN condition", refused, simple("SELECT o.id FROM sale_order o JOIN res_partner p ON p.email = o.note")},
	{"GROUP BY", refused, simple("SELECT email, count(*) FROM res_partner GROUP BY email")},
	{"ORDER BY", refused, simple("SELECT email FROM res_partner ORDER BY email")},
	{"ORDER BY position", refused, simple("SELECT email FROM res_partner ORDER BY 1")},
	// The same shapes with other constants, after an allowed one (the
	// proxy keeps its answers by the statement's shape).
	{"ORDER BY position after an allowed one", refused, script("SELECT id, email FROM res_partner ORDER BY 1", "SELECT id, email FROM res_partner ORDER BY 2")},
	{"predicate after a string holding it", refused, script("SELECT id FROM res_partner WHERE name = 'x'' AND email = ''y'", "SELECT id FROM res_partner WHERE name = 'x' AND email = 'y'")},
	{"predicate after an E string holding it", refused, script(`SELECT id FROM res_partner WHERE name = E'x\' AND vat = \'y'`, `SELECT id FROM res_partner WHERE name = E'x' AND vat = 'y'`)},
	{"predicate after a dollar quote holding it", refused, script("SELECT id FROM res_partner WHERE name = $q$x$ AND email = $q$", "SELECT id FROM res_partner WHERE name = $q$x$q$ AND email = $q$y$q$")},
	{"HAVING", refused, simple("SELECT count(*) FROM res_partner HAVING max(email) > 'a'")},
	{"scalar subquery", refused, simple("SELECT (SELECT email FROM res_partner WHERE id = 1)")},
	{"FROM subquery", refused, simple("SELECT e FROM (SELECT email AS e FROM res_partner) s")},
	{"CTE renaming", refused, simple("WITH x(e) AS (SELECT email FROM res_partner) SELECT e FROM x")},
	{"UNION", refused, simple("SELECT email FROM res_partner UNION SELECT 'x'")},
	{"whole-row to_json", refused, simple("SELECT to_json(p) FROM res_partner p")},
	{"whole-row row(p.*)", refused, extended("SELECT row(p.*)::text FROM res_partner p")},
	{"whole-row reference", refused, simple("SELECT p FROM res_partner p")},
	{"aggregate", refused, simple("SELECT string_agg(email, ',') FROM res_partner")},
	{"window", refused, simple("SELECT first_value(phone) OVER () FROM res_partner")},
	{"DISTINCT", refused, simple("SELECT DISTINCT vat FROM res_partner")},
	{"RETURNING", refused, simple("UPDATE res_partner SET name = name WHERE id = 1 RETURNING email")},
	{"view computing from a masked column", refused, simple("SELECT low_email FROM partner_v")},
	{"star over that view", refused, simple("SELECT * FROM partner_v")},
	{"user-defined function", refused, simple("SELECT leak()")},
	{"query_to_xml", refused, simple("SELECT query_to_xml('SELECT email FROM res_partner', true, false, '')")},
	{"DO block", refused, simple("DO $$BEGIN RAISE EXCEPTION '%', (SELECT email FROM res_partner LIMIT 1); END$$")},
	{"COPY table TO STDOUT", refused, copyTo("COPY res_partner TO STDOUT")},
	{"COPY query TO STDOUT", refused, copyTo("COPY (SELECT email FROM res_partner) TO STDOUT")},
	{"cursor over an expression", refused, script("BEGIN", "DECLARE c3 CURSOR FOR SELECT upper(email) FROM res_partner")},
	{"second statement of a batch", refused, simple("SELECT 1; SELECT id FROM res_partner WHERE email = 'x'")},
	{"EXPLAIN ANALYZE with a predicate", refused, simple("EXPLAIN ANALYZE SELECT id FROM res_partner WHERE email = 'alice.secret@example.com'")},
	{"CREATE TEMP TABLE AS", refused, simple("CREATE TEMP TABLE t AS SELECT email FROM res_partner")},
	{"LATERAL", refused, simple("SELECT s.e FROM res_partner p, LATERAL (SELECT p.email AS e) s")},
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{16}$`)

// TestMaskingBypass tries each attempt on a connection of its own, in
// pass-through and both pool modes: each is refused with 42501 or runs with
// masked results, and no clear value is in any byte the client receives.
func TestMaskingBypass(t *testing.T) {
	setup(t)
	eachMode(t, func(t *testing.T, mode string) {
		{
			p := startMasked(t, mode)
			if len(attempts) < 25 {
				t.Fatalf("only %d attempts", len(attempts))
			}
			for _, a := range attempts {
				t.Run(a.name, func(t *testing.T) {
					conn, rec := connectRecorded(t, p)
					ctx := pgtest.Ctx(t, 20*time.Second)
					rows, err := a.run(ctx, conn)
					switch a.want {
					case refused:
						if code := pgtest.SQLState(err); code != "42501" {
							t.Errorf("want 42501, got %v (rows %v)", err, rows)
						}
					case masked:
						if err != nil {
							t.Errorf("want masked rows, got %v", err)
						} else if len(rows) == 0 {
							t.Errorf("no rows")
						}
					}
					// The session is still usable after a refusal.
					if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil && !errors.Is(err, context.DeadlineExceeded) && pgtest.SQLState(err) == "" {
						t.Errorf("session unusable after the attempt: %v", err)
					}
					var one int
					if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
						t.Errorf("SELECT 1 after the attempt: %v", err)
					}
					if v := leaked(rec.bytes()); v != "" {
						t.Errorf("clear value %q reached the client", v)
					}
				})
			}
		}
	})
}

// TestMaskedValues checks what each method writes, in text and binary.
func TestMaskedValues(t *testing.T) {
	setup(t)
	p := startMasked(t, proxytest.PoolMode())
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		conn, rec := connectRecorded(t, p)
		ctx := pgtest.Ctx(t, 20*time.Second)
		rows, err := conn.Query(ctx, "SELECT name, email, vat, phone, score FROM res_partner ORDER BY id", mode)
		if err != nil {
			t.Fatal(err)
		}
		var gotEmails []string
		var gotScores []int32
		i := 0
		for rows.Next() {
			var name, email, vat, phone string
			var score int32
			if err := rows.Scan(&name, &email, &vat, &phone, &score); err != nil {
				t.Fatal(err)
			}
			if name != names[i] {
				t.Errorf("name %q: a column no rule names was changed", name)
			}
			if !hexHash.MatchString(email) {
				t.Errorf("email %q: want a 16-hex-digit hash", email)
			}
			if want := "***" + vats[i][len(vats[i])-4:]; vat != want {
				t.Errorf("vat %q: want %q (partial)", vat, want)
			}
			if phone != "***" {
				t.Errorf("phone %q: want *** (redact)", phone)
			}
			if score == scores[i] || score < 0 {
				t.Errorf("score %d: want a hash", score)
			}
			gotEmails, gotScores = append(gotEmails, email), append(gotScores, score)
			i++
		}
		rows.Close()
		if err := rows.Err(); err != nil || i != 3 {
			t.Fatalf("rows: %v (%d)", err, i)
		}
		// Stable: the same value hashes the same in another query and format.
		var again string
		var againScore int32
		if err := conn.QueryRow(ctx, "SELECT email, score FROM res_partner WHERE id = 1", pgx.QueryExecModeSimpleProtocol).Scan(&again, &againScore); err != nil {
			t.Fatal(err)
		}
		if again != gotEmails[0] || againScore != gotScores[0] {
			t.Errorf("hash not stable: %q/%d then %q/%d", gotEmails[0], gotScores[0], again, againScore)
		}
		if v := leaked(rec.bytes()); v != "" {
			t.Errorf("clear value %q reached the client", v)
		}
	}
	// Not masked: another user sees the clear values.
	plain := pgtest.Connect(t, proxytest.DSN(p.ReadAddr(), "postgres", "postgres"))
	var email string
	if err := plain.QueryRow(pgtest.Ctx(t, 10*time.Second), "SELECT email FROM res_partner WHERE id = 1").Scan(&email); err != nil || email != emails[0] {
		t.Errorf("postgres sees %q, %v: want the clear value", email, err)
	}
	_, metrics := p.Get(t, "/metrics")
	for _, m := range []string{`pgproxy_masked_values_total{column="public.res_partner.email"}`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestRefusalObservable: the refusal's message, metric and log line (no literal).
func TestRefusalObservable(t *testing.T) {
	setup(t)
	p := startMasked(t, proxytest.PoolMode())
	conn, _ := connectRecorded(t, p)
	ctx := pgtest.Ctx(t, 20*time.Second)
	_, err := conn.Exec(ctx, "SELECT id FROM res_partner WHERE email = 'alice.secret@example.com'")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" ||
		!strings.HasPrefix(pe.Message, "column public.res_partner.email is masked for user bi_ext: it may appear only as a plain output column") {
		t.Fatalf("got %v", err)
	}
	_, metrics := p.Get(t, "/metrics")
	if !strings.Contains(metrics, `pgproxy_masking_refusals_total{reason="where"} 1`) {
		t.Errorf("/metrics lacks the refusal:\n%s", grep(metrics, "masking"))
	}
	found := false
	for _, e := range p.Logs.All() {
		if e.Message == "masking: statement refused" {
			found = true
			for k, v := range e.ContextMap() {
				if strings.Contains(fmt.Sprint(v), "alice") {
					t.Errorf("log field %s carries a literal: %v", k, v)
				}
			}
		}
	}
	if !found {
		t.Errorf("no refusal log line")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMaskedLargeResult: a result of many reads (rows split across reads,
// the large read buffer) is masked row by row, every row, in both
// protocols, and the masked-values counter counts each value.
func TestMaskedLargeResult(t *testing.T) {
	setup(t)
	p := startMasked(t, proxytest.PoolMode())
	const n = 20000
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		conn, rec := connectRecorded(t, p)
		ctx := pgtest.Ctx(t, 30*time.Second)
		rows, err := conn.Query(ctx, "SELECT g, p.email, p.vat FROM res_partner p, generate_series(1, $1::int) g ORDER BY g, p.id", mode, n)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for rows.Next() {
			var g int
			var email, vat string
			if err := rows.Scan(&g, &email, &vat); err != nil {
				t.Fatal(err)
			}
			if !hexHash.MatchString(email) || !strings.HasPrefix(vat, "***") || g != got/3+1 {
				t.Fatalf("row %d: %d %q %q", got, g, email, vat)
			}
			got++
		}
		rows.Close()
		if err := rows.Err(); err != nil || got != 3*n {
			t.Fatalf("%d rows, %v; want %d", got, err, 3*n)
		}
		if v := leaked(rec.bytes()); v != "" {
			t.Errorf("clear value %q reached the client", v)
		}
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
			t.Errorf("SELECT 1 after: %v", err)
		}
	}
}

// eachMode runs f as a subtest in pass-through ("") and in both pool modes
// (pool.mode: "session", "transaction").
func eachMode(t *testing.T, f func(t *testing.T, mode string)) {
	for _, mode := range []string{"", "session", "transaction"} {
		name := mode
		if name == "" {
			name = "passthrough"
		}
		t.Run(name, func(t *testing.T) { f(t, mode) })
	}
}
