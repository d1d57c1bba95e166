package clients

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// odooResult is what testdata/odoo_like.py prints.
type odooResult struct {
	Psycopg2       string            `json:"psycopg2"`
	ServerVersion  int               `json:"server_version"`
	SSLInUse       bool              `json:"ssl_in_use"`
	Params         map[string]string `json:"params"`
	WriteSession   []any             `json:"write_session"`
	RepeatableRead struct {
		Before, During, After int
		Isolation             string
	} `json:"repeatable_read"`
	SkipLocked       []int  `json:"skip_locked"`
	StatementTimeout string `json:"statement_timeout"`
	DivisionError    string `json:"division_error"`
	AfterRollback    string `json:"after_rollback"`
	DiscardAll       struct {
		Before, After []any
	} `json:"discard_all"`
	NamedCursor struct {
		Rows, Sum int
	} `json:"named_cursor"`
	Copy struct {
		OutLines int    `json:"out_lines"`
		InRows   int    `json:"in_rows"`
		BadData  string `json:"bad_data"`
		After    int    `json:"after"`
	} `json:"copy"`
	Listen struct {
		QuietBefore bool     `json:"quiet_before"`
		WaitedS     float64  `json:"waited_s"`
		Channels    []string `json:"channels"`
		PayloadsOK  bool     `json:"payloads_ok"`
		Count       int      `json:"count"`
		PidOK       bool     `json:"pid_ok"`
	} `json:"listen"`
	Read struct {
		Session    []any  `json:"session"`
		NamedRows  int    `json:"named_rows"`
		WriteError string `json:"write_error"`
	} `json:"read"`
}

// TestPsycopg2OdooLike runs an Odoo-like psycopg2 session (REPEATABLE READ
// transactions, DISCARD ALL, a named cursor, COPY, LISTEN/NOTIFY while idle,
// a read-only replica pool) through the proxy with the SCRAM role.
func TestPsycopg2OdooLike(t *testing.T) {
	pgcluster.Require(t, cluster)
	needPsycopg2(t)
	p, tlsf := startTLSProxy(t)
	for _, c := range []struct {
		name, params string
		ssl          bool
	}{
		{"plaintext", "sslmode=disable", false},
		{"tls verify-full", "sslmode=verify-full&sslrootcert=" + tlsf.cert, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dsn := func(addr string) string {
				return fmt.Sprintf("postgresql://%s:%s@%s/postgres?connect_timeout=10&%s", pgcluster.ScramUser, pgcluster.ScramPassword, addr, c.params)
			}
			r := run(ctxT(t, 90*time.Second), pgEnv(p.WriteAddr(), "postgres", "postgres"), "", python3Bin, "testdata/odoo_like.py", dsn(p.WriteAddr()), dsn(p.ReadAddr()))
			var got odooResult
			if jerr := json.Unmarshal([]byte(lastLine(r.stdout)), &got); jerr != nil || r.err != nil {
				t.Fatalf("odoo_like.py failed (json: %v)\n%s", jerr, r)
			}
			t.Logf("psycopg2 %s: %s", got.Psycopg2, strings.TrimSpace(r.stdout))
			if got.SSLInUse != c.ssl {
				t.Errorf("ssl_in_use = %v, want %v", got.SSLInUse, c.ssl)
			}
			checkOdoo(t, got)
		})
	}
}

func checkOdoo(t *testing.T, got odooResult) {
	t.Helper()
	primary := float64(cluster.Primary().Port)
	replica := float64(cluster.Replicas()[0].Port)
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	if got.ServerVersion < 150000 {
		t.Errorf("server_version = %d", got.ServerVersion)
	}
	check("client_encoding", got.Params["client_encoding"], "UTF8")
	check("standard_conforming_strings", got.Params["standard_conforming_strings"], "on")
	if !strings.HasPrefix(got.Params["DateStyle"], "ISO") || !strings.HasPrefix(got.Params["server_version"], "15") {
		t.Errorf("ParameterStatus = %v", got.Params)
	}
	if !strings.HasPrefix(got.Params["application_name"], "odoo-") {
		t.Errorf("application_name = %q, want the odoo-<pid> the client sent", got.Params["application_name"])
	}
	check("write session (port, recovery, isolation)", got.WriteSession, []any{primary, false, "repeatable read"})
	check("repeatable read", got.RepeatableRead, struct {
		Before, During, After int
		Isolation             string
	}{1000, 1000, 1001, "repeatable read"})
	check("FOR NO KEY UPDATE SKIP LOCKED rows", got.SkipLocked, []int{1, 2})
	check("statement_timeout", got.StatementTimeout, "57014")
	check("division error", got.DivisionError, "22012")
	check("after rollback", got.AfterRollback, "usable")
	check("state before DISCARD ALL", got.DiscardAll.Before, []any{"7MB", float64(1), float64(1)})
	check("state after DISCARD ALL", got.DiscardAll.After, []any{"4MB", float64(0), float64(0)})
	check("named cursor", got.NamedCursor, struct{ Rows, Sum int }{1001, 1001 * 1002 / 2})
	check("copy out lines", got.Copy.OutLines, 1001)
	check("copy in rows", got.Copy.InRows, 1001)
	check("copy bad data", got.Copy.BadData, "22P02")
	check("copy after bad data", got.Copy.After, 1001)
	check("listen: nothing before pg_notify", got.Listen.QuietBefore, true)
	check("listen: notifications", got.Listen.Count, 3)
	check("listen: channels", got.Listen.Channels, []string{"imbus", "imbus", "imbus"})
	check("listen: payloads in order", got.Listen.PayloadsOK, true)
	check("listen: sender pid", got.Listen.PidOK, true)
	check("read session (port, recovery, read only, isolation)", got.Read.Session, []any{replica, true, "on", "repeatable read"})
	check("read named cursor rows", got.Read.NamedRows, 1001)
	check("read write error", got.Read.WriteError, "25006")

	var n int
	primaryScalar(t, "SELECT count(*) FROM odoo_copy", &n)
	check("odoo_copy rows on the primary", n, 1001)
}
