"""Odoo-style psycopg2 clients through one pgproxy DSN routed per
transaction (run by routed_test.go).

usage: odoo_routed.py PROXY_DSN REPLICA_POOL_DSN WORKERS ROUNDS
Each of WORKERS threads holds two connections through the same proxy:

- the main pool's (Odoo: never autocommit, REPEATABLE READ): per round a
  write transaction that updates the worker's row (RETURNING the new
  value), inserts a log row and reads both back inside the transaction;
  after COMMIT, on the same connection, a read-only transaction
  (set_session(readonly=True): BEGIN ISOLATION LEVEL REPEATABLE READ READ
  ONLY) and an autocommit SELECT, each of which must see that write
  (routing.consistency: session: the client's own writes);
- Odoo 18's replica pool (db_replica_host on the same proxy,
  REPLICA_POOL_DSN carries options=-c pgproxy.consistency=global): a
  REPEATABLE READ READ ONLY transaction that must see the main
  connection's last write too (another connection: global).

Every read also returns pg_is_in_recovery(), so the script counts the reads
that ran on a replica. After the first round all workers wait for each
other. Prints one JSON object; the Go test asserts.
"""
import json
import sys
import threading
import traceback

import psycopg2
import psycopg2.extensions as ext

proxy_dsn, replica_dsn = sys.argv[1], sys.argv[2]
workers, rounds = int(sys.argv[3]), int(sys.argv[4])
out = {"psycopg2": psycopg2.__version__, "workers": {}, "errors": []}
lock = threading.Lock()
together = threading.Barrier(workers, timeout=60)
READ = "SELECT v, (SELECT count(*) FROM odoo_rt_log WHERE client = %s), pg_is_in_recovery() FROM odoo_rt WHERE id = %s"


def error(what):
    with lock:
        out["errors"].append(what)


def worker(i):
    res = {"writes": 0, "reads": 0, "on_replica": 0, "stale": 0,
           "ro_txn": 0, "autocommit": 0, "replica_pool": 0, "write_on_primary": 0}
    main = ro = None

    def read(conn, kind, want_v, want_logs, r):
        cur = conn.cursor()
        cur.execute(READ, (i, i))
        v, logs, rec = cur.fetchone()
        if not conn.autocommit:
            conn.commit()
        res["reads"] += 1
        res[kind] += 1
        if rec:
            res["on_replica"] += 1
        if v < want_v or logs < want_logs:
            res["stale"] += 1
            error("worker %d round %d %s: v %d logs %d, wrote v %d logs %d (on replica: %s)" % (i, r, kind, v, logs, want_v, want_logs, rec))

    try:
        main = psycopg2.connect(proxy_dsn, application_name="odoo-w%d" % i)
        main.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ, readonly=False)
        ro = psycopg2.connect(replica_dsn, application_name="odoo-ro%d" % i)
        ro.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        cur = main.cursor()
        for r in range(rounds):
            # Odoo's main pool: BEGIN ISOLATION LEVEL REPEATABLE READ, write, read back.
            cur.execute("UPDATE odoo_rt SET v = v + 1 WHERE id = %s RETURNING v", (i,))
            v = cur.fetchone()[0]
            cur.execute("INSERT INTO odoo_rt_log (client, round, v) VALUES (%s, %s, %s)", (i, r, v))
            cur.execute(READ, (i, i))
            got, logs, rec = cur.fetchone()
            if got != v or logs != r + 1 or rec:
                error("worker %d round %d: in its write transaction v %d logs %d in recovery %s, want %d, %d, f" % (i, r, got, logs, rec, v, r + 1))
            else:
                res["write_on_primary"] += 1
            main.commit()
            res["writes"] += 1

            # The same connection, read-only transaction: a replica at or past its floor.
            main.set_session(readonly=True)
            read(main, "ro_txn", v, r + 1, r)
            main.set_session(readonly=False)
            # The same connection, autocommit SELECT.
            main.autocommit = True
            read(main, "autocommit", v, r + 1, r)
            main.autocommit = False
            # Odoo 18's replica pool: another connection, pgproxy.consistency=global.
            read(ro, "replica_pool", v, r + 1, r)
            if r == 0:
                together.wait()  # every worker connected and between transactions at once
    except Exception as e:
        error("worker %d: %s: %s" % (i, type(e).__name__, e))
        traceback.print_exc()
        together.abort()
    finally:
        for c in (main, ro):
            if c is not None:
                c.close()
    with lock:
        out["workers"][str(i)] = res


def main():
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


try:
    main()
except Exception as e:
    error("main: %s: %s" % (type(e).__name__, e))
    traceback.print_exc()
print(json.dumps(out))
