// Package deploy checks the operations files against the tools that read
// them and against a live proxy: Prometheus rules and their unit tests
// (promtool), the docker-compose file (docker-compose config, which parses
// without an engine), the Kubernetes manifests, the Dockerfile and
// .dockerignore, the Grafana dashboard, and a live /metrics (promtool check
// metrics, the metric names of CONFIG.md, and every pgproxy_* name the
// alerts and the dashboard use).
//
// Tools missing: the test skips with a message, unless CI=true, where it
// fails (.ci/run installs prometheus and docker-compose).
package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(pgcluster.MainNoLeaks(m, pgcluster.Options{Replicas: 1}, &cluster))
}

// root is the repository root.
func root(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// repoPath is a path inside the repository.
func repoPath(t testing.TB, rel ...string) string {
	t.Helper()
	return filepath.Join(append([]string{root(t)}, rel...)...)
}

// tool returns the path of an external program, skipping the test when it
// is missing (failing it in CI).
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI (apt-get install %s): %v", name, debPackage(name), err)
		}
		t.Skipf("%s not installed (apt-get install %s); skipping", name, debPackage(name))
	}
	return p
}

func debPackage(tool string) string {
	if tool == "promtool" {
		return "prometheus"
	}
	return tool
}

// run runs a program with a deadline and returns its combined output and
// error.
func run(t testing.TB, dir string, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}
