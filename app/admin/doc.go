// Package admin is pgproxy's admin console, in PgBouncer's habit: a client
// that connects to the database "pgproxy" on any listener, as one of the
// users in admin.users, is authenticated against the primary like any
// session and then talks to the proxy itself. Package proxy does the wire
// protocol (it reads Query messages and writes RowDescription, DataRow and
// CommandComplete); this package parses the command text and builds the
// result sets.
//
// Commands (case-insensitive, whitespace tolerant, optional trailing ';';
// several may be sent in one Query separated by ';'):
//
//	SHOW BACKENDS          addr, role, state, lag_seconds, lag_bytes, sessions, paused, last_error
//	SHOW SESSIONS          id, user, database, application_name, client, listener, route,
//	                       backend, read_only, state, started
//	SHOW ROUTES            how a session's route is decided: listeners, rules, startup
//	                       parameters, the default, then the fallback policy and lag limits
//	SHOW CONFIG            key, value of the effective configuration, secrets redacted
//	SHOW HELP              the commands
//	SHOW VERSION           version, commit, Go version
//	RELOAD                 re-read the config file and apply it (as SIGHUP does)
//	PAUSE <backend>        no new sessions on the backend; open ones finish
//	RESUME <backend>       undo PAUSE
//	SET ...                accepted and ignored (drivers send SET at connect)
//
// A backend is named by its configured host:port, bare or quoted
// ('127.0.0.1:5433' or "127.0.0.1:5433").
//
// Errors are *pgerr.Error with severity ERROR (the session stays open):
// 42601 for a command the console does not know or a malformed one, 42704
// for an unknown backend, F0000 when RELOAD fails, 0A000 for a command the
// running proxy does not wire (a nil function in Deps), 54000 for an
// oversized query.
//
// Values are text; a nil *string is SQL NULL. Booleans are "t"/"f" and
// timestamps "2006-01-02 15:04:05.000Z07:00", as PostgreSQL prints them.
//
// Concurrency: a Console has no mutable state of its own; Exec is safe for
// concurrent use as long as the functions in Deps are.
package admin
