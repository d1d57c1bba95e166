// Package health watches every backend of the cluster and publishes immutable
// snapshots of their roles, states and replication lag for the router.
//
// # Probes
//
// A [Monitor] keeps one persistent monitoring connection per backend (pgx,
// simple protocol, application_name "pgproxy-health") and probes it every
// Config.Interval. A probe (including a reconnect when the connection broke)
// never takes longer than Config.Timeout. A broken connection is re-dialled
// once inside the probe; after that, connection attempts back off
// exponentially from Interval up to max(Interval, 2s) while the backend stays
// down. One probe is one query:
//
//	pg_is_in_recovery()
//	primary: pg_current_wal_lsn(), timeline of the current WAL insert position
//	replica: pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(),
//	         pg_get_wal_replay_pause_state(), pg_stat_wal_receiver.status
//
// Roles are discovered, never taken from the configuration.
//
// # Lag
//
// Lag bytes = newest primary LSN − replica replay LSN (never negative).
//
// Lag seconds are measured on the proxy's own clock. The monitor keeps a short
// history of primary samples (local time, LSN). A replica that has replayed
// LSN L holds everything the primary had at the latest sample whose LSN ≤ L,
// so its staleness is (time of the replica probe − time of that sample); if L
// ≥ the newest primary LSN the staleness is 0. Runs of samples with the same
// LSN (an idle primary) are stored once, with the first and the last time the
// LSN was seen, so the history stays small and an idle primary never makes a
// caught-up replica look stale, while a replica stuck behind an idle primary
// still ages from the moment the primary moved past it. The history covers
// max(60s, 4×MaxLag) (at most 4096 runs); a replica older than that is
// reported with a lower bound of its staleness, which is above MaxLag anyway.
// Server clocks are never compared, and neither now()−pg_last_xact_replay_timestamp()
// (it grows on an idle primary) nor pg_stat_replication.replay_lag (it stays
// small while replay is paused) is used.
//
// While no primary is up, a replica's lag cannot be measured: the last known
// values are kept (they do not grow), LagKnown is false and the replica's
// up/lagging state is frozen. A replica that has never been measured is up
// with LagKnown false. The primary history starts afresh whenever the primary
// changes (another backend, or a new timeline).
//
// # States
//
//	up       reachable; a primary, or a replica within the lag limits
//	lagging  a replica whose lag went above MaxLag (or MaxLagBytes when > 0);
//	         it returns to up only once below half of every limit (hysteresis)
//	down     the last probe failed (role keeps its last known value)
//	fenced   reports not-in-recovery but is not the primary: a lower timeline
//	         than the highest primary timeline seen (e.g. an old primary
//	         restarted after a failover), or a second primary on the same
//	         timeline (the incumbent, else the first in configuration order,
//	         keeps the role). Fencing is logged at error level and lasts while
//	         the backend reports not-in-recovery on a lower timeline, even if
//	         the new primary goes down.
//
// Every change of a backend's state or role is logged once at info level
// (fencing at error level). Snapshots are immutable and published with an
// atomic pointer: readers never lock.
//
// # Metrics
//
// A custom collector reads the latest snapshot on every scrape (no stale
// series after a backend is removed): pgproxy_backend_up{backend},
// pgproxy_backend_role{backend,role}, pgproxy_backend_state{backend,state},
// pgproxy_replica_lag_seconds{backend}, pgproxy_replica_lag_bytes{backend},
// pgproxy_health_probes_total{backend,result}.
package health
