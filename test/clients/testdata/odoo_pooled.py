"""Odoo-style psycopg2 clients on one pgproxy in transaction pooling mode
(run by pooled_test.go).

usage: odoo_pooled.py PROXY_DSN DIRECT_DSN WORKERS ROUNDS
WORKERS threads each hold a connection through the proxy (Odoo's main
pool: never autocommit, REPEATABLE READ) and run ROUNDS transactions: a
snapshot check (a row committed meanwhile by a direct connection to the
primary stays invisible until the next transaction), a named (server-side)
cursor read, an insert; every fourth is rolled back; after the first, all
wait for each other (every connection open at once). One more connection is
Odoo's bus: LISTEN imbus (autocommit), idle in select(); one more sends
pg_notify in transactions while the workers run. Prints one JSON object;
the Go test asserts.
"""
import json
import select
import sys
import threading
import time
import traceback

import psycopg2
import psycopg2.extensions as ext

proxy_dsn, direct_dsn = sys.argv[1], sys.argv[2]
workers, rounds = int(sys.argv[3]), int(sys.argv[4])
out = {"psycopg2": psycopg2.__version__, "workers": {}, "errors": []}
lock = threading.Lock()
payloads = ["bus %d %s" % (i, "x" * (i * 1000)) for i in range(5)]
listening = threading.Event()
received = threading.Event()
together = threading.Barrier(workers, timeout=60)


def error(what):
    with lock:
        out["errors"].append(what)


def scalar(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()[0]


def worker(i):
    res = {"isolation_ok": 0, "snapshot_ok": 0, "named_ok": 0, "committed": 0}
    conn = psycopg2.connect(proxy_dsn, application_name="odoo-w%d" % i)
    conn.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ, readonly=False)
    direct = psycopg2.connect(direct_dsn)
    direct.autocommit = True
    marker = 1000 + i  # rows only the direct connection inserts for this worker
    try:
        cur = conn.cursor()
        for r in range(rounds):
            iso = scalar(cur, "SELECT current_setting('transaction_isolation')")
            if iso == "repeatable read":
                res["isolation_ok"] += 1
            else:
                error("worker %d round %d: isolation %r" % (i, r, iso))
            before = scalar(cur, "SELECT count(*) FROM odoo_pool WHERE client = %s", (marker,))
            direct.cursor().execute("INSERT INTO odoo_pool (client, round) VALUES (%s, %s)", (marker, r))
            during = scalar(cur, "SELECT count(*) FROM odoo_pool WHERE client = %s", (marker,))

            n = 200 + 10 * i + r
            named = conn.cursor(name="odoo_named_%d" % r)
            named.itersize = 50  # DECLARE, then FETCH FORWARD 50 until done
            named.execute("SELECT g FROM generate_series(1, %s) g ORDER BY g", (n,))
            rows, total = 0, 0
            for row in named:
                rows += 1
                total += row[0]
            named.close()
            if rows == n and total == n * (n + 1) // 2:
                res["named_ok"] += 1
            else:
                error("worker %d round %d: named cursor %d rows sum %d, want %d" % (i, r, rows, total, n))

            cur.execute("INSERT INTO odoo_pool (client, round) VALUES (%s, %s)", (i, r))
            if r % 4 == 3:
                conn.rollback()
            else:
                conn.commit()
                res["committed"] += 1
            after = scalar(cur, "SELECT count(*) FROM odoo_pool WHERE client = %s", (marker,))
            conn.commit()
            if r == 0:
                # Every worker connected and between transactions at once.
                together.wait()
            if during == before and after == before + 1:
                res["snapshot_ok"] += 1
            else:
                error("worker %d round %d: snapshot counts %d, %d, %d" % (i, r, before, during, after))
        res["rows"] = scalar(cur, "SELECT count(*) FROM odoo_pool WHERE client = %s", (i,))
        conn.commit()
    except Exception as e:
        error("worker %d: %s: %s" % (i, type(e).__name__, e))
        traceback.print_exc()
        together.abort()
    finally:
        conn.close()
        direct.close()
    with lock:
        out["workers"][str(i)] = res


def listener():
    res = {"count": 0}
    conn = psycopg2.connect(proxy_dsn, application_name="odoo-bus")
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("LISTEN imbus")
        res["pid_before"] = scalar(cur, "SELECT pg_backend_pid()")
        listening.set()
        got = []
        deadline = time.time() + 20
        while len(got) < len(payloads) and time.time() < deadline:
            r, _, _ = select.select([conn], [], [], 5)
            if not r:
                continue
            conn.poll()
            while conn.notifies:
                got.append(conn.notifies.pop(0))
        received.set()
        res["count"] = len(got)
        res["channels_ok"] = all(n.channel == "imbus" for n in got)
        res["payloads_ok"] = [n.payload for n in got] == payloads
        res["pid_after"] = scalar(cur, "SELECT pg_backend_pid()")
        res["channels_listening"] = scalar(cur, "SELECT count(*) FROM pg_listening_channels()")
    except Exception as e:
        error("listener: %s: %s" % (type(e).__name__, e))
        traceback.print_exc()
    finally:
        listening.set()
        received.set()
        conn.close()
    with lock:
        out["listen"] = res


def notifier():
    conn = psycopg2.connect(proxy_dsn, application_name="odoo-notify")
    conn.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ)
    try:
        listening.wait(30)
        cur = conn.cursor()
        for p in payloads:
            # Odoo's bus: the notification goes out when the transaction commits.
            cur.execute("SELECT pg_notify('imbus', %s)", (p,))
            conn.commit()
            time.sleep(0.05)
        received.wait(30)
    except Exception as e:
        error("notifier: %s: %s" % (type(e).__name__, e))
        traceback.print_exc()
    finally:
        conn.close()


def main():
    setup = psycopg2.connect(direct_dsn)
    setup.autocommit = True
    setup.cursor().execute("DROP TABLE IF EXISTS odoo_pool; CREATE TABLE odoo_pool (client int, round int)")
    setup.close()
    threads = [threading.Thread(target=listener), threading.Thread(target=notifier)]
    threads += [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
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
