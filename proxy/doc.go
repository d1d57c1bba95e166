// Package proxy is pgproxy's PostgreSQL wire-protocol layer: listeners,
// the session lifecycle, startup/TLS/authentication, the relay and the
// cancel map. It decides nothing about routing: a Director (package router,
// through package app) says where each session goes.
//
// # One session
//
//	client                      pgproxy                         backend
//	  |-- SSLRequest ------------->|  'S' + TLS handshake, or 'N'
//	  |-- GSSENCRequest ---------->|  'N'
//	  |-- StartupMessage 3.x ----->|  NegotiateProtocolVersion once if 3.x>3.0 or _pq_.*
//	  |                            |-- Director.Direct(listener, params) -> Target
//	  |                            |-- TCP (+TLS per backend_tls), StartupMessage -->|
//	  |<-- AuthenticationSASL -----|<-- only SCRAM-SHA-256 offered (no -PLUS) --------|
//	  |-- SASLInitialResponse ... ------------------------------------------------->|
//	  |<-- AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery --------|
//	  |<========================== relay (both directions) =======================>|
//	  |-- Terminate / EOF -------->|-- close both ------------------------------------>|
//
// Startup runs under limits.startup_timeout; the first packet is read straight
// off the socket with PostgreSQL's 10 000-byte cap, so nothing is buffered
// before a TLS handshake (CVE-2021-23214 class). A second SSLRequest is a
// protocol violation. A CancelRequest (plain or after SSLRequest) is looked
// up in the cancel map (BackendKeyData → backend) and forwarded; an unknown
// key goes to every backend (another pgproxy instance may own it; servers
// ignore keys that are not theirs). Keys are never logged.
//
// Pass-through SCRAM has one limit: a client that speaks TLS to the proxy
// and supports channel binding sends the GS2 flag "y" (it saw no -PLUS
// mechanism); a backend that itself runs the session over TLS rejects that
// flag ("SCRAM channel binding negotiation error"). With backend_tls other
// than disable, such clients need channel_binding=disable; proxy-side
// authentication (a later milestone) removes the limit.
//
// If the TCP connect to the chosen backend fails, or it refuses before
// authentication starts (57P03, 53300), the next candidate is tried with the
// failed one excluded: the client sees nothing.
//
// # Relay
//
// Each direction is a pump (relay.go): read (up to 64 KiB), parse message
// framing (type + length) without decoding payloads, write everything one
// read brought with one write. So pipelines, COPY and huge DataRows stream with bounded memory and
// no allocation per message. Client messages are checked against
// PostgreSQL's own size limits before anything is buffered. What the relay
// does with the few messages it looks at is up to the session's policies,
// which it calls through one small interface (policy.go: pass, inspect or
// hold each message): the tracker (ReadyForQuery status, ParameterStatus,
// Terminate), lineage (policy_lineage.go: Query/Parse/Bind/Execute and the
// server's ErrorResponse for tagged statements) and the read-only guard
// (policy_readonly.go). The startup and message codecs are
// internal/pgwire. Unprompted server
// messages (NotificationResponse, NoticeResponse, ParameterStatus) are
// forwarded as they come, whatever the client is doing.
//
// Who runs the pumps:
//
//   - Plain TCP on both sides (the usual case on Linux): an event loop
//     (evloop_linux.go), one per GOMAXPROCS thread by default
//     (Config.RelayLoops, runtime.event_loops), sessions spread over them
//     by id. The session hands its two sockets to the loop and waits; the
//     loop runs both pumps of every ready session in turn, one wake-up for
//     all of them, as PgBouncer's loop does. Its epoll set is itself
//     watched by Go's poller, so the loop goroutine parks and is preempted
//     like any other; the sockets in it are edge-triggered and the loop
//     keeps account of what each may still hold. Reads share the loop's
//     buffer; a socket that will not take a write keeps the rest (one
//     read's worth) and its source is not read until it drains. A server
//     that hangs up or resets meanwhile, or whose reset a write finds, is
//     read to its end once it is its turn, so what it sent before (the
//     rest of a result, its FATAL) reaches the client; a client that goes
//     away ends the session at the first write to it that fails, as in
//     the goroutine relay. A panic ends only the session being relayed.
//   - Otherwise (TLS on either side, enforced read-only sessions, whose
//     statements are parsed and would hold up a whole loop, event loops
//     off, other systems): a goroutine per direction (relay_goroutines.go). Server→client runs on its own goroutine,
//     client→server on the session's; whichever ends first closes both
//     sockets, and the session waits for both, except that a server whose
//     reset a write finds is first read to its end, as on a loop
//     (readServerToEnd, bounded by a 1 s read deadline). Each direction reads into a
//     4 KiB buffer, a pooled 64 KiB one while data streams.
//
// Each session's messages keep their order; two sessions' messages keep
// the order in which they reached pgproxy only on one loop, whose epoll
// reports its sockets in the order they became readable. Loops and relay
// goroutines are each woken by Go's netpoller, which hands the goroutines
// one poll found ready to the scheduler last-first, so two sessions'
// messages that reach pgproxy within one wake-up may reach their clients
// in either order (TestRelayOrderAcrossSessions). PostgreSQL does not order
// them either: a pg_terminate_backend result and its victim's FATAL come
// either way, directly too (TestTerminateDuringCopy).
//
// On plain TCP sockets with event loops off, the pumps use raw non-blocking system calls under
// syscall.RawConn (rawio.go) and park on Go's edge-triggered poller. A pump
// normally parks after a read returns EAGAIN; with TCP_INQ (Linux ≥ 4.18)
// it parks right after a read that emptied the socket when the turn has
// passed to the other side (relay_goroutines.go, parkEarly), saving a system call per
// message batch. The one thing that can then go unseen at once is an RST
// that arrives, together with a ReadyForQuery, while the client is owed
// nothing: the client learns at its next message (the write to the server
// fails and the session ends) instead of from a pushed 08006. PostgreSQL
// resets a connection only when it dies with client input unread: if that
// input asked for a reply, the reply is owed and the reset is seen at once;
// if not (a Parse awaiting its Sync), the client is waiting for nothing and
// its Sync fails. An idle client (LISTEN) hears of a server that dies with a
// FIN at once, as before.
//
// # Read-only sessions
//
// A read session that fell back to the primary (Target.ReadOnly) starts with
// default_transaction_read_only=on as a startup parameter, so RESET and
// DISCARD ALL return to on. Query, Parse and FunctionCall messages are held
// until complete and checked (Config.ReadOnlyCheck, pg_query based): a
// statement that would turn read-only off never reaches the server; pgproxy
// answers it with 25006 itself, where PostgreSQL would in the message stream
// (the server is sent a Sync or Flush that marks the place), and plays the
// failed transaction block that follows (policy_readonly.go). A
// ParameterStatus default_transaction_read_only=off ends the session with
// 25006 as a last line of defence.
//
// # Shutdown
//
// Server.Shutdown closes the listeners, waits for sessions up to its
// context's deadline, then ends the rest (the client gets 57P01 when the
// server→client stream is between messages) and waits for every goroutine.
//
// # Admin console
//
// Database "pgproxy" (admin.go): users in Config.AdminUsers authenticate at
// the primary like any session; then the backend connection is closed and
// AdminConsole answers simple-protocol queries.
package proxy
