package masking_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/ofitec/pgproxy/test/pgtest"
)

// rawAnswers is what a raw client read up to a message of type until
// (a ReadyForQuery, a RowDescription).
type rawAnswers struct {
	descs int        // RowDescriptions
	rows  [][][]byte // DataRows' values
	err   error      // the first ErrorResponse
}

func rawRead(ctx context.Context, t *testing.T, pc *pgconn.PgConn, until func(pgproto3.BackendMessage) bool) rawAnswers {
	t.Helper()
	var a rawAnswers
	for {
		m, err := pc.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch m := m.(type) {
		case *pgproto3.RowDescription:
			a.descs++
		case *pgproto3.DataRow:
			row := make([][]byte, len(m.Values))
			for i, v := range m.Values {
				row[i] = append([]byte(nil), v...)
			}
			a.rows = append(a.rows, row)
		case *pgproto3.ErrorResponse:
			if a.err == nil {
				a.err = pgconn.ErrorResponseToPgError(m)
			}
		}
		if until(m) {
			return a
		}
	}
}

func isRFQ(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.ReadyForQuery); return ok }

func rawSend(t *testing.T, pc *pgconn.PgConn, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	fe := pc.Frontend()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestDescribeBeforeExecute: an Execute right after the client's own
// Describe of the unnamed portal (libpq's PQexecPrepared) gets no Describe
// of the proxy's own (the server's answer to the client's tells the
// columns), and any Execute after something else does: a Bind of another
// statement between the Describe and the Execute (the portal's columns
// change), a Flush, a RELOAD put in force at the Execute (the columns
// are resolved under the new rules). In each case every masked value is masked and the
// client gets the RowDescriptions it asked for, no other.
func TestDescribeBeforeExecute(t *testing.T) {
	setup(t)
	eachMode(t, func(t *testing.T, mode string) {
		{
			p := startMasked(t, mode)
			conn, rec := connectRecorded(t, p)
			ctx := pgtest.Ctx(t, 30*time.Second)
			pc := conn.PgConn()
			rawSend(t, pc,
				&pgproto3.Parse{Name: "plain", Query: "SELECT name, id::text FROM res_partner ORDER BY id"},
				&pgproto3.Parse{Name: "secret", Query: "SELECT email, vat FROM res_partner ORDER BY id"},
				&pgproto3.Sync{})
			if a := rawRead(ctx, t, pc, isRFQ); a.err != nil {
				t.Fatalf("parse: %v", a.err)
			}
			check := func(what string, a rawAnswers, descs int) {
				t.Helper()
				if a.err != nil {
					t.Fatalf("%s: %v", what, a.err)
				}
				if len(a.rows) != 3 || a.descs != descs {
					t.Fatalf("%s: %d rows and %d RowDescriptions, want 3 and %d", what, len(a.rows), a.descs, descs)
				}
				if v := leaked(rec.bytes()); v != "" {
					t.Fatalf("%s: the clear value %q reached the client", what, v)
				}
				for _, r := range a.rows {
					if string(r[0]) == emails[0] || string(r[1]) == vats[0] {
						t.Fatalf("%s: a clear row %q", what, r)
					}
				}
			}

			// libpq's shape, twice (the second with every cache warm).
			for i := 0; i < 2; i++ {
				rawSend(t, pc, &pgproto3.Bind{PreparedStatement: "secret"}, &pgproto3.Describe{ObjectType: 'P'},
					&pgproto3.Execute{}, &pgproto3.Sync{})
				check("Bind, Describe, Execute", rawRead(ctx, t, pc, isRFQ), 1)
			}
			// A refusal in the same batch is placed after the Execute's
			// answers (the guard counts no Describe the proxy did not send).
			rawSend(t, pc, &pgproto3.Bind{PreparedStatement: "secret"}, &pgproto3.Describe{ObjectType: 'P'},
				&pgproto3.Execute{}, &pgproto3.Parse{Name: "refused", Query: "SELECT lower(email) FROM res_partner"}, &pgproto3.Sync{})
			var order []string
			a := rawRead(ctx, t, pc, func(m pgproto3.BackendMessage) bool {
				switch m.(type) {
				case *pgproto3.CommandComplete:
					order = append(order, "C")
				case *pgproto3.ErrorResponse:
					order = append(order, "E")
				}
				return isRFQ(m)
			})
			var pe *pgconn.PgError
			if !errors.As(a.err, &pe) || pe.Code != "42501" || len(a.rows) != 3 || a.descs != 1 || strings.Join(order, " ") != "C E" {
				t.Fatalf("Describe, Execute, refused Parse: %d rows, %d RowDescriptions, %q, error %v; want 3, 1, the rows' CommandComplete then 42501", len(a.rows), a.descs, order, a.err)
			}
			if v := leaked(rec.bytes()); v != "" {
				t.Fatalf("the clear value %q reached the client", v)
			}

			// A Flush between: the proxy describes the portal again.
			rawSend(t, pc, &pgproto3.Bind{PreparedStatement: "secret"}, &pgproto3.Describe{ObjectType: 'P'},
				&pgproto3.Flush{}, &pgproto3.Execute{}, &pgproto3.Sync{})
			check("Describe, Flush, Execute", rawRead(ctx, t, pc, isRFQ), 1)

			// The unnamed portal described is of a statement with nothing
			// masked; the one executed, bound after, is not.
			rawSend(t, pc, &pgproto3.Bind{PreparedStatement: "plain"}, &pgproto3.Describe{ObjectType: 'P'},
				&pgproto3.Bind{PreparedStatement: "secret"}, &pgproto3.Execute{}, &pgproto3.Sync{})
			check("Describe, Bind of another statement, Execute", rawRead(ctx, t, pc, isRFQ), 1)

			// A RELOAD between the Describe (answered: nothing owed, no
			// transaction) and the Execute: the rows come under the new
			// rules, which mask vat. (The Flush that has the Describe
			// answered forgets it already; a RELOAD put in force forgets
			// it too: each alone keeps vat masked here.)
			reloadMasking(t, p, "bi_*", map[string]string{"public.res_partner.email": "hash"})
			rawSend(t, pc, &pgproto3.Query{String: "SELECT 1"})
			if a := rawRead(ctx, t, pc, isRFQ); a.err != nil {
				t.Fatalf("a query under the email-only rule: %v", a.err)
			}
			vatOnly := &pgproto3.Parse{Name: "vat", Query: "SELECT vat, id::text FROM res_partner ORDER BY id"}
			rawSend(t, pc, vatOnly, &pgproto3.Sync{})
			if a := rawRead(ctx, t, pc, isRFQ); a.err != nil {
				t.Fatalf("parse: %v", a.err)
			}
			rawSend(t, pc, &pgproto3.Bind{PreparedStatement: "vat"}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Flush{})
			a = rawRead(ctx, t, pc, func(m pgproto3.BackendMessage) bool { _, ok := m.(*pgproto3.RowDescription); return ok })
			if a.err != nil {
				t.Fatal(a.err)
			}
			reloadMasking(t, p, "bi_*", map[string]string{"public.res_partner.email": "hash", "public.res_partner.vat": "partial"})
			rawSend(t, pc, &pgproto3.Execute{}, &pgproto3.Sync{})
			a = rawRead(ctx, t, pc, isRFQ)
			if a.err != nil {
				if errors.As(a.err, &pe) {
					t.Fatalf("execute after the reload: %s %s", pe.Code, pe.Message)
				}
				t.Fatal(a.err)
			}
			if len(a.rows) != 3 || a.descs != 0 {
				t.Fatalf("execute after the reload: %d rows and %d RowDescriptions, want 3 and 0", len(a.rows), a.descs)
			}
			for _, r := range a.rows {
				for _, v := range vats {
					if string(r[0]) == v {
						t.Fatalf("a clear vat %q after the reload that masks vat", v)
					}
				}
			}
		}
	})
}
