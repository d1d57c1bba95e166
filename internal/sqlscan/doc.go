// Package sqlscan is the project's one wrapper over pg_query (PostgreSQL's own
// parser, github.com/pganalyze/pg_query_go/v6): the tables a SQL string reads
// and writes (for lineage), its normalized form (literals replaced by
// placeholders), and whether it would turn a read-only session writable (for
// the read-only guard).
//
// Parsing costs tens of microseconds and allocates: callers on the relay path
// must run a cheap check first and call into this package only when they need
// the answer (lineage parses on its worker goroutine, never on the relay).
//
// All functions are safe for concurrent use.
package sqlscan
