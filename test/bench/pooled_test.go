package main

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/pgauth"
)

// The generated pgproxy configuration is one pgproxy itself accepts, with
// the pool it was asked for (and none in pass-through mode).
func TestPgproxyYAML(t *testing.T) {
	dir := t.TempDir()
	userlist := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(userlist, []byte(userlistLine("scram_user", "md5"+strings.Repeat("a", 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(t *testing.T, yaml string) *configs.Config {
		t.Helper()
		path := filepath.Join(t.TempDir(), "pgproxy.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := configs.Load(configs.LoadOptions{Path: path, Environ: []string{"PGPROXY_HEALTH_PASSWORD=x"}})
		if err != nil {
			t.Fatalf("pgproxy refuses the generated configuration: %v\n%s", err, yaml)
		}
		return c
	}
	backends := []string{"127.0.0.1:5432", "127.0.0.1:5433"}
	pass := load(t, pgproxyYAML(proxyConf{}, 6433, 9090, backends))
	if pass.Auth.Mode != configs.AuthPassthrough || pass.Limits.MaxSessions != 5000 || pass.Runtime.GOMAXPROCS != 0 {
		t.Errorf("pass-through: auth %+v, max_sessions %d, gomaxprocs %d", pass.Auth, pass.Limits.MaxSessions, pass.Runtime.GOMAXPROCS)
	}
	txn := load(t, pgproxyYAML(proxyConf{Gomaxprocs: 2, MaxSessions: 10100, AuthFile: userlist, Pool: "transaction", PoolSize: 50}, 6433, 9090, backends))
	if txn.Auth.Mode != configs.AuthProxy || txn.Auth.File != userlist || txn.Pool.Mode != "transaction" || txn.Pool.Size != 50 ||
		txn.Limits.MaxSessions != 10100 || txn.Runtime.GOMAXPROCS != 2 {
		t.Errorf("transaction: auth %+v, pool %+v, max_sessions %d, gomaxprocs %d", txn.Auth, txn.Pool, txn.Limits.MaxSessions, txn.Runtime.GOMAXPROCS)
	}
	sess := load(t, pgproxyYAML(proxyConf{AuthFile: userlist, Pool: "session", PoolSize: 100}, 6433, 9090, backends))
	if sess.Pool.Mode != "session" || sess.Pool.Size != 100 {
		t.Errorf("session: pool %+v", sess.Pool)
	}
	if len(txn.Listen) != 1 || txn.Listen[0].Addr != "127.0.0.1:6433" || txn.HTTP.Addr != "127.0.0.1:9090" || len(txn.Backends) != 2 {
		t.Errorf("listen %+v, http %q, backends %+v", txn.Listen, txn.HTTP.Addr, txn.Backends)
	}
}

func TestPgbouncerINI(t *testing.T) {
	ini := pgbouncerINI(bouncerConf{Dir: "/tmp/b", Mode: "transaction", AuthType: "md5", PoolSize: 20, MaxClientConn: 2100}, 5433, 6432)
	for _, want := range []string{
		"postgres = host=127.0.0.1 port=5433 dbname=postgres\n",
		"listen_port = 6432\n",
		"auth_type = md5\n",
		"auth_file = /tmp/b/userlist.txt\n",
		"pool_mode = transaction\n",
		"max_client_conn = 2100\n",
		"default_pool_size = 20\n",
		"pidfile = /tmp/b/pgbouncer.pid\n",
		"log_connections = 0\n",
	} {
		if !strings.Contains(ini, want) {
			t.Errorf("ini lacks %q:\n%s", want, ini)
		}
	}
}

// The userlist the bench writes is read back by pgproxy's own parser, with
// a quote in a name doubled as the format wants.
func TestUserlistLine(t *testing.T) {
	const scram = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$aGtleWhrZXloa2V5aGtleWhrZXloa2V5aGtleWhrZXk=:c2tleXNrZXlza2V5c2tleXNrZXlza2V5c2tleXNrZXk="
	md5 := "md5" + strings.Repeat("0123456789abcdef", 2)
	text := userlistLine("scram_user", scram) + userlistLine(`we"ird`, md5)
	if got := userlistLine(`a"b`, "x"); got != `"a""b" "x"`+"\n" {
		t.Errorf("quoting: %q", got)
	}
	ul, warnings, err := pgauth.ParseUserlist(strings.NewReader(text), "userlist.txt")
	if err != nil || len(warnings) != 0 {
		t.Fatalf("%v %v\n%s", err, warnings, text)
	}
	if ul["scram_user"].Kind != pgauth.KindSCRAM || ul[`we"ird`].Kind != pgauth.KindMD5 || len(ul) != 2 {
		t.Fatalf("parsed %v", ul)
	}
}

func TestParseFlagsPooled(t *testing.T) {
	o, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if !o.pooled || o.rounds != 2 || o.poolSize != 20 || o.pooledIdle != 2000 || o.largeClients != 10000 || o.largeServers != 50 || o.largeDuration != 30*time.Second {
		t.Fatalf("defaults: %+v", o)
	}
	// -S at 16 and 64 in three modes, then -C (md5) and -C (SCRAM) at 16.
	cs := o.pooledCases()
	var names []string
	for _, c := range cs {
		names = append(names, c.Name())
	}
	want := "-M simple -c 16,-M extended -c 16,-M prepared -c 16,-M simple -c 64,-M extended -c 64,-M prepared -c 64,-M simple -c 16 -C (md5),-M simple -c 16 -C"
	if got := strings.Join(names, ","); got != want {
		t.Fatalf("pooled cases\n got %s\nwant %s", got, want)
	}
	// 28 pooled runs per round: 4 targets × 8 cases, less prepared on
	// PgBouncer-txn (2) and the SCRAM -C in session mode (2); 33 pass-through;
	// 6 masking (2 cases × 3 targets, masking_test.go).
	if got, want := o.estimate(), time.Duration(2*(33+28+6))*11*time.Second+5*time.Minute+2*(30*time.Second+20*time.Second+30*time.Second)+o.routing.estimate(o); got != want {
		t.Errorf("estimate %s, want %s", got, want)
	}

	o, err = parseFlags([]string{"-pooled=false"}, &strings.Builder{})
	if err != nil || len(o.pooledCases()) != 0 {
		t.Fatalf("-pooled=false: %v %v", o.pooledCases(), err)
	}
	o, err = parseFlags([]string{"-quick"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if !o.pooled || len(o.pooledCases()) != 4 || o.pooledIdle != 200 || o.largeClients != 500 || o.largeDuration != 3*time.Second {
		t.Fatalf("quick: %v, idle %d, large %d for %s", o.pooledCases(), o.pooledIdle, o.largeClients, o.largeDuration)
	}
	o, err = parseFlags([]string{"-quick", "-large-clients", "2000", "-pooled-modes", "extended"}, &strings.Builder{})
	if err != nil || o.largeClients != 2000 || len(o.pooledModes) != 1 || o.pooledModes[0] != "extended" {
		t.Fatalf("quick with explicit values: %+v %v", o, err)
	}
	for _, bad := range [][]string{
		{"-pooled-modes", "simple,statement"},
		{"-pool-size", "0"},
		{"-large-clients", "-1"},
		{"-large-duration", "0s"},
		{"-pooled-clients", "x"},
	} {
		if _, err := parseFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestSkipPooledAndForCase(t *testing.T) {
	prep, scramC, md5C := Case{Mode: "prepared", Clients: 16}, Case{Mode: "simple", Clients: 16, Connect: true}, Case{Mode: "simple", Clients: 16, Connect: true, MD5: true}
	for _, tc := range []struct {
		c      Case
		target string
		skip   bool
		na     bool
	}{
		{prep, PgBouncerTxn, true, true},
		{prep, PgproxyTxn, false, false},
		{prep, PgBouncerSession, false, false},
		{scramC, PgBouncerSession, true, false},
		{scramC, PgproxySession, true, false},
		{scramC, PgproxyTxn, false, false},
		{md5C, PgBouncerSession, false, false},
	} {
		if got := skipPooled(tc.c, tc.target); got != tc.skip {
			t.Errorf("skipPooled(%s, %s) = %v", tc.c.Name(), tc.target, got)
		}
		if got := naPooled(tc.c, tc.target); got != tc.na {
			t.Errorf("naPooled(%s, %s) = %v", tc.c.Name(), tc.target, got)
		}
	}
	tg := target{name: PgproxyTxn, port: 1, user: pooledUser, password: pooledPassword}
	if got := tg.forCase(md5C); got.user != md5User || got.password != md5Password {
		t.Errorf("md5 case logs in as %s", got.user)
	}
	if got := tg.forCase(scramC); got.user != pooledUser {
		t.Errorf("SCRAM case logs in as %s", got.user)
	}
	trust := target{name: Pgproxy, user: "postgres"}
	if got := trust.forCase(md5C); got.user != "postgres" {
		t.Errorf("a trust target changed user: %s", got.user)
	}
	env := tg.env([]string{"A=1"})
	if strings.Join(env, " ") != "A=1 PGPASSWORD="+pooledPassword || len(trust.env([]string{"A=1"})) != 1 {
		t.Errorf("env %v", env)
	}
	if got := tg.dsn(); got != "postgres://scram_user:scram_pass@127.0.0.1:1/postgres?sslmode=disable" {
		t.Errorf("dsn %s", got)
	}
	if got := dsn(5, "postgres", ""); got != "postgres://postgres@127.0.0.1:5/postgres?sslmode=disable" {
		t.Errorf("trust dsn %s", got)
	}
	if got := strings.Join(md5C.Args(7, md5User, "postgres", 2*time.Second), " "); got != "-n -S -M simple -c 16 -j 2 -T 2 -C -h 127.0.0.1 -p 7 -U md5_user postgres" {
		t.Errorf("args %s", got)
	}
	if got := (Case{Mode: "simple", Clients: 10000, Threads: 4}).Args(7, "u", "d", time.Second); strings.Join(got[:8], " ") != "-n -S -M simple -c 10000 -j 4" {
		t.Errorf("threads: %v", got)
	}
}

func TestParsePgbenchLogs(t *testing.T) {
	a := "0 1 1500 0 1700000000 1\n0 2 2500 0 1700000000 2\n1 1 failed 0 1700000000 3\n"
	b := "2 1 500 0 1700000000 4 0\n3 1 1000000 0 1700000001 5\n\n"
	lat, err := parsePgbenchLogs(strings.NewReader(a), strings.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// µs: 500, 1500, 2500, 1000000
	if lat.N != 4 || lat.Other != 1 || lat.P50 != 1.5 || lat.P99 != 1000 || lat.Max != 1000 {
		t.Fatalf("got %+v", lat)
	}
	if _, err := parsePgbenchLogs(strings.NewReader("0 1 15\n")); err == nil {
		t.Error("a short line: no error")
	}
	empty, err := parsePgbenchLogs(strings.NewReader(""))
	if err != nil || empty.N != 0 || !math.IsNaN(empty.P99) || !math.IsNaN(empty.Max) {
		t.Errorf("no transactions: %+v %v", empty, err)
	}
	dir := t.TempDir()
	prefix := filepath.Join(dir, "large")
	for name, text := range map[string]string{"large.123": a, "large.123.1": b} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := readPgbenchLogs(prefix); err != nil || got != lat {
		t.Errorf("from files: %+v %v", got, err)
	}
	if left, _ := filepath.Glob(prefix + ".*"); len(left) != 0 {
		t.Errorf("log files left: %v", left)
	}
	if _, err := readPgbenchLogs(prefix); err == nil {
		t.Error("no files: no error")
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{0.5, 5}, {0.99, 10}, {0.1, 1}, {0, 1}, {1, 10}} {
		if got := percentile(xs, tc.p); got != tc.want {
			t.Errorf("p%.2f = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestHistogram(t *testing.T) {
	text := `# HELP pgproxy_pool_wait_seconds Time a pooled client waited.
# TYPE pgproxy_pool_wait_seconds histogram
pgproxy_pool_wait_seconds_bucket{le="0.0001"} 10
pgproxy_pool_wait_seconds_bucket{le="0.0004"} 50
pgproxy_pool_wait_seconds_bucket{le="0.0016"} 90
pgproxy_pool_wait_seconds_bucket{le="+Inf"} 100
pgproxy_pool_wait_seconds_sum 0.5
pgproxy_pool_wait_seconds_count 100
pgproxy_other_bucket{le="1"} 3
`
	h, err := parseHistogram(text, "pgproxy_pool_wait_seconds")
	if err != nil || len(h) != 4 || h[math.Inf(1)] != 100 {
		t.Fatalf("%v %v", h, err)
	}
	before := Histogram{0.0001: 10, 0.0004: 10, 0.0016: 10, math.Inf(1): 10}
	d := h.Sub(before) // 0, 40, 80, 90
	if lo, hi, ok := d.Quantile(0.5); !ok || lo != 0.0004 || hi != 0.0016 {
		t.Errorf("p50 in %v–%v (%v)", lo, hi, ok)
	}
	if lo, hi, ok := d.Quantile(0.99); !ok || lo != 0.0016 || !math.IsInf(hi, 1) {
		t.Errorf("p99 in %v–%v (%v)", lo, hi, ok)
	}
	if _, _, ok := h.Sub(h).Quantile(0.99); ok {
		t.Error("an empty histogram has a quantile")
	}
	if _, err := parseHistogram("x 1\n", "pgproxy_pool_wait_seconds"); err == nil {
		t.Error("no buckets: no error")
	}
	if _, err := parseHistogram(`pgproxy_pool_wait_seconds_bucket{le="a"} 1`, "pgproxy_pool_wait_seconds"); err == nil {
		t.Error("bad bound: no error")
	}
	for v, want := range map[float64]string{0.0016: "1.6 ms", 1.6384: "1.638 s", math.Inf(1): "+Inf", 0: "0"} {
		if got := seconds(v); got != want {
			t.Errorf("seconds(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestLargeT(t *testing.T) {
	// 100 warm-up clients on 2 threads connected in 250 ms: 5 ms each; 10 000
	// clients on 2 threads: 25 s, with a quarter more and 2 s: 30+31.25+2.
	if got := largeT(30*time.Second, 250, 100, 10000, 2); got != 63*time.Second {
		t.Errorf("largeT = %s", got)
	}
	if got := largeT(3*time.Second, 0, 100, 500, 2); got != 5*time.Second {
		t.Errorf("no connection time: %s", got)
	}
}

func TestCountAborted(t *testing.T) {
	stderr := []byte(`pgbench: error: client 7 script 0 aborted in command 1 query 0: FATAL:  pgproxy: pool x exhausted
pgbench: error: client 7 aborted in command 1 (SQL) of script 0; perhaps the backend died while processing
pgbench: error: client 12 aborted while establishing connection
pgbench: error: Run was aborted; the above results are incomplete.
`)
	if got := countAborted(stderr); got != 2 {
		t.Errorf("countAborted = %d, want 2 (client 7 twice, client 12)", got)
	}
	if got := countAborted(nil); got != 0 {
		t.Errorf("nothing: %d", got)
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := []byte("Name:\tpgproxy\nVmHWM:\t  80000 kB\nVmRSS:\t   55536 kB\n")
	if got, err := parseStatusKiB(status, "VmHWM"); err != nil || got != 80000 {
		t.Errorf("VmHWM %d %v", got, err)
	}
	if _, err := parseStatusKiB(status, "VmSwap"); err == nil {
		t.Error("missing line: no error")
	}
	if n, err := procPeakRSS(os.Getpid()); err != nil || n <= 0 {
		t.Errorf("own VmHWM %d %v", n, err)
	}
}

func pooledTable() *Table {
	cases := []Case{{Mode: "simple", Clients: 16}, {Mode: "prepared", Clients: 16}, {Mode: "simple", Clients: 16, Connect: true, MD5: true}}
	tb := newTable(cases, pooledTargets)
	set := func(c Case, target string, s []Sample) { tb.Samples[c.Name()][target] = s }
	set(cases[0], PgBouncerSession, sample(30000, 0.5, time.Second))
	set(cases[0], PgproxySession, sample(31000, 0.48, time.Second))
	set(cases[0], PgBouncerTxn, sample(30000, 0.5, time.Second))
	set(cases[0], PgproxyTxn, sample(24000, 0.6, 1500*time.Millisecond))
	set(cases[1], PgBouncerSession, sample(40000, 0.4, time.Second))
	set(cases[1], PgproxySession, sample(40000, 0.4, time.Second))
	set(cases[1], PgproxyTxn, sample(35000, 0.45, 1200*time.Millisecond)) // PgBouncer-txn: n/a
	set(cases[2], PgBouncerSession, sample(8000, 2, time.Second))
	set(cases[2], PgproxySession, sample(4000, 4, 2*time.Second))
	set(cases[2], PgBouncerTxn, sample(9000, 1.8, time.Second))
	set(cases[2], PgproxyTxn, []Sample{{Err: os.ErrDeadlineExceeded}})
	return tb
}

func TestPooledReport(t *testing.T) {
	o, err := parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	p := &PooledReport{
		Table: pooledTable(),
		Idle: map[string]IdleResult{
			PgBouncerTxn: {Sessions: 2000, BeforeKiB: 8000, WithKiB: 9000},
			PgproxyTxn:   {Sessions: 2000, BeforeKiB: 20000, WithKiB: 60000},
		},
		Large: []LargeResult{
			{Target: PgBouncerTxn, T: 63 * time.Second, Sample: Sample{Result: Result{TPS: 18000, Processed: 540000, ConnectMS: 25000}, CPU: 10 * time.Second, HasCPU: true},
				Latency: Latency{N: 540000, P50: 500, P99: 700, Max: 800}, PeakKiB: 66 * 1024},
			{Target: PgproxyTxn, T: 63 * time.Second, Err: os.ErrDeadlineExceeded},
		},
	}
	md := p.Markdown(o)
	for _, want := range []string{
		"| `-M simple -c 16` | session | 30000 | 31000 | 1.03× | 0.500 / 0.480 | 1.00 / 1.00 | 1.00× | 1.50 / 1.50 | 0 / 0 |",
		"| `-M simple -c 16` | transaction | 30000 | 24000 | 0.80× | 0.500 / 0.600 | 1.00 / 1.50 | 1.50× | 1.50 / 1.50 | 0 / 0 |",
		"| `-M prepared -c 16` | transaction | n/a¹ | 35000 | – | n/a / 0.450 | n/a / 1.20 | – | n/a / 1.50 | n/a / 0 |",
		"| `-M simple -c 16 -C (md5)` | transaction | 9000 | – | – | 1.800 / – | 1.00 / – | – | 1.50 / – | 0 / 0 (1 no summary) |",
		"¹ not run: PgBouncer 1.18",
		"| PgBouncer-txn | 2000 | 8000 | 9000 | 0.50 |",
		"| pgproxy-txn | 2000 | 20000 | 60000 | 20.00 |",
		"| PgBouncer-txn | 63 | 25.0 | 30.0 | 18000 | 500.0 / 700.0 / 800.0 | – | 0 | 0 | 1.85 | 66 |",
		"| pgproxy-txn | 63 | – |",
		"pgproxy-txn: i/o timeout",
		"| `-C -c16` (md5 role; with SCRAM pgbench's PBKDF2 sets the pace): pgproxy ≥ 1.0× PgBouncer TPS, same pool mode (CPU per connection and query pgproxy / PgBouncer) | session 0.50× (CPU 2.00×) | **not met** |",
		"| `-S -c16/-c64`, session mode: pgproxy ≥ 1.0× PgBouncer TPS (CPU per query pgproxy / PgBouncer) | `-c16` simple 1.03× (CPU 1.00×), `-c16` prepared 1.00× (CPU 1.00×) | met |",
		"`-c16` simple 0.80× (CPU 1.50×) | **not met** |",
		"| 2000 idle clients on 20 servers, transaction mode: ≤ 2 KiB RSS per idle client (pgproxy; PgBouncer alongside) | pgproxy 20.00 KiB, PgBouncer 0.50 KiB | **not met** |",
		"| 10000 clients on 50 servers, `-S` for 30 s, transaction mode: 0 failed transactions (pgproxy; p99 reported) | PgBouncer-txn: 0 failed, 0 aborted clients, p99 700.0 ms; pgproxy-txn: no result | **not met** |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("pooled report lacks %q:\n%s", want, md)
		}
	}
	// The machine table leaves out what did not run.
	if strings.Contains(md, "| `-M prepared -c 16` | PgBouncer-txn |") {
		t.Errorf("machine table has a row for a case that did not run:\n%s", md)
	}

	// Scaled down, the checks say so; without measurements they are not evaluated.
	o.largeClients, o.pooledIdle = 2000, 500
	empty := (&PooledReport{}).Checks(o)
	for _, c := range empty {
		if c.OK != nil {
			t.Errorf("%q evaluated without measurements: %s", c.Target, c.Result)
		}
	}
	if r := (&PooledReport{Large: []LargeResult{{Target: PgproxyTxn, Sample: Sample{Result: Result{Processed: 10, TPS: 1}}}}}).Checks(o)[4]; !strings.Contains(r.Result, "scaled down from the issue's 10 000 clients") || r.OK == nil || !*r.OK {
		t.Errorf("scaled-down large check: %+v", r)
	}
	if r := (&PooledReport{Idle: map[string]IdleResult{PgproxyTxn: {Sessions: 500, BeforeKiB: 1000, WithKiB: 1500}}}).Checks(o)[3]; !strings.Contains(r.Result, "the issue asks for 2 000 clients") || r.OK == nil || !*r.OK {
		t.Errorf("scaled-down idle check: %+v", r)
	}
}

func TestRenderDocPooled(t *testing.T) {
	o, err := parseFlags([]string{"-rounds", "2", "-duration", "8s"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	in := docInput{Options: o, Date: time.Unix(0, 0), Command: "go run ./test/bench", Table: "T", Checks: "C", LoadAvg: [2]string{"1 / 2 / 3", "4 / 5 / 6"}}
	without := renderDoc(in)
	if strings.Contains(without, "## Pooling (issue 17)") || strings.Contains(without, "Pooled PgBouncers") {
		t.Errorf("pooling section without pooled results")
	}
	in.Pooled = &PooledReport{Table: pooledTable()}
	doc := renderDoc(in)
	for _, want := range []string{
		"## Pooling (issue 17)",
		"Pools: transaction mode 20 server connections, session mode 100; every pool was filled by a warm-up of 64 clients",
		"`(md5)` rows log in as `md5_user`",
		"| `-M simple -c 16` | transaction | 30000 | 24000 | 0.80× |",
		"Idle clients in transaction mode: not measured in this run.",
		"- Pooled PgBouncers (`PgBouncer-session`, `PgBouncer-txn`)",
		"load average (1/5/15 min) before the runs: 1 / 2 / 3; after: 4 / 5 / 6",
		"2 round(s)",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("doc lacks %q", want)
		}
	}
	if strings.Index(doc, "## Pooling (issue 17)") > strings.Index(doc, "## Idle sessions") {
		t.Error("the pooling section must come before the idle sessions")
	}
}

func TestProgress(t *testing.T) {
	out := []byte("pgbench (15.20)\nprogress: 5.0 s, 18222.3 tps, lat 10.212 ms stddev 2.101, 0 failed\n" +
		"progress: 10.0 s, 17000.0 tps, lat 11.000 ms stddev 2.000, 0 failed\n" +
		"pgbench: error: client 3 script 0 aborted in command 1 query 0: FATAL:  x\n" +
		"progress: 15.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed\nprogress: 20.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed\n" +
		"progress: x s, y tps\n")
	ps := parseProgress(out)
	if len(ps) != 4 || ps[0] != (Progress{At: 5, TPS: 18222.3}) || ps[3] != (Progress{At: 20}) {
		t.Fatalf("parsed %v", ps)
	}
	if got, want := progressSummary(ps), "17611 tps on average from 0 to 10 s, then 0 tps from 10 to 20 s"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if progressSummary(nil) != "" {
		t.Error("no progress, a summary")
	}
	p := &PooledReport{Large: []LargeResult{{Target: PgproxyTxn, T: 65 * time.Second, Err: errors.New("pgbench still running after 2m5s: killed"),
		Sample: Sample{Result: Result{AbortedClients: 7, Progress: ps}}}}}
	o, _ := parseFlags(nil, &strings.Builder{})
	if md := p.LargeMarkdown(o); !strings.Contains(md, "pgproxy-txn: pgbench still running after 2m5s: killed; pgbench `-P 5` said: 17611 tps on average from 0 to 10 s, then 0 tps from 10 to 20 s; 7 clients aborted\n") {
		t.Errorf("large failure:\n%s", md)
	}
}
