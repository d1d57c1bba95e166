// Package metabase provisions Metabase idempotently from a desired state: the
// database (pointed at pgproxy's read listener), one collection tree owned by
// the job, native cards and dashboards.
//
// The flow, driven by [Provision]:
//
//	GET  /api/health               wait (503 while initializing) with backoff up to a deadline
//	GET  /api/session/properties   version (≥ 0.48 supported), setup token, has-user-setup
//	POST /api/setup                first run only: the admin user (never the database)
//	POST /api/session              login (X-Metabase-Session), or X-API-Key (0.49+)
//	GET  ...                       read the current state of what the job owns
//	                               → a [Plan]: create / update / unchanged / archive per object
//	POST/PUT ...                   apply (skipped with DryRun)
//
// Metabase names are not unique, so the job owns uniqueness: the database is
// found by name + host + dbname, everything else by name inside the job's own
// collection tree. Anything in that tree the desired state does not name is
// archived. Running the job twice reports "0 created, 0 updated" the second
// time.
//
// The Metabase REST calls it makes are listed above and in docs/metabase.md;
// test/fakemetabase is a fake server that keeps the same shapes.
package metabase
