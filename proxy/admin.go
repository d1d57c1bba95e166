package proxy

import (
	"bufio"
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// AdminDatabase is the database name that opens the admin console.
const AdminDatabase = "pgproxy"

// AdminConsole answers admin commands (SHOW BACKENDS, RELOAD, ...).
// Implementations must be safe for concurrent use.
type AdminConsole interface {
	// Exec runs the commands of one query. Results of the commands that ran
	// before an error are returned with it. Errors implementing pgerr.Coded
	// reach the client as an ERROR with their SQLSTATE; the session stays
	// open. No results and no error means an empty query.
	Exec(ctx context.Context, query string) ([]AdminResult, error)
}

// AdminResult is one result set; every value is text, nil is NULL.
type AdminResult struct {
	Columns []string
	Rows    [][]*string
	Tag     string
}

// serveAdmin authenticates the client against the primary like any
// session (so the backend's pg_hba and passwords decide), drops the backend
// connection, and then answers simple-protocol queries itself.
// adminWelcome is what the console reports of itself after a proxy-side
// login (psql reads server_version).
var adminWelcome = [][2]string{
	{"server_version", "15.0 (pgproxy admin console)"}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
	{"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"},
}

// adminLogin authenticates an admin against the proxy's own users and
// sends the console's welcome.
func (s *session) adminLogin(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if _, err := s.authenticateClient(ctx); err != nil {
		return err
	}
	var out []byte
	for _, kv := range adminWelcome {
		out = pgwire.AppendMessage(out, 'S', append(append(append([]byte(kv[0]), 0), kv[1]...), 0))
	}
	out = pgwire.AppendMessage(out, 'Z', []byte{'I'})
	_, err := s.clientIO().Write(out)
	return err
}

func (s *session) serveAdmin(sp *pgwire.StartupPacket, deadline time.Time) error {
	if !slices.Contains(s.cfg.AdminUsers, s.user) {
		return pgerr.New(pgerr.InvalidAuthorization, "user %q is not allowed to use the pgproxy admin console", s.user)
	}
	if s.cfg.Admin == nil {
		return pgerr.New(pgerr.InvalidCatalogName, "the pgproxy admin console is not available")
	}
	// Authenticate at the primary, on its maintenance database.
	params := make([]Param, 0, len(sp.Params))
	for _, kv := range sp.Params {
		if kv.Key == "database" {
			kv.Value = "postgres"
		}
		if kv.Key == "options" || kv.Key == "replication" {
			continue
		}
		params = append(params, kv)
	}
	sp.Params = params
	s.adminAuth = true
	if s.cfg.Auth != nil {
		// auth.mode proxy: the proxy authenticates the admin itself
		// (auth.file needs no backend), so the console stays reachable with
		// every backend down.
		if err := s.adminLogin(deadline); err != nil {
			return err
		}
	} else {
		if err := s.connect(sp, deadline); err != nil {
			return err
		}
		s.server.Close() // authenticated: the console needs no backend
	}
	_ = s.client.SetDeadline(time.Time{})
	s.mu.Lock()
	s.route = "admin"
	s.mu.Unlock()
	s.logger().Info("admin console session", zap.String("user", s.user))

	br := bufio.NewReaderSize(s.clientIO(), 4096)
	out := make([]byte, 0, 4096)
	flush := func() error {
		_, err := s.clientIO().Write(out)
		out = out[:0]
		return err
	}
	ctx := context.Background()
	skipToSync := false
	for {
		typ, body, err := pgwire.ReadMessage(br, largeMessageLimit)
		if err != nil {
			return nil // client went away
		}
		switch typ {
		case 'X':
			return nil
		case 'Q':
			query := pgwire.CString(body)
			var results []AdminResult
			var err error
			if !isBlank(query) {
				results, err = s.cfg.Admin.Exec(ctx, query)
			}
			// Results of the commands before a failing one are sent first.
			for _, r := range results {
				out = appendResult(out, r)
			}
			switch {
			case err != nil:
				out = appendAdminError(out, err)
			case len(results) == 0: // blank or comment-only query
				out = append(out, 'I', 0, 0, 0, 4)
			}
			out = append(out, 'Z', 0, 0, 0, 5, 'I')
			if err := flush(); err != nil {
				return nil
			}
		case 'S':
			skipToSync = false
			out = append(out, 'Z', 0, 0, 0, 5, 'I')
			if err := flush(); err != nil {
				return nil
			}
		case 'H':
			if err := flush(); err != nil {
				return nil
			}
		default:
			if !skipToSync {
				out = appendAdminError(out, &pgerr.Error{Code: pgerr.FeatureNotSupported, Severity: "ERROR",
					Message: "the pgproxy admin console supports only the simple query protocol"})
				skipToSync = true
			}
		}
	}
}

func isBlank(q string) bool {
	for _, c := range q {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != ';' {
			return false
		}
	}
	return true
}

func appendAdminError(out []byte, err error) []byte {
	resp := pgerr.Response(err, pgerr.InternalError, "admin command failed: "+err.Error())
	if resp.Severity == "FATAL" {
		resp.Severity, resp.SeverityUnlocalized = "ERROR", "ERROR"
	}
	b, encErr := resp.Encode(out)
	if encErr != nil {
		return out
	}
	return b
}

func appendResult(out []byte, r AdminResult) []byte {
	if len(r.Columns) > 0 {
		rd := pgproto3.RowDescription{}
		for _, c := range r.Columns {
			rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
		}
		out, _ = rd.Encode(out)
		for _, row := range r.Rows {
			dr := pgproto3.DataRow{Values: make([][]byte, len(row))}
			for i, v := range row {
				if v != nil {
					dr.Values[i] = []byte(*v)
				}
			}
			out, _ = dr.Encode(out)
		}
	}
	tag := r.Tag
	if tag == "" {
		tag = "SHOW"
	}
	cc := pgproto3.CommandComplete{CommandTag: []byte(tag)}
	out, _ = cc.Encode(out)
	return out
}
