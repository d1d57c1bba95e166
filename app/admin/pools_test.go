package admin

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/pool"
	"github.com/ofitec/pgproxy/proxy"
)

var (
	keyOdoo = pool.Key{Addr: "127.0.0.1:5432", Database: "odoo", User: "odoo"}
	keyRO   = pool.Key{Addr: "127.0.0.1:5432", Database: "sales", User: "metabase", ReadOnly: true}
	now     = t0.Add(time.Hour)
)

// poolFake is a pooling proxy in transaction mode: the sessions of
// keyOdoo are one holding a server (pid 4242), one idle between
// transactions and pinned, one waiting for its next transaction's server
// for 1.5 s, one waiting at login for 300 ms; plus a pass-through style
// session and the admin console's own, which have no pool mode.
type poolFake struct {
	*fake
	mode      string
	killed    []string
	reconnect []string
	killN     [2]int
}

func newPoolFake() *poolFake {
	return &poolFake{fake: newFake(), mode: "transaction", killN: [2]int{2, 1}}
}

func (f *poolFake) deps() Deps {
	d := f.fake.deps()
	d.Now = func() time.Time { return now }
	d.PoolMode = func() string { return f.mode }
	d.Sessions = func() []proxy.SessionInfo {
		if f.mode == "" {
			return []proxy.SessionInfo{{ID: 1, User: "odoo", Database: "odoo", State: "idle"}}
		}
		trx := proxy.PoolClient{Mode: "transaction", Key: keyOdoo, LoggedIn: true}
		active, idle, waiting := trx, trx, trx
		active.HoldsServer, active.ServerPID = true, 4242
		idle.Pinned = "listen"
		waiting.WaitingSince = now.Add(-1500 * time.Millisecond)
		login := proxy.PoolClient{Mode: "transaction", Key: keyOdoo, WaitingSince: now.Add(-300 * time.Millisecond)}
		return []proxy.SessionInfo{
			{ID: 12, User: "odoo", Database: "odoo", ApplicationName: "bus", Client: "10.0.0.8:50012", Backend: "127.0.0.1:5432",
				State: "idle", Started: t0, Pool: idle},
			{ID: 11, User: "odoo", Database: "odoo", Client: "10.0.0.8:50011", Backend: "127.0.0.1:5432",
				State: "in transaction", Started: t0, Pool: active},
			{ID: 13, User: "odoo", Database: "odoo", Client: "10.0.0.8:50013", Backend: "127.0.0.1:5432",
				State: "idle", Started: t0.Add(time.Second), Pool: waiting},
			{ID: 14, User: "odoo", Database: "odoo", Client: "10.0.0.8:50014", State: "startup", Started: t0.Add(2 * time.Second), Pool: login},
			{ID: 15, User: "postgres", Database: "pgproxy", Client: "10.0.0.1:40000", Route: "admin", State: "startup", Started: t0},
		}
	}
	d.Pools = func() []pool.Stats {
		return []pool.Stats{
			{Key: keyOdoo, Clients: 3, Waiting: 1, Active: 1, Idle: 0, Opening: 1, MaxWait: 1200 * time.Millisecond},
			{Key: keyRO, Clients: 0, Active: 0, Idle: 2},
		}
	}
	d.Servers = func() []pool.Server {
		return []pool.Server{
			{Key: keyOdoo, PID: 4242, Active: true, Created: t0},
			{Key: keyOdoo, PID: 4243, Active: true, Created: t0}, // just released by a session that ended
			{Key: keyRO, PID: 5001, Created: t0, IdleAt: t0.Add(time.Minute)},
		}
	}
	d.Kill = func(ctx context.Context, db string) (int, int) {
		f.killed = append(f.killed, db)
		if db != "odoo" {
			return 0, 0
		}
		return f.killN[0], f.killN[1]
	}
	d.Reconnect = func(addr string) int {
		f.reconnect = append(f.reconnect, addr)
		return 3
	}
	return d
}

func execTable(t *testing.T, d Deps, q string, cols []string) [][]string {
	t.Helper()
	res, err := exec(t, New(d), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if len(res) != 1 || res[0].Tag != "SHOW" || !reflect.DeepEqual(res[0].Columns, cols) || res[0].Rows == nil {
		t.Fatalf("%s: %d results %+v, want one SHOW result with columns %v", q, len(res), res, cols)
	}
	return table(res[0])
}

func TestShowPools(t *testing.T) {
	f := newPoolFake()
	got := execTable(t, f.deps(), "SHOW POOLS", PoolsColumns)
	// cl_active: the holder and the idle pinned one; cl_waiting: the one
	// before its transaction and the one at login; maxwait the longer wait.
	want := [][]string{
		{"odoo", "odoo", "127.0.0.1:5432", "transaction", "2", "2", "1", "0", "1500", "1", "f"},
		{"sales", "metabase", "127.0.0.1:5432", "transaction", "0", "0", "0", "2", "0", "0", "t"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SHOW POOLS\n got %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(PoolsColumns[:9], []string{"database", "user", "backend", "mode", "cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait_ms"}) {
		t.Errorf("SHOW POOLS columns %v do not start with CONFIG.md's", PoolsColumns)
	}

	// Without the sessions, the pool's own counts.
	d := f.deps()
	d.Sessions = nil
	got = execTable(t, d, "show pools;", PoolsColumns)
	if want := []string{"odoo", "odoo", "127.0.0.1:5432", "transaction", "3", "1", "1", "0", "1200", "1", "f"}; !reflect.DeepEqual(got[0], want) {
		t.Errorf("SHOW POOLS without sessions\n got %q\nwant %q", got[0], want)
	}

	// Pooling off: no rows, same columns.
	f.mode = ""
	if got := execTable(t, f.deps(), "SHOW POOLS", PoolsColumns); len(got) != 0 {
		t.Errorf("SHOW POOLS in passthrough mode: %q, want no rows", got)
	}
}

func TestShowClients(t *testing.T) {
	f := newPoolFake()
	got := execTable(t, f.deps(), "SHOW CLIENTS", ClientsColumns)
	want := [][]string{
		{"11", "odoo", "odoo", "", "10.0.0.8:50011", "127.0.0.1:5432", "transaction", "active", "in transaction", "4242", "NULL", "NULL", "2026-11-27 05:00:00.000Z"},
		{"12", "odoo", "odoo", "bus", "10.0.0.8:50012", "127.0.0.1:5432", "transaction", "idle", "idle", "NULL", "NULL", "listen", "2026-11-27 05:00:00.000Z"},
		{"13", "odoo", "odoo", "", "10.0.0.8:50013", "127.0.0.1:5432", "transaction", "waiting", "idle", "NULL", "1500", "NULL", "2026-11-27 05:00:01.000Z"},
		{"14", "odoo", "odoo", "", "10.0.0.8:50014", "NULL", "transaction", "waiting", "startup", "NULL", "300", "NULL", "2026-11-27 05:00:02.000Z"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SHOW CLIENTS\n got %q\nwant %q", got, want)
	}
	// A logged-in client that has not got a pool yet is in startup.
	if s := clientState(proxy.PoolClient{Mode: "session"}); s != "startup" {
		t.Errorf("state of a client not logged in = %q, want startup", s)
	}
	f.mode = ""
	if got := execTable(t, f.deps(), "SHOW CLIENTS", ClientsColumns); len(got) != 0 {
		t.Errorf("SHOW CLIENTS in passthrough mode: %q, want no rows (SHOW SESSIONS lists them)", got)
	}
}

func TestShowServers(t *testing.T) {
	f := newPoolFake()
	got := execTable(t, f.deps(), "SHOW SERVERS", ServersColumns)
	want := [][]string{
		{"127.0.0.1:5432", "odoo", "odoo", "f", "4242", "active", "11", "2026-11-27 05:00:00.000Z", "NULL"},
		{"127.0.0.1:5432", "odoo", "odoo", "f", "4243", "active", "NULL", "2026-11-27 05:00:00.000Z", "NULL"},
		{"127.0.0.1:5432", "sales", "metabase", "t", "5001", "idle", "NULL", "2026-11-27 05:00:00.000Z", "2026-11-27 05:01:00.000Z"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SHOW SERVERS\n got %q\nwant %q", got, want)
	}
	f.mode = ""
	if got := execTable(t, f.deps(), "SHOW SERVERS", ServersColumns); len(got) != 0 {
		t.Errorf("SHOW SERVERS in passthrough mode: %q, want no rows", got)
	}
}

func TestKillAndReconnect(t *testing.T) {
	f := newPoolFake()
	c := New(f.deps())
	for _, q := range []string{"KILL odoo", "kill 'odoo';"} {
		res, err := exec(t, c, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if len(res) != 1 || res[0].Tag != "KILL" || res[0].Columns != nil {
			t.Errorf("%s: %+v, want a KILL tag and no rows", q, res)
		}
	}
	res, err := exec(t, c, `RECONNECT "127.0.0.1:5432"; reconnect DB-B.EXAMPLE:5433`)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Tag != "RECONNECT" || res[1].Tag != "RECONNECT" {
		t.Errorf("RECONNECT results %+v", res)
	}
	if !reflect.DeepEqual(f.killed, []string{"odoo", "odoo"}) || !reflect.DeepEqual(f.reconnect, []string{"127.0.0.1:5432", "db-b.example:5433"}) {
		t.Errorf("killed %v reconnected %v", f.killed, f.reconnect)
	}
	// Only idle servers closed, no session: still something was killed.
	f.killN = [2]int{0, 1}
	if _, err := exec(t, c, "KILL odoo"); err != nil {
		t.Errorf("KILL with servers only: %v", err)
	}
}

func TestPoolCommandErrors(t *testing.T) {
	cases := []struct {
		name, q   string
		code      string
		msg, hint string
		mutate    func(*poolFake, *Deps)
		killed    []string
		reconnect []string
	}{
		{name: "show pools argument", q: "SHOW POOLS odoo", code: pgerr.SyntaxError, msg: "SHOW POOLS takes no argument"},
		{name: "show clients argument", q: "SHOW CLIENTS x", code: pgerr.SyntaxError, msg: "SHOW CLIENTS takes no argument"},
		{name: "show servers argument", q: "SHOW SERVERS x", code: pgerr.SyntaxError, msg: "SHOW SERVERS takes no argument"},
		{name: "kill without database", q: "KILL", code: pgerr.SyntaxError, msg: "KILL needs exactly one database", hint: "KILL <database>"},
		{name: "kill two databases", q: "KILL a b", code: pgerr.SyntaxError, msg: "KILL needs exactly one database"},
		{name: "kill nothing there", q: `KILL "Odoo"`, code: pgerr.InvalidCatalogName, msg: `no client session or pooled server uses database "Odoo"`,
			hint: "case-sensitive", killed: []string{"Odoo"}},
		{name: "kill the console", q: "KILL pgproxy", code: pgerr.FeatureNotSupported, msg: "does not kill its own sessions"},
		{name: "reconnect without backend", q: "RECONNECT", code: pgerr.SyntaxError, msg: "RECONNECT needs exactly one backend", hint: "RECONNECT <backend>"},
		{name: "reconnect unknown backend", q: "RECONNECT 10.9.9.9:5432", code: pgerr.UndefinedObject, msg: `backend "10.9.9.9:5432" does not exist`,
			hint: "127.0.0.1:5432, db-b.example:5433"},
		{name: "reconnect in passthrough", q: "RECONNECT 127.0.0.1:5432", code: pgerr.FeatureNotSupported, msg: "pooling is off (auth.mode: passthrough)",
			hint: "KILL <database>", mutate: func(f *poolFake, d *Deps) { d.PoolMode = nil }},
		{name: "show pools not wired", q: "SHOW POOLS", code: pgerr.FeatureNotSupported, msg: "SHOW POOLS is not available",
			mutate: func(_ *poolFake, d *Deps) { d.Pools = nil }},
		{name: "show servers not wired", q: "SHOW SERVERS", code: pgerr.FeatureNotSupported, msg: "SHOW SERVERS is not available",
			mutate: func(_ *poolFake, d *Deps) { d.Servers = nil }},
		{name: "show clients not wired", q: "SHOW CLIENTS", code: pgerr.FeatureNotSupported, msg: "SHOW CLIENTS is not available",
			mutate: func(_ *poolFake, d *Deps) { d.Sessions = nil }},
		{name: "kill not wired", q: "KILL odoo", code: pgerr.FeatureNotSupported, msg: "KILL is not available",
			mutate: func(_ *poolFake, d *Deps) { d.Kill = nil }},
		{name: "reconnect not wired", q: "RECONNECT 127.0.0.1:5432", code: pgerr.FeatureNotSupported, msg: "RECONNECT is not available",
			mutate: func(_ *poolFake, d *Deps) { d.Reconnect = nil }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newPoolFake()
			d := f.deps()
			if tc.mutate != nil {
				tc.mutate(f, &d)
			}
			_, err := exec(t, New(d), tc.q)
			if err == nil {
				t.Fatalf("%s succeeded, want %s", tc.q, tc.code)
			}
			pe := pgErr(t, err)
			if pe.Code != tc.code || !strings.Contains(pe.Message, tc.msg) || !strings.Contains(pe.Hint, tc.hint) {
				t.Errorf("%s: %s %q hint %q, want %s %q hint %q", tc.q, pe.Code, pe.Message, pe.Hint, tc.code, tc.msg, tc.hint)
			}
			if !reflect.DeepEqual(f.killed, tc.killed) || !reflect.DeepEqual(f.reconnect, tc.reconnect) {
				t.Errorf("killed %v reconnected %v, want %v %v", f.killed, f.reconnect, tc.killed, tc.reconnect)
			}
		})
	}
}
