// Package router decides where a session goes: which route (write or read)
// from its startup parameters, and which backend from the latest health
// snapshot. It does no I/O; its decisions are pure functions of the
// configuration, the snapshot and the session counts.
//
// # Route (Classify)
//
// In order: the listener's route; the first matching rule (user, database,
// application_name globs; strip_suffix); default_transaction_read_only=on as
// a startup parameter or inside options (-c / --) → read; else write. The
// route is fixed at startup, never decided from a statement. pgproxy.*
// settings (pgproxy.max_lag, pgproxy.job) are consumed, from options or as
// startup parameters, and not forwarded; the rest of options is kept byte for
// byte.
//
// # Backend (Router.Pick)
//
// Write → the current primary. Read → the least-lagged replica that is up
// and within the limits (config and the session's tighter pgproxy.max_lag);
// ties → fewest sessions → round-robin. Hysteresis (a replica removed for lag
// returns only below half the limit) lives in package health, which owns the
// history. No replica fits → the primary, read-only (fallback "primary"), or
// 57P03 listing every replica and why it was unfit (fallback "reject").
// Pick takes an exclude list so the proxy can move on to the next candidate
// after a connect failure, invisibly to the client.
//
// Pick counts pgproxy_routing_decisions_total{route,backend,reason} and
// pgproxy_fallbacks_total{reason}.
package router
