package clients

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// pgbenchSummary is what a pgbench 15 run reports.
type pgbenchSummary struct {
	processed, failed int
	tps               float64
}

var (
	reProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+) \(`)
	reTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)
)

// parsePgbench extracts the summary; every line must be present.
func parsePgbench(out string) (pgbenchSummary, error) {
	var s pgbenchSummary
	m1, m2, m3 := reProcessed.FindStringSubmatch(out), reFailed.FindStringSubmatch(out), reTPS.FindStringSubmatch(out)
	if m1 == nil || m2 == nil || m3 == nil {
		return s, fmt.Errorf("pgbench summary incomplete (processed %v, failed %v, tps %v)", m1 != nil, m2 != nil, m3 != nil)
	}
	s.processed, _ = strconv.Atoi(m1[1])
	s.failed, _ = strconv.Atoi(m2[1])
	s.tps, _ = strconv.ParseFloat(m3[1], 64)
	return s, nil
}

func TestParsePgbench(t *testing.T) {
	cases := []struct {
		name, out string
		want      pgbenchSummary
		ok        bool
	}{
		{"pgbench 15", "transaction type: <builtin: select only>\nscaling factor: 1\nquery mode: prepared\nnumber of clients: 4\nnumber of threads: 2\nmaximum number of tries: 1\nduration: 3 s\nnumber of transactions actually processed: 12345\nnumber of failed transactions: 0 (0.000%)\nlatency average = 0.9 ms\ninitial connection time = 5.1 ms\ntps = 4115.012345 (without initial connection time)\n",
			pgbenchSummary{12345, 0, 4115.012345}, true},
		{"-C", "number of transactions actually processed: 2222\nnumber of failed transactions: 0 (0.000%)\naverage connection time = 1.2 ms\ntps = 740.5 (including reconnection times)\n", pgbenchSummary{2222, 0, 740.5}, true},
		{"failures", "number of transactions actually processed: 10\nnumber of failed transactions: 3 (23.077%)\ntps = 3.3 (without initial connection time)\n", pgbenchSummary{10, 3, 3.3}, true},
		{"pgbench 14 (no failed line)", "number of transactions actually processed: 10/10\ntps = 3.3 (without initial connection time)\n", pgbenchSummary{}, false},
		{"aborted run", "pgbench: error: client 0 aborted in command 1\n", pgbenchSummary{}, false},
	}
	for _, c := range cases {
		got, err := parsePgbench(c.out)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("%s: got %+v, %v; want %+v ok=%v", c.name, got, err, c.want, c.ok)
		}
	}
}

// pgbenchSeconds is the length of each benchmark run (issue 2 says 5 s).
const pgbenchSeconds = "5"

// TestPgbench initialises pgbench tables through the write listener, runs
// the select-only script through the read listener in the three query modes
// and the default TPC-B script through the write listener, all with 4
// clients on 2 threads. No transaction may fail; the write run's
// pgbench_history rows on the primary equal the transactions pgbench
// counted; the select-only runs are seen in the replica's statistics.
func TestPgbench(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, pgbenchBin)
	p := startProxy(t)
	env := pgEnv(p.WriteAddr(), "postgres", "postgres")
	r := run(ctxT(t, 120*time.Second), env, "", pgbenchBin, "-i", "-s", "1", "-q")
	if r.err != nil {
		t.Fatalf("pgbench -i: %s", r)
	}
	var accounts int
	primaryScalar(t, "SELECT count(*) FROM pgbench_accounts", &accounts)
	if accounts != 100000 {
		t.Fatalf("pgbench_accounts has %d rows on the primary, want 100000", accounts)
	}
	if err := cluster.WaitReplicasCaughtUp(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	replica := cluster.Replicas()[0]
	replicaScans := func() int64 {
		var n int64
		if err := replica.QueryRow(ctxT(t, 10*time.Second), "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_tables WHERE relname = 'pgbench_accounts'", &n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run("select-only "+mode+" read listener", func(t *testing.T) {
			before := replicaScans()
			r := run(ctxT(t, 60*time.Second), pgEnv(p.ReadAddr(), "postgres", "postgres"), "",
				pgbenchBin, "-n", "-S", "-M", mode, "-c", "4", "-j", "2", "-T", pgbenchSeconds)
			s, err := parsePgbench(r.stdout)
			if r.err != nil || err != nil {
				t.Fatalf("%v\n%s", err, r)
			}
			t.Logf("-S -M %s: %d transactions, %.0f tps, %d failed", mode, s.processed, s.tps, s.failed)
			if s.failed != 0 || s.processed <= 0 {
				t.Fatalf("processed %d, failed %d\n%s", s.processed, s.failed, r)
			}
			// Statistics of the replica's backends are flushed when they exit;
			// pgbench has closed them, allow a moment.
			var after int64
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if after = replicaScans(); after-before >= int64(s.processed) {
					break
				}
			}
			if after-before < int64(s.processed) {
				t.Errorf("replica saw %d index scans of pgbench_accounts, want >= %d: the reads did not run on the replica", after-before, s.processed)
			}
		})
	}

	t.Run("tpc-b write listener", func(t *testing.T) {
		r := run(ctxT(t, 60*time.Second), env, "", pgbenchBin, "-n", "-c", "4", "-j", "2", "-T", pgbenchSeconds)
		s, err := parsePgbench(r.stdout)
		if r.err != nil || err != nil {
			t.Fatalf("%v\n%s", err, r)
		}
		t.Logf("TPC-B: %d transactions, %.0f tps, %d failed", s.processed, s.tps, s.failed)
		if s.failed != 0 || s.processed <= 0 {
			t.Fatalf("processed %d, failed %d\n%s", s.processed, s.failed, r)
		}
		var history int
		primaryScalar(t, "SELECT count(*) FROM pgbench_history", &history)
		if history != s.processed {
			t.Errorf("pgbench_history has %d rows on the primary, pgbench processed %d transactions", history, s.processed)
		}
	})
	// A new connection per transaction (-C): startup and authentication
	// through the proxy thousands of times; afterwards no backend session
	// is left behind on the replica.
	t.Run("select-only new connection per transaction read listener", func(t *testing.T) {
		r := run(ctxT(t, 60*time.Second), pgEnv(p.ReadAddr(), pgcluster.ScramUser, "postgres", "PGAPPNAME=clients-pgbench-C"), "",
			pgbenchBin, "-n", "-S", "-C", "-c", "4", "-j", "2", "-T", "3")
		s, err := parsePgbench(r.stdout)
		if r.err != nil || err != nil {
			t.Fatalf("%v\n%s", err, r)
		}
		t.Logf("-S -C (SCRAM): %d transactions (= connections), %.0f tps, %d failed", s.processed, s.tps, s.failed)
		if s.failed != 0 || s.processed <= 0 {
			t.Fatalf("processed %d, failed %d\n%s", s.processed, s.failed, r)
		}
		var left int
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if err := replica.QueryRow(ctxT(t, 10*time.Second), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clients-pgbench-C'", &left); err != nil {
				t.Fatal(err)
			}
			if left == 0 || time.Now().After(deadline) {
				break
			}
		}
		if left != 0 {
			t.Errorf("%d backend sessions of pgbench -C remain on the replica", left)
		}
	})

	// Pipelines (\startpipeline ... \endpipeline): three statements in
	// flight before one Sync, in the extended and prepared query modes.
	for _, c := range []struct {
		name, addr, script, mode string
		write                    bool
	}{
		{"pipeline prepared write listener", p.WriteAddr(), "testdata/pipeline_write.sql", "prepared", true},
		{"pipeline extended read listener", p.ReadAddr(), "testdata/pipeline_read.sql", "extended", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after int
			primaryScalar(t, "SELECT count(*) FROM pgbench_history", &before)
			r := run(ctxT(t, 60*time.Second), pgEnv(c.addr, "postgres", "postgres"), "", pgbenchBin, "-n", "-f", c.script, "-M", c.mode, "-c", "4", "-j", "2", "-T", "3")
			s, err := parsePgbench(r.stdout)
			if r.err != nil || err != nil {
				t.Fatalf("%v\n%s", err, r)
			}
			t.Logf("%s: %d transactions, %.0f tps, %d failed", c.name, s.processed, s.tps, s.failed)
			if s.failed != 0 || s.processed <= 0 {
				t.Fatalf("processed %d, failed %d\n%s", s.processed, s.failed, r)
			}
			primaryScalar(t, "SELECT count(*) FROM pgbench_history", &after)
			if want := map[bool]int{true: s.processed, false: 0}[c.write]; after-before != want {
				t.Errorf("pgbench_history grew by %d rows on the primary, want %d", after-before, want)
			}
		})
	}
}
