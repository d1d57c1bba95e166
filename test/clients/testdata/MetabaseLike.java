// Metabase-like pgjdbc session through pgproxy (run by pgjdbc_test.go).
//
// usage: java -cp postgresql.jar:. MetabaseLike JDBC_URL USER PASSWORD [SSLMODE [SSLROOTCERT]]
// Prints key=value lines; the Go test asserts. Exit status 1 on an
// unexpected exception (stack trace on stderr).
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public class MetabaseLike {
    static void out(String k, Object v) {
        System.out.println(k + "=" + v);
    }

    static String scalar(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("ApplicationName", "Metabase v0.50.0 [clients-test]");
        props.setProperty("sslmode", args.length > 3 ? args[3] : "disable");
        if (args.length > 4) {
            props.setProperty("sslrootcert", args[4]);
        }
        props.setProperty("connectTimeout", "10");
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            out("driver", c.getMetaData().getDriverVersion());
            out("session", scalar(c, "SELECT inet_server_port() || ',' || pg_is_in_recovery()"));

            // Pool checkout and health check.
            try (Statement s = c.createStatement()) {
                s.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED");
                out("empty_query_has_result", s.execute(""));
                out("empty_query_update_count", s.getUpdateCount());
            }
            out("isolation", scalar(c, "SHOW transaction_isolation"));
            out("is_valid", c.isValid(5));

            // The same PreparedStatement 8 times: after prepareThreshold (5)
            // executions pgjdbc uses a named server statement S_n (binary).
            String sql = "-- Metabase:: userID: 1 queryHash: 0f3c\nSELECT ?::int + 1 AS n, 'x'::text AS t";
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                int sum = 0;
                for (int i = 1; i <= 8; i++) {
                    ps.setInt(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sum += rs.getInt(1);
                    }
                    if (i == 1 || i == 6) {
                        out("named_statements_after_" + i, scalar(c, "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE '%queryHash: 0f3c%'"));
                    }
                }
                out("prepared_sum", sum);
                out("prepared_is_server", ((org.postgresql.PGStatement) ps).isUseServerPrepare());
            }

            // Large messages: a 4 MiB Bind parameter and a 4 MiB DataRow.
            String big = "y".repeat(4 << 20);
            try (PreparedStatement ps = c.prepareStatement("SELECT length(?::text), md5(?::text) = md5(repeat('y', 4194304)), repeat('z', 4194304)")) {
                ps.setString(1, big);
                ps.setString(2, big);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    out("big_param_length", rs.getInt(1));
                    out("big_param_intact", rs.getBoolean(2));
                    String row = rs.getString(3);
                    out("big_row_intact", row.length() == 4194304 && row.chars().allMatch(ch -> ch == 'z'));
                }
            }

            // Batches (the primary only): pgjdbc pipelines many
            // Bind/Execute before one Sync.
            if (scalar(c, "SELECT pg_is_in_recovery()").equals("f")) {
                try (Statement s = c.createStatement()) {
                    s.execute("CREATE TEMP TABLE mb_batch (id int PRIMARY KEY, v text)");
                }
                try (PreparedStatement ps = c.prepareStatement("INSERT INTO mb_batch VALUES (?, ?)")) {
                    for (int i = 1; i <= 5000; i++) {
                        ps.setInt(1, i);
                        ps.setString(2, "row " + i);
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    out("batch_counts", counts.length);
                    for (int id : new int[] {5001, 5002, 1, 5003}) {
                        ps.setInt(1, id);
                        ps.setString(2, "dup?");
                        ps.addBatch();
                    }
                    String state = "none";
                    try {
                        ps.executeBatch();
                    } catch (java.sql.BatchUpdateException e) {
                        SQLException next = e.getNextException();
                        state = next != null ? next.getSQLState() : e.getSQLState();
                    }
                    out("batch_error", state);
                }
                out("batch_rows", scalar(c, "SELECT count(*) FROM mb_batch"));
            }

            // Cursor-mode fetch: autocommit off + fetchSize gives Execute with a
            // row limit and PortalSuspended every 100 rows.
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("SELECT g, repeat('r', 50) FROM generate_series(1, 1000) g ORDER BY g")) {
                ps.setFetchSize(100);
                long rows = 0, sum = 0;
                String fetchedWhileOpen = "";
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                        if (rows == 150) {
                            // The portal is still open on the server here.
                            fetchedWhileOpen = scalar(c, "SELECT count(*) FROM pg_cursors WHERE name <> '' AND statement LIKE '%generate_series(1, 1000)%'");
                        }
                    }
                }
                out("fetch_rows", rows);
                out("fetch_sum", sum);
                out("fetch_cursors_while_open", fetchedWhileOpen);
            }
            c.commit();
            c.setAutoCommit(true);

            // Statement.cancel() from another thread: a CancelRequest on a new
            // connection.
            try (Statement s = c.createStatement()) {
                final long[] cancelAt = {0};
                Thread th = new Thread(() -> {
                    try {
                        Thread.sleep(1000);
                        cancelAt[0] = System.nanoTime();
                        s.cancel();
                    } catch (Exception e) {
                        e.printStackTrace();
                    }
                });
                th.start();
                long start = System.nanoTime();
                String state = "none";
                try {
                    s.execute("SELECT pg_sleep(30)");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                long end = System.nanoTime();
                th.join();
                out("cancel_sqlstate", state);
                out("cancel_total_ms", (end - start) / 1000000);
                out("cancel_after_request_ms", cancelAt[0] == 0 ? -1 : (end - cancelAt[0]) / 1000000);
            }
            out("after_cancel", scalar(c, "SELECT 'usable'"));

            // setQueryTimeout: pgjdbc's timer sends a CancelRequest.
            try (Statement s = c.createStatement()) {
                s.setQueryTimeout(1);
                String state = "none";
                long start = System.nanoTime();
                try {
                    s.execute("SELECT pg_sleep(30)");
                } catch (SQLException e) {
                    state = e.getSQLState();
                }
                out("query_timeout_sqlstate", state);
                out("query_timeout_ms", (System.nanoTime() - start) / 1000000);
            }
        }

        // Statement cache eviction: with prepareThreshold=1 and room for two
        // statements, pgjdbc closes evicted server statements (Close 'S').
        props.setProperty("prepareThreshold", "1");
        props.setProperty("preparedStatementCacheQueries", "2");
        try (Connection c = DriverManager.getConnection(args[0], props)) {
            for (int q = 1; q <= 6; q++) {
                for (int rep = 0; rep < 2; rep++) {
                    try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * " + q)) {
                        ps.setInt(1, rep);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                        }
                    }
                }
            }
            out("cached_server_statements", scalar(c, "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE 'SELECT $1::int * %'"));
        }
    }
}
