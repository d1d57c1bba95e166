// Package pgauth is proxy-side authentication (auth.mode: proxy): what
// pgproxy knows of each user's password, how it checks a client against
// that, and how it then logs in to backends on the client's behalf so
// server connections can be pooled.
//
// # Pieces
//
//   - Secret (secret.go): one user's secret as PostgreSQL stores it, a
//     SCRAM-SHA-256 verifier ("SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>")
//     or an md5 hash ("md5" + 32 hex), or, when a user insists, a
//     plaintext. ParseSecret decodes one; String never shows key material.
//     FakeSecret makes a deterministic verifier for a user that does not
//     exist, so an unknown user runs the same exchange and fails the same
//     way as a wrong password (no user enumeration).
//   - Userlist (userlist.go): PgBouncer's auth_file format. Errors name
//     file:line and the problem, never the secret.
//   - SCRAMServer (scram_server.go): the server side of SCRAM-SHA-256 for
//     one client (RFC 5802, RFC 7677, PostgreSQL's dialect: the user name
//     comes from the startup packet, no channel binding is offered). It
//     does no I/O: the caller reads SASLInitialResponse/SASLResponse
//     bodies and writes the bodies it returns. On success it recovers the
//     client's ClientKey from its proof (ClientKey = ClientProof XOR
//     HMAC(StoredKey, AuthMessage)).
//   - VerifyMD5 (md5.go): the server side of md5 authentication.
//   - Credential (credential.go): what the proxy logs in to backends with
//     for one user, and Login (login.go), the frontend side of
//     authentication with a backend on a connection whose StartupMessage
//     the caller wrote. With a SCRAM verifier and a recovered ClientKey it
//     needs no plaintext (what PgBouncer does since 1.14): ClientProof =
//     ClientKey XOR HMAC(StoredKey, AuthMessage), and the backend is
//     verified with ServerSignature = HMAC(ServerKey, AuthMessage). This
//     only works when the backend's verifier is the one the proxy holds
//     (same salt and iterations); Login says so when it is not.
//   - QuerySource (query.go): auth_query, secrets looked up on the primary
//     through a small pool of the package's own connections, cached for a
//     TTL.
//
// # Concurrency
//
// A SCRAMServer is single-use and not safe for concurrent use: one client's
// exchange, driven by one goroutine. Login is one call on one connection.
// Secret, Userlist and Credential are values: a Userlist is read-only once
// parsed and may be shared; a Credential belongs to whoever holds it, and
// Zero wipes its key material (its byte slices are its own copies, never
// shared with the Userlist or the cache). QuerySource is safe for concurrent
// use; concurrent lookups of one user share one query. The package starts no
// goroutines.
//
// # Where the plaintext goes
//
// Nowhere, unless auth.file holds one. A client's password never reaches
// pgproxy with SCRAM: only a proof does, from which the ClientKey (not the
// password) is recovered and kept in the session's Credential for backend
// logins. With md5 the client sends a salted hash. A plaintext from
// auth.file is used to derive a SCRAM verifier for clients (per-process
// deterministic salt, see Secret) and is sent to a backend only as
// SCRAM-SHA-256, md5, or cleartext when the backend asks for it. No error
// and no String method of this package includes a password, a secret or a
// key; the auth_query password appears in no error.
//
// Passwords are used as UTF-8 bytes without SASLprep normalisation, which is
// what PostgreSQL itself does for passwords that SASLprep leaves unchanged
// (every ASCII password); a non-ASCII plaintext that SASLprep would change
// must be stored as a SCRAM verifier instead (which involves no password).
package pgauth
