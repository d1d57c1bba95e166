// pgjdbc clients on one pgproxy in transaction pooling mode (run by
// pooled_test.go).
//
// usage: java -cp postgresql.jar:. PooledJdbc JDBC_URL USER PASSWORD CLIENTS ROUNDS
// Each client is a thread with a Connection of its own: prepareThreshold=1
// (every PreparedStatement is a named server statement from its first
// execution), autocommit off, and per round, in one transaction: a
// two-parameter query, a fetchSize cursor read (Execute with a row limit,
// PortalSuspended), an insert; every third round is rolled back instead.
// After the first round every client waits for all the others (all
// connections open at once, each between two transactions).
// Prints key=value lines (client<N>_... and errors=); the Go test asserts.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;

public class PooledJdbc {
    static final ConcurrentLinkedQueue<String> lines = new ConcurrentLinkedQueue<>();
    static final ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
    static CyclicBarrier together;

    public static void main(String[] args) throws Exception {
        String url = args[0];
        int clients = Integer.parseInt(args[3]);
        int rounds = Integer.parseInt(args[4]);
        CountDownLatch start = new CountDownLatch(1);
        together = new CyclicBarrier(clients);
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            final int id = i;
            Thread th = new Thread(() -> {
                try {
                    client(url, args[1], args[2], id, rounds, start);
                } catch (Throwable e) {
                    errors.add("client " + id + ": " + e);
                    e.printStackTrace();
                }
            });
            th.start();
            threads.add(th);
        }
        start.countDown();
        for (Thread th : threads) {
            th.join();
        }
        for (String l : lines) {
            System.out.println(l);
        }
        System.out.println("errors=" + errors.size());
        for (String e : errors) {
            System.out.println("error=" + e);
        }
    }

    static void check(int id, String what, Object got, Object want) {
        if (!String.valueOf(got).equals(String.valueOf(want))) {
            errors.add("client " + id + ": " + what + " = " + got + ", want " + want);
        }
    }

    static void client(String url, String user, String password, int id, int rounds, CountDownLatch start) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("ApplicationName", "jdbc-" + id);
        props.setProperty("prepareThreshold", "1");
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "20");
        try (Connection c = DriverManager.getConnection(url, props)) {
            start.await();
            c.setAutoCommit(false);
            PreparedStatement add = c.prepareStatement("SELECT ?::int + ?::int, current_setting('application_name')");
            PreparedStatement fetch = c.prepareStatement("SELECT g, repeat('r', 40) FROM generate_series(1, ?) g ORDER BY g");
            fetch.setFetchSize(50);
            PreparedStatement ins = c.prepareStatement("INSERT INTO pooled_jdbc (client, round) VALUES (?, ?)");
            int committed = 0, fetchedOK = 0, serverPrepared = 0;
            for (int r = 0; r < rounds; r++) {
                add.setInt(1, id);
                add.setInt(2, r);
                try (ResultSet rs = add.executeQuery()) {
                    rs.next();
                    check(id, "round " + r + " sum", rs.getInt(1), id + r);
                    check(id, "round " + r + " application_name", rs.getString(2), "jdbc-" + id);
                }
                int n = 300 + id * 10 + r;
                fetch.setInt(1, n);
                long rows = 0, sum = 0;
                try (ResultSet rs = fetch.executeQuery()) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                    }
                }
                if (rows == n && sum == (long) n * (n + 1) / 2) {
                    fetchedOK++;
                } else {
                    errors.add("client " + id + " round " + r + ": fetched " + rows + " rows, sum " + sum + ", want " + n);
                }
                ins.setInt(1, id);
                ins.setInt(2, r);
                check(id, "round " + r + " insert count", ins.executeUpdate(), 1);
                if (r % 3 == 2) {
                    c.rollback();
                } else {
                    c.commit();
                    committed++;
                }
                if (r == 0) {
                    // Every connection open and between transactions at once:
                    // they hold no server now (none is pinned), so all of them
                    // go on, on the 2 servers.
                    together.await(60, TimeUnit.SECONDS);
                }
            }
            for (PreparedStatement ps : new PreparedStatement[] {add, fetch, ins}) {
                if (((org.postgresql.PGStatement) ps).isUseServerPrepare()) {
                    serverPrepared++;
                }
            }
            PreparedStatement count = c.prepareStatement("SELECT count(*) FROM pooled_jdbc WHERE client = ?");
            count.setInt(1, id);
            try (ResultSet rs = count.executeQuery()) {
                rs.next();
                lines.add("client" + id + "_rows=" + rs.getInt(1));
            }
            c.commit();
            lines.add("client" + id + "_committed=" + committed);
            lines.add("client" + id + "_fetched_ok=" + fetchedOK);
            lines.add("client" + id + "_server_prepared=" + serverPrepared);
        }
    }
}
