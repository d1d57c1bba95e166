// Metabase-style pgjdbc clients through one pgproxy DSN routed per
// transaction (run by routed_test.go).
//
// usage: java -cp postgresql.jar:. MetabaseRouted JDBC_URL USER PASSWORD CLIENTS ROUNDS
// Each client is a thread with one Connection (prepareThreshold=3, as
// Metabase's own default leaves pgjdbc's 5 for its cards: named server
// statements after a few runs). Per round:
//   - read-write, autocommit: a PreparedStatement UPDATE ... RETURNING of
//     the client's row and an INSERT of a log row (the primary);
//   - setReadOnly(true), autocommit (pgjdbc sends nothing for it): a
//     "-- Metabase::" card query that must see that write;
//   - setReadOnly(true), autocommit off (BEGIN READ ONLY in the batch): a
//     setFetchSize(100) read of every log row of the client, 60 rows each
//     (Execute with a row limit, PortalSuspended), that must end with the
//     value just written.
// Every read returns pg_is_in_recovery(). After the first round every
// client waits for the others. Prints key=value lines; the Go test asserts.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

public class MetabaseRouted {
    static final ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
    static final AtomicLong writes = new AtomicLong(), reads = new AtomicLong(), onReplica = new AtomicLong(),
            stale = new AtomicLong(), fetchedRows = new AtomicLong(), serverPrepared = new AtomicLong();
    static CyclicBarrier together;

    public static void main(String[] args) throws Exception {
        int clients = Integer.parseInt(args[3]);
        int rounds = Integer.parseInt(args[4]);
        together = new CyclicBarrier(clients);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            final int id = i;
            Thread th = new Thread(() -> {
                try {
                    client(args[0], args[1], args[2], id, rounds);
                } catch (Throwable e) {
                    errors.add("client " + id + ": " + e);
                    e.printStackTrace();
                    together.reset();
                }
            });
            th.start();
            threads.add(th);
        }
        for (Thread th : threads) {
            th.join();
        }
        System.out.println("writes=" + writes.get());
        System.out.println("reads=" + reads.get());
        System.out.println("on_replica=" + onReplica.get());
        System.out.println("stale=" + stale.get());
        System.out.println("fetched_rows=" + fetchedRows.get());
        System.out.println("server_prepared=" + serverPrepared.get());
        System.out.println("errors=" + errors.size());
        for (String e : errors) {
            System.out.println("error=" + e);
        }
    }

    static void read(int id, int r, String kind, long v, long logs, long wantV, long wantLogs, boolean rec) {
        reads.incrementAndGet();
        if (rec) {
            onReplica.incrementAndGet();
        }
        if (v < wantV || logs < wantLogs) {
            stale.incrementAndGet();
            errors.add("client " + id + " round " + r + " " + kind + ": v " + v + " logs " + logs + ", wrote v " + wantV + " logs " + wantLogs + " (on replica: " + rec + ")");
        }
    }

    static void client(String url, String user, String password, int id, int rounds) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("ApplicationName", "Metabase v0.50 [" + id + "]");
        props.setProperty("prepareThreshold", "3");
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "20");
        try (Connection c = DriverManager.getConnection(url, props)) {
            PreparedStatement upd = c.prepareStatement("UPDATE mb_rt SET v = v + 1 WHERE id = ? RETURNING v");
            PreparedStatement ins = c.prepareStatement("INSERT INTO mb_rt_log (client, round, v) VALUES (?, ?, ?)");
            PreparedStatement card = c.prepareStatement("-- Metabase:: userID: 1 queryType: native queryHash: 4f2a\n"
                    + "SELECT v, (SELECT count(*) FROM mb_rt_log WHERE client = ?), pg_is_in_recovery() FROM mb_rt WHERE id = ?");
            PreparedStatement rows = c.prepareStatement("SELECT l.round, l.v, g, pg_is_in_recovery() FROM mb_rt_log l, generate_series(1, 60) g "
                    + "WHERE l.client = ? ORDER BY l.round, g");
            rows.setFetchSize(100);
            for (int r = 0; r < rounds; r++) {
                c.setReadOnly(false);
                upd.setInt(1, id);
                long v;
                try (ResultSet rs = upd.executeQuery()) {
                    rs.next();
                    v = rs.getLong(1);
                }
                ins.setInt(1, id);
                ins.setInt(2, r);
                ins.setLong(3, v);
                ins.executeUpdate();
                writes.incrementAndGet();

                c.setReadOnly(true);
                card.setInt(1, id);
                card.setInt(2, id);
                try (ResultSet rs = card.executeQuery()) {
                    rs.next();
                    read(id, r, "card", rs.getLong(1), rs.getLong(2), v, r + 1, rs.getBoolean(3));
                }

                c.setAutoCommit(false);
                rows.setInt(1, id);
                long n = 0, last = -1;
                boolean rec = false;
                try (ResultSet rs = rows.executeQuery()) {
                    while (rs.next()) {
                        if (n == 0) {
                            rec = rs.getBoolean(4);
                        }
                        n++;
                        last = rs.getLong(2);
                    }
                }
                c.commit();
                c.setAutoCommit(true);
                fetchedRows.addAndGet(n);
                read(id, r, "fetch", last, n / 60, v, r + 1, rec);
                if (n != 60L * (r + 1)) {
                    errors.add("client " + id + " round " + r + ": fetched " + n + " rows, want " + 60 * (r + 1));
                }
                if (r == 0) {
                    together.await(60, TimeUnit.SECONDS);
                }
            }
            for (PreparedStatement ps : new PreparedStatement[] {upd, ins, card, rows}) {
                if (((org.postgresql.PGStatement) ps).isUseServerPrepare()) {
                    serverPrepared.incrementAndGet();
                }
            }
        }
    }
}
