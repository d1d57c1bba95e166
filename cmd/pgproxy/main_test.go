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

// TestCommandLine: a bad command line says what is wrong (it used to exit
// 2 with no message), a config path without --config is the config file
// (it used to be ignored), and --help lists the commands and typed flags.
func TestCommandLine(t *testing.T) {
	const example = "../../configs/pgproxy.yaml"
	for _, tc := range []struct {
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout bool
	}{
		{args: []string{"check", "--conifg", example}, code: 2, stderr: []string{"pgproxy check: unknown flag: --conifg (did you mean --config?)", "usage: pgproxy", "commands:"}, noStdout: true},
		{args: []string{"check", "-c", example}, code: 2, stderr: []string{"unknown shorthand flag: 'c' in -c (did you mean --config?)", "usage: pgproxy"}, noStdout: true},
		{args: []string{"check", "--bogus"}, code: 2, stderr: []string{"pgproxy check: unknown flag: --bogus\n", "usage: pgproxy"}, noStdout: true},
		{args: []string{"--bogus"}, code: 2, stderr: []string{"pgproxy serve: unknown flag: --bogus"}, noStdout: true},
		{args: []string{"check", "--routing.max_lag"}, code: 2, stderr: []string{"flag needs an argument: --routing.max_lag"}},
		{args: []string{"check", example}, code: 0, stdout: []string{"# configuration OK", "127.0.0.1:5434"}},
		{args: []string{"check", "--config", example, example}, code: 0, stdout: []string{"# configuration OK"}},
		{args: []string{"check", "--config", example, "other.yaml"}, code: 2, stderr: []string{`two config files, --config "../../configs/pgproxy.yaml" and "other.yaml"`}},
		{args: []string{"check", example, "other.yaml"}, code: 2, stderr: []string{"unexpected arguments", "give one config file"}},
		{args: []string{"check", "/nonexistent/pgproxy.yaml"}, code: 1, stderr: []string{"/nonexistent/pgproxy.yaml: no such file"}},
		{args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`, "commands:"}},
		{args: []string{"--help"}, code: 0, stdout: []string{
			"commands:", "  serve ", "  check ", "  demo ", "  version ",
			"--config file", "--routing.max_lag duration", "--limits.max_sessions int", "--backends list", "--listen list", "docs/configuration.md",
		}},
		{args: []string{"check", "-h"}, code: 0, stdout: []string{"commands:", "--health.interval duration"}},
		{args: []string{"help"}, code: 0, stdout: []string{"commands:"}},
		{args: []string{"demo", "--help"}, code: 0, stdout: []string{"--bind", "--write-port"}},
		{args: []string{"demo", "--bogus"}, code: 2, stderr: []string{"pgproxy demo: unknown flag: --bogus"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tc.args, []string{"PGPROXY_HEALTH_PASSWORD=x"}, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out.String(), errb.String())
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
			if tc.noStdout && out.Len() > 0 {
				t.Errorf("stdout not empty:\n%s", out.String())
			}
		})
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
