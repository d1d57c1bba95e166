package clients

import (
	"bufio"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestPgjdbcMetabaseLike compiles testdata/MetabaseLike.java and runs it
// through both listeners with the md5 role: Metabase's checkout statement
// and empty-query health check, a PreparedStatement past pgjdbc's
// prepareThreshold (named server statement), fetchSize cursor reads
// (PortalSuspended) and Statement.cancel().
func TestPgjdbcMetabaseLike(t *testing.T) {
	pgcluster.Require(t, cluster)
	javac, errC := exec.LookPath("javac")
	java, errJ := exec.LookPath("java")
	if errC != nil || errJ != nil {
		if isCI() {
			t.Fatalf("javac/java missing (CI installs default-jdk-headless): %v %v", errC, errJ)
		}
		t.Skipf("javac/java missing: %v %v", errC, errJ)
	}
	needTool(t, jdbcJar)
	p, tlsf := startTLSProxy(t)
	classes := t.TempDir()
	if out, err := runCmd(t, javac, "-d", classes, "-cp", jdbcJar, "testdata/MetabaseLike.java"); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	for _, c := range []struct {
		name, addr string
		port       int
		recovery   bool
		tls        bool
	}{
		{"write", p.WriteAddr(), cluster.Primary().Port, false, false},
		{"read", p.ReadAddr(), cluster.Replicas()[0].Port, true, false},
		{"read verify-full", p.ReadAddr(), cluster.Replicas()[0].Port, true, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecorder(t, c.addr)
			url := fmt.Sprintf("jdbc:postgresql://%s/postgres", rec.Addr())
			args := []string{"-Duser.timezone=UTC", "-XX:TieredStopAtLevel=1", "-cp", jdbcJar + ":" + classes, "MetabaseLike", url, pgcluster.MD5User, pgcluster.MD5Password}
			if c.tls {
				args = append(args, "verify-full", tlsf.cert)
			}
			r := run(ctxT(t, 90*time.Second), []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "LANG=C.UTF-8"}, "", java, args...)
			if r.err != nil {
				t.Fatalf("MetabaseLike: %s", r)
			}
			// The session, one plaintext CancelRequest connection per cancel
			// (Statement.cancel, setQueryTimeout; pgjdbc never encrypts
			// cancels), then the statement-cache session.
			session := []uint32{codeProtocol30}
			if c.tls {
				session = []uint32{codeSSLRequest, 0x16}
			}
			wantConns := fmt.Sprint([][]uint32{session, {codeCancelRequest}, {codeCancelRequest}, session})
			if codes := rec.Codes(); fmt.Sprint(codes) != wantConns {
				t.Errorf("connections sent %v, want %v", codes, wantConns)
			}
			got := keyValues(r.stdout)
			t.Logf("pgjdbc %s: %v", got["driver"], got)
			want := map[string]string{
				"session":                  fmt.Sprintf("%d,%v", c.port, c.recovery),
				"empty_query_has_result":   "false",
				"empty_query_update_count": "0",
				"isolation":                "read uncommitted",
				"is_valid":                 "true",
				"named_statements_after_1": "0",
				"named_statements_after_6": "1",
				"prepared_sum":             strconv.Itoa(36 + 8), // sum of i+1 for i in 1..8
				"prepared_is_server":       "true",
				"fetch_rows":               "1000",
				"fetch_sum":                "500500",
				"fetch_cursors_while_open": "1",
				"cancel_sqlstate":          "57014",
				"after_cancel":             "usable",
				"query_timeout_sqlstate":   "57014",
			}
			for k, v := range map[string]string{"big_param_length": "4194304", "big_param_intact": "true", "big_row_intact": "true"} {
				want[k] = v
			}
			if !c.recovery {
				want["batch_counts"] = "5000"
				want["batch_error"] = "23505"
				want["batch_rows"] = "5000" // the failed batch was one transaction
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			// Six statements were server-prepared; evicted ones were closed.
			if n, err := strconv.Atoi(got["cached_server_statements"]); err != nil || n < 1 || n > 3 {
				t.Errorf("cached_server_statements = %q, want 1..3 (6 without Close)", got["cached_server_statements"])
			}
			// pg_sleep(30) ended by the cancel, not by itself.
			if ms, err := strconv.Atoi(got["cancel_after_request_ms"]); err != nil || ms < 0 || ms > 2000 {
				t.Errorf("cancel_after_request_ms = %q, want 0..2000", got["cancel_after_request_ms"])
			}
		})
	}
}

// keyValues parses key=value lines.
func keyValues(s string) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			m[k] = v
		}
	}
	return m
}
