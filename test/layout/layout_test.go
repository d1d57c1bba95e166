// Package layout keeps the package arrows of ARCHITECTURE.md honest: every
// import in production code runs down the house (cmd → app → proxy →
// router → health → leaves), nothing outside test/ imports test code, and
// the binaries link no "testing".
package layout

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/ofitec/pgproxy"

// layers ranks each package tree of the module: production code may import
// only packages of a strictly lower rank. A new package must be placed here
// (the test fails until it is), which is the point: its place in the house
// is a decision, not an accident. The longest matching prefix wins.
var layers = map[string]int{
	// leaves: import nothing of the project
	"internal/pgerr":     0,
	"internal/buildinfo": 0,
	"internal/sqlscan":   0,
	"internal/glob":      0,
	"internal/pgcluster": 0,
	"internal/pgwire":    1, // over pgerr
	"internal/pgauth":    2, // over pgwire, pgerr
	"configs":            0,
	"deploy/demo":        0,

	"health":              1,
	"lineage":             1,
	"lineage/lineagetest": 2,
	"router":              2,
	"masking":             2, // rules, column resolver, rewriters, refusal analysis (pg_query, pgx)

	"pool":  3, // server connections; knows no wire protocol
	"proxy": 4,

	"app/admin": 6,
	"app":       7,

	"cmd/metabase-provision/internal/metabase": 1,
	"cmd": 9,

	"test": 10,
}

func rank(t *testing.T, pkg string) (string, int) {
	rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
	best, r := "", -1
	for prefix, n := range layers {
		if (rel == prefix || strings.HasPrefix(rel, prefix+"/")) && len(prefix) > len(best) {
			best, r = prefix, n
		}
	}
	if r < 0 {
		t.Errorf("package %s has no place in test/layout's layers: add it at the rank it belongs to", rel)
	}
	return best, r
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	_, file, _, _ := runtime.Caller(0)
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func TestImportsRunDown(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...") {
		fields := strings.Fields(line)
		pkg := fields[0]
		from, r := rank(t, pkg)
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			to, ri := rank(t, imp)
			if r < 0 || ri < 0 {
				continue
			}
			if from == "test" {
				continue // integration tests may use anything
			}
			if to == "test" {
				t.Errorf("%s imports test code (%s): production packages must not", pkg, imp)
				continue
			}
			if ri >= r && from != to {
				t.Errorf("%s (rank %d, %s) imports %s (rank %d, %s): imports must run down", pkg, r, from, imp, ri, to)
			}
		}
	}
}

// TestBinariesLinkNoTestCode: the shipped commands carry no test harness.
func TestBinariesLinkNoTestCode(t *testing.T) {
	for _, cmd := range []string{"./cmd/pgproxy", "./cmd/metabase-provision"} {
		for _, dep := range goList(t, "-deps", cmd) {
			if dep == "testing" || strings.HasPrefix(dep, module+"/test/") {
				t.Errorf("%s links %s", cmd, dep)
			}
		}
	}
}

// TestRankMatchesLongestPrefix guards the helper the other tests rely on.
func TestRankMatchesLongestPrefix(t *testing.T) {
	for pkg, want := range map[string]string{
		module + "/app":                 "app",
		module + "/app/admin":           "app/admin",
		module + "/lineage/lineagetest": "lineage/lineagetest",
		module + "/cmd/pgproxy":         "cmd",
		module + "/test/pgcluster":      "test",
		module + "/internal/sqlscan":    "internal/sqlscan",
	} {
		if got, _ := rank(t, pkg); got != want {
			t.Errorf("rank(%s) = %s, want %s", pkg, got, want)
		}
	}
}
