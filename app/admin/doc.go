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
//	SHOW POOLS             database, user, backend, mode, cl_active, cl_waiting, sv_active,
//	                       sv_idle, maxwait_ms, sv_opening, read_only: one row per server pool
//	SHOW CLIENTS           id, user, database, application_name, client, backend, mode, state
//	                       (startup, waiting, active, idle), tx_state, server_pid, wait_ms,
//	                       pinned, started: one row per pooled client session
//	SHOW SERVERS           backend, database, user, read_only, pid, state (active, idle),
//	                       client_id, connected, idle_since: one row per pooled server connection
//	SHOW HELP              the commands
//	SHOW VERSION           version, commit, Go version
//	RELOAD                 re-read the config file and apply it (as SIGHUP does)
//	PAUSE <backend>        no new sessions on the backend; open ones finish
//	RESUME <backend>       undo PAUSE
//	KILL <database>        end every client session of the database (57P01), wait for them
//	                       (5 s at most), then close the database's idle pooled servers
//	RECONNECT <backend>    close the backend's pooled servers: idle ones now, lent ones when
//	                       released (new ones are dialed as needed)
//	SET ...                accepted and ignored (drivers send SET at connect)
//
// A backend is named by its configured host:port, bare or quoted
// ('127.0.0.1:5433' or "127.0.0.1:5433"); a database by its exact name.
//
// Pooling off (auth.mode: passthrough): there are no pools, so SHOW POOLS,
// SHOW CLIENTS and SHOW SERVERS answer with their columns and no rows
// (monitoring that polls them keeps working; SHOW SESSIONS lists the
// sessions in either mode), RECONNECT is refused with 0A000 (every server
// connection belongs to its client), and KILL ends sessions all the same.
//
// Errors are *pgerr.Error with severity ERROR (the session stays open):
// 42601 for a command the console does not know or a malformed one, 42704
// for an unknown backend, 3D000 for a KILL that finds no session nor
// pooled server of the database, F0000 when RELOAD fails, 0A000 for a
// command the running proxy does not wire (a nil function in Deps), for
// RECONNECT without pooling and for KILL pgproxy, 54000 for an oversized
// query.
//
// Values are text; a nil *string is SQL NULL. Booleans are "t"/"f" and
// timestamps "2006-01-02 15:04:05.000Z07:00", as PostgreSQL prints them.
//
// Concurrency: a Console has no mutable state of its own; Exec is safe for
// concurrent use as long as the functions in Deps are.
package admin
