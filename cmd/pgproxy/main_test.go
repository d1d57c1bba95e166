package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, nil, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "pgproxy ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, nil, &out, &errb); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
}

func TestCheck(t *testing.T) {
	var out, errb bytes.Buffer
	env := []string{"PGPROXY_HEALTH_PASSWORD=s3cr3t-pw", "REPLICA_MAX_LAG_S=7"}
	if code := run([]string{"check", "--config", "../../configs/pgproxy.yaml"}, env, &out, &errb); code != 0 {
		t.Fatalf("check of the example config: exit %d\n%s", code, errb.String())
	}
	if strings.Contains(out.String(), "s3cr3t-pw") || !strings.Contains(out.String(), "max_lag: 7s") {
		t.Fatalf("check output leaks the password or misses the seed variable:\n%s", out.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("listen:\n  - addr: 127.0.0.1:6432\nbackends:\n  - addr: 127.0.0.1:5432\nrouting:\n  fallback: primry\n  max_lagg: 5s\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "--config", bad}, nil, &out, &errb); code != 1 {
		t.Fatalf("bad config: exit %d", code)
	}
	for _, want := range []string{"routing.fallback", "routing.max_lagg"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("error output does not name %s:\n%s", want, errb.String())
		}
	}
}

// TestDemo runs `pgproxy demo` for a few seconds: it must start the cluster,
// print working DSNs, write lineage events of the demo ETL, and clean up.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL cluster")
	}
	var out, errb bytes.Buffer
	code := run([]string{"demo", "--exit-after", "12s", "--write-port", "0", "--read-port", "0", "--http-port", "0"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	text := out.String()
	for _, want := range []string{"write listener", "read listener", "select inet_server_port(), pg_is_in_recovery()", "Stopping the cluster"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	dir := regexp.MustCompile(`removing (\S+)`).FindStringSubmatch(text)
	if dir == nil {
		t.Fatalf("no cluster dir in output")
	}
	if _, err := os.Stat(dir[1]); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s left behind: %v", dir[1], err)
	}
	if strings.Contains(errb.String(), "tagged ETL") {
		t.Errorf("the demo ETL failed:\n%s", errb.String())
	}
	m := regexp.MustCompile(`(\d+) OpenLineage events`).FindStringSubmatch(text)
	if m == nil || m[1] == "0" {
		t.Errorf("the demo ETL produced no lineage events:\n%s", text)
	}
}
