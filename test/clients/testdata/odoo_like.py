"""Odoo-like psycopg2 session through pgproxy (run by psycopg2_test.go).

usage: odoo_like.py WRITE_DSN READ_DSN
Prints one JSON object with what each step observed; the Go test asserts.
On an exception the partial object is printed, the traceback goes to stderr
and the exit status is 1.
"""
import io
import json
import os
import select
import sys
import threading
import time
import traceback

import psycopg2
import psycopg2.errors
import psycopg2.extensions as ext

write_dsn, read_dsn = sys.argv[1], sys.argv[2]
out = {"psycopg2": psycopg2.__version__}


def scalar(cur, sql):
    cur.execute(sql)
    return cur.fetchone()[0]


def main():
    app = "odoo-%d" % os.getpid()
    conn = psycopg2.connect(write_dsn, application_name=app)
    # Odoo 18 main pool: never autocommit, every transaction
    # BEGIN ISOLATION LEVEL REPEATABLE READ READ WRITE.
    conn.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ, readonly=False)
    cur = conn.cursor()

    # ParameterStatus values psycopg2 depends on.
    out["server_version"] = conn.server_version
    out["ssl_in_use"] = conn.info.ssl_in_use
    out["params"] = {k: conn.get_parameter_status(k) for k in
                     ("client_encoding", "standard_conforming_strings", "DateStyle", "server_version", "application_name")}

    cur.execute("SELECT inet_server_port(), pg_is_in_recovery(), current_setting('transaction_isolation')")
    out["write_session"] = list(cur.fetchone())
    cur.execute("DROP TABLE IF EXISTS odoo_partner, odoo_copy")
    cur.execute("CREATE TABLE odoo_partner (id serial PRIMARY KEY, name text NOT NULL)")
    cur.execute("CREATE TABLE odoo_copy (LIKE odoo_partner)")
    cur.execute("INSERT INTO odoo_partner (name) SELECT 'partner ' || g FROM generate_series(1, 1000) g")
    conn.commit()

    # REPEATABLE READ: a row committed by another session during the
    # transaction is invisible until the next transaction.
    other = psycopg2.connect(write_dsn)
    other.autocommit = True
    before = scalar(cur, "SELECT count(*) FROM odoo_partner")
    other.cursor().execute("INSERT INTO odoo_partner (name) VALUES ('concurrent')")
    during = scalar(cur, "SELECT count(*) FROM odoo_partner")
    iso = scalar(cur, "SHOW transaction_isolation")
    conn.commit()
    after = scalar(cur, "SELECT count(*) FROM odoo_partner")
    conn.commit()
    out["repeatable_read"] = {"before": before, "during": during, "after": after, "isolation": iso}

    # Job locking (ir.cron): FOR NO KEY UPDATE SKIP LOCKED from two sessions
    # takes two different rows.
    other.autocommit = False
    ocur = other.cursor()
    pick = "SELECT id FROM odoo_partner ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"
    first = scalar(cur, pick)
    second = scalar(ocur, pick)
    conn.rollback()
    other.rollback()
    other.autocommit = True
    out["skip_locked"] = [first, second]

    # statement_timeout sent in the startup options ends a long statement
    # with 57014.
    st = psycopg2.connect(write_dsn, options="-c statement_timeout=200")
    try:
        st.cursor().execute("SELECT pg_sleep(5)")
        out["statement_timeout"] = None
    except psycopg2.errors.QueryCanceled as e:
        out["statement_timeout"] = e.pgcode
    st.close()

    # Errors abort the transaction; rollback makes the session usable again.
    try:
        cur.execute("SELECT 1/0")
        out["division_error"] = None
    except psycopg2.errors.DivisionByZero as e:
        out["division_error"] = e.pgcode
    conn.rollback()
    out["after_rollback"] = scalar(cur, "SELECT 'usable'")
    conn.commit()

    # Pool reuse: DISCARD ALL (outside a transaction) drops session state.
    conn.autocommit = True
    cur.execute("SET work_mem = '7MB'")
    cur.execute("PREPARE odoo_stmt AS SELECT 1")
    cur.execute("CREATE TEMP TABLE odoo_tmp (x int)")
    state_before = [scalar(cur, "SHOW work_mem"),
                    scalar(cur, "SELECT count(*) FROM pg_prepared_statements"),
                    scalar(cur, "SELECT count(*) FROM pg_class WHERE relname = 'odoo_tmp'")]
    cur.execute("DISCARD ALL")
    state_after = [scalar(cur, "SHOW work_mem"),
                   scalar(cur, "SELECT count(*) FROM pg_prepared_statements"),
                   scalar(cur, "SELECT count(*) FROM pg_class WHERE relname = 'odoo_tmp'")]
    out["discard_all"] = {"before": state_before, "after": state_after}
    conn.autocommit = False
    conn.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ)

    # Named (server-side) cursor: DECLARE ... + FETCH FORWARD itersize.
    named = conn.cursor(name="odoo_named")
    named.itersize = 100
    named.execute("SELECT id, name FROM odoo_partner ORDER BY id")
    n, s = 0, 0
    for row in named:
        n += 1
        s += row[0]
    named.close()
    conn.commit()
    out["named_cursor"] = {"rows": n, "sum": s}

    # COPY out and in (copy_expert), then a COPY FROM with bad data.
    buf = io.StringIO()
    cur.copy_expert("COPY odoo_partner TO STDOUT", buf)
    text = buf.getvalue()
    cur.copy_expert("COPY odoo_copy FROM STDIN", io.StringIO(text))
    conn.commit()
    copied = scalar(cur, "SELECT count(*) FROM odoo_copy")
    conn.commit()
    try:
        cur.copy_expert("COPY odoo_copy FROM STDIN", io.StringIO("1\tok\nbad\tx\n"))
        bad = None
    except psycopg2.errors.InvalidTextRepresentation as e:
        bad = e.pgcode
    conn.rollback()
    out["copy"] = {"out_lines": text.count("\n"), "in_rows": copied, "bad_data": bad,
                   "after": scalar(cur, "SELECT count(*) FROM odoo_copy")}
    conn.commit()

    # The bus: LISTEN in one session, idle in select(); pg_notify from
    # another session (a thread, after the listener is already waiting).
    listener = psycopg2.connect(write_dsn, dbname="postgres")
    listener.autocommit = True
    lcur = listener.cursor()
    lcur.execute("LISTEN imbus")
    # Idle with nothing to receive first: select() must time out.
    r, _, _ = select.select([listener], [], [], 0.5)
    quiet = not r
    notifier_pid = []
    payloads = ["p1", "p2 " + "x" * 7000, "p3"]

    def notify():
        time.sleep(1.0)
        n = psycopg2.connect(write_dsn, dbname="postgres")
        n.autocommit = True
        c = n.cursor()
        c.execute("SELECT pg_backend_pid()")
        notifier_pid.append(c.fetchone()[0])
        for p in payloads:
            c.execute("SELECT pg_notify('imbus', %s)", (p,))
        n.close()

    th = threading.Thread(target=notify)
    started = time.time()
    th.start()
    got = []
    while len(got) < len(payloads) and time.time() - started < 10:
        r, _, _ = select.select([listener], [], [], 10)
        if not r:
            break
        listener.poll()
        while listener.notifies:
            got.append(listener.notifies.pop(0))
    th.join()
    out["listen"] = {
        "quiet_before": quiet,
        "waited_s": round(time.time() - started, 3),
        "channels": [x.channel for x in got],
        "payloads_ok": [x.payload for x in got] == payloads,
        "count": len(got),
        "pid_ok": bool(got) and all(x.pid == notifier_pid[0] for x in got),
    }
    listener.close()
    other.close()

    # Odoo 18 replica pool on the read listener: REPEATABLE READ READ ONLY.
    ro = psycopg2.connect(read_dsn, application_name=app + "-ro")
    ro.set_session(isolation_level=ext.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    rcur = ro.cursor()
    deadline = time.time() + 15
    want = out["copy"]["in_rows"]
    while True:  # wait for the replica to replay the copied rows
        try:
            cnt = scalar(rcur, "SELECT count(*) FROM odoo_copy")
        except psycopg2.errors.UndefinedTable:
            cnt = -1
        ro.rollback()
        if cnt == want or time.time() > deadline:
            break
        time.sleep(0.1)
    rcur.execute("SELECT inet_server_port(), pg_is_in_recovery(), current_setting('transaction_read_only'), current_setting('transaction_isolation')")
    read_session = list(rcur.fetchone())
    ro.commit()
    rnamed = ro.cursor(name="odoo_ro_named")
    rnamed.itersize = 250
    rnamed.execute("SELECT id FROM odoo_copy")
    rrows = sum(1 for _ in rnamed)
    rnamed.close()
    ro.commit()
    try:
        rcur.execute("INSERT INTO odoo_copy VALUES (0, 'x')")
        rwrite = None
    except psycopg2.Error as e:
        rwrite = e.pgcode
    ro.rollback()
    out["read"] = {"session": read_session, "named_rows": rrows, "write_error": rwrite}
    ro.close()
    conn.close()


try:
    main()
    print(json.dumps(out))
except Exception:
    print(json.dumps(out))
    traceback.print_exc()
    sys.exit(1)
