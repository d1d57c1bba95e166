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
// Top to bottom (server.go, then session.go unless named):
//
//  1. Accept. Server.Serve runs one goroutine per connection (session.run),
//     refused with 53300 beyond Config.MaxSessions.
//  2. Startup, under limits.startup_timeout (startup): SSLRequest,
//     GSSENCRequest or direct TLS, then the StartupMessage, each read
//     straight off the socket (internal/pgwire). A CancelRequest is looked
//     up in the cancel map and forwarded (cancel.go, handleCancel); database
//     "pgproxy" opens the admin console instead (admin.go).
//  3. Direct and connect (connect, dialBackend): the Director picks a
//     Target; the session dials it, with TLS per backend_tls, and sends the
//     StartupMessage. A failed connect, or a refusal before authentication
//     starts (57P03, 53300), tries the next candidate with the failed one
//     excluded: the client sees nothing.
//  4. Authentication (relayAuth): relayed between client and backend up to
//     the first ReadyForQuery, recording BackendKeyData (for cancels) and
//     ParameterStatus. Errors before the relay reach the client once, with
//     their SQLSTATE (failStartup).
//  5. Relay (relay.go) until either side ends: each direction is a pump
//     that frames messages without decoding payloads and writes what one
//     read brought with one write. The few messages it looks at go to the
//     session's policies through one small interface (policy.go): the
//     tracker (ReadyForQuery status, ParameterStatus, Terminate), lineage
//     (policy_lineage.go) and, on a read session that fell back to the
//     primary, the read-only guard (policy_readonly.go). Plain TCP sessions
//     on Linux are relayed by an event loop (evloop_linux.go); the rest
//     (TLS, guarded read-only sessions, runtime.event_loops -1, other
//     systems) by a goroutine per direction (relay_goroutines.go).
//  6. End: whichever side ends closes both; a server that goes away on its
//     own leaves the client a FATAL 08006 rather than a bare EOF
//     (pump.end). The session logs its end reason once and releases its
//     Target.
//
// Pooled sessions (Config.Auth set: auth.mode proxy; pooled.go) differ at
// steps 3 to 6. The proxy authenticates the client itself (SCRAM-SHA-256,
// with -PLUS bound to the proxy's certificate for a TLS client, or md5
// against the secret Auth.Lookup finds; an unknown user fails like a wrong
// password, against a fake secret from Auth.MockKey), asks the Director for a Target, gets a logged-in
// server from package pool (dialed with the credential the client's proof
// gave: no plaintext), applies the client's settings to it and sends its
// own welcome and BackendKeyData. The relay (pooled_relay.go) is a
// goroutine per direction: in session mode the server is the session's
// until it leaves (then rolled back, reset with pool.reset_query and given
// back); in transaction mode it goes back at each ReadyForQuery 'I' that
// answers everything sent, and the next message gets one again, with
// settings replayed, named statements renamed and re-prepared and the
// client's unnamed one re-parsed (pooled_unnamed.go); session
// state that cannot move pins the client. A transaction-mode client idle
// between transactions for a while is parked (park_linux.go): its
// goroutine ends and one parker goroutine watches its socket, resuming it
// on a new goroutine when it sends again or must end. Cancels map the
// proxy's key to the server running the client's query.
//
// Server.Shutdown closes the listeners, waits for sessions (parked ones
// too) until its context is done, ends the rest (57P01) and waits for
// every goroutine.
//
// Memory is bounded per session: the goroutine relay reads into a 4 KiB
// buffer per direction (a pooled 64 KiB one while data streams), a loop
// into one buffer its sessions share; what the client sends is checked
// against PostgreSQL's own message size limits, and what a policy holds or
// copies is capped (relay.go).
// Edge cases (message order across sessions, a server that resets during
// a write, backpressure) are described next to the code that handles them.
package proxy
