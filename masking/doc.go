// Package masking is column masking for sessions published to third parties
// (masking.rules): which sessions are masked (the first rule whose globs
// match user, database and application_name), which result columns are
// masked (RowDescription's table OID and attribute number, resolved through
// the backend's catalog to schema.table.column), how a value is rewritten
// (hash, redact, partial, null; text and binary formats) and which
// statements are refused (42501) because a masked column would leave the
// server inside something the proxy cannot rewrite: an expression, a
// predicate, a sort, a subquery, a whole-row value, COPY TO, a function that
// may read the table itself.
//
// The package does no I/O of its own except through Catalog; SideCatalog is
// the one the proxy uses: a small connection of its own to the session's
// backend and database, cached per backend and database.
//
// Everything here is immutable once built (Policy, Set) or safe for
// concurrent use (SideCatalog, Catalogs), except Columns, which belongs to
// one result set of one session.
package masking
