package masking_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/test/pgtest"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// reloadMasking reloads p with one masking rule for user matching columns.
func reloadMasking(t *testing.T, p *proxytest.Proxy, user string, columns map[string]string) {
	t.Helper()
	next := *p.Config
	next.Masking.Rules = []configs.MaskingRule{{Match: configs.Match{User: user}, Columns: columns}}
	if _, err := p.App.Reload(&next); err != nil {
		t.Fatalf("reload: %v", err)
	}
}

func scanOne(ctx context.Context, conn *pgx.Conn, sql string) (string, error) {
	var v string
	err := conn.QueryRow(ctx, sql, pgx.QueryExecModeSimpleProtocol).Scan(&v)
	return v, err
}

// TestReloadAppliesToOpenSessions: a RELOAD's masking rules reach the
// sessions already open: a masked one at its next transaction boundary
// (and its statements prepared before are checked again), one no longer
// masked likewise, and one not masked that the new rules match is ended
// (its client reconnects, masked).
func TestReloadAppliesToOpenSessions(t *testing.T) {
	setup(t)
	for _, pool := range []string{"", "transaction"} {
		t.Run("pool="+pool, func(t *testing.T) {
			p := startMasked(t, pool)
			emailOnly := map[string]string{"public.res_partner.email": "hash"}
			emailVat := map[string]string{"public.res_partner.email": "hash", "public.res_partner.vat": "partial"}
			reloadMasking(t, p, "bi_*", emailOnly)
			ctx := pgtest.Ctx(t, 30*time.Second)

			a, _ := connectRecorded(t, p)
			if v, err := scanOne(ctx, a, "SELECT vat FROM res_partner WHERE id = 1"); err != nil || v != vats[0] {
				t.Fatalf("vat under email-only rule: %q %v", v, err)
			}
			if _, err := a.PgConn().Prepare(ctx, "byvat", "SELECT id FROM res_partner WHERE vat = $1", nil); err != nil {
				t.Fatalf("prepare byvat: %v", err)
			}
			byVat := func() error {
				rr := a.PgConn().ExecPrepared(ctx, "byvat", [][]byte{[]byte(vats[0])}, nil, nil).Read()
				if rr.Err == nil && len(rr.Rows) != 1 {
					return fmt.Errorf("%d rows", len(rr.Rows))
				}
				return rr.Err
			}
			if err := byVat(); err != nil {
				t.Fatalf("byvat before the reload: %v", err)
			}
			if _, err := a.Exec(ctx, "BEGIN", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}

			reloadMasking(t, p, "bi_*", emailVat)
			// Inside the transaction open at the reload: the rules it started with.
			if v, err := scanOne(ctx, a, "SELECT vat FROM res_partner WHERE id = 1"); err != nil || v != vats[0] {
				t.Errorf("vat inside the transaction open at the reload: %q %v (want the rules it started with)", v, err)
			}
			if _, err := a.Exec(ctx, "COMMIT", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			// From the next transaction: the new rules.
			want := "***" + vats[0][len(vats[0])-4:]
			if v, err := scanOne(ctx, a, "SELECT vat FROM res_partner WHERE id = 1"); err != nil || v != want {
				t.Errorf("vat after the reload: %q %v, want %q", v, err, want)
			}
			if _, err := scanOne(ctx, a, "SELECT email FROM res_partner WHERE vat = '"+vats[0]+"'"); !isRefusal(err) {
				t.Errorf("WHERE vat after the reload: %v, want 42501", err)
			}
			// The statement prepared before: checked again, refused.
			if err := byVat(); !isRefusal(err) {
				t.Errorf("byvat (prepared before the reload) after it: %v, want 42501", err)
			}
			if v, err := scanOne(ctx, a, "SELECT name FROM res_partner WHERE id = 1"); err != nil || v != names[0] {
				t.Errorf("the session goes on: %q %v", v, err)
			}

			// The rule no longer matches: the open session is no longer masked.
			reloadMasking(t, p, "nobody", emailVat)
			if v, err := scanOne(ctx, a, "SELECT email FROM res_partner WHERE id = 1"); err != nil || v != emails[0] {
				t.Errorf("email after the rule was removed: %q %v", v, err)
			}
			if err := byVat(); err != nil {
				t.Errorf("byvat after the rule was removed: %v", err)
			}

			// A session opened unmasked, then matched by a reload: ended.
			b, _ := connectRecorded(t, p)
			if v, err := scanOne(ctx, b, "SELECT email FROM res_partner WHERE id = 1"); err != nil || v != emails[0] {
				t.Fatalf("unmasked session: %q %v", v, err)
			}
			reloadMasking(t, p, "bi_*", emailVat)
			v, err := scanOne(ctx, b, "SELECT email FROM res_partner WHERE id = 1")
			if err == nil {
				t.Errorf("the session opened unmasked still runs after a reload that masks it: email %q", v)
			} else if v == emails[0] {
				t.Errorf("clear email %q", v)
			}
			c, rec := connectRecorded(t, p)
			if v, err := scanOne(ctx, c, "SELECT email FROM res_partner WHERE id = 1"); err != nil || !hexHash.MatchString(v) {
				t.Errorf("reconnected: email %q %v, want a hash", v, err)
			}
			if l := leaked(rec.bytes()); l != "" {
				t.Errorf("clear value %q reached the reconnected client", l)
			}
			if p.Logs.FilterMessage("session ended: masking.rules now mask it").Len() == 0 {
				t.Error("no log line for the session ended")
			}
		})
	}
}

func isRefusal(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42501"
}
