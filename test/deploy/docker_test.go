package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// dockerfileStage is one FROM ... stage of the Dockerfile.
type dockerfileStage struct {
	from, name string
	lines      []string // instructions, continuation lines joined
}

func dockerfileStages(t *testing.T) []dockerfileStage {
	t.Helper()
	f, err := os.Open(repoPath(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []dockerfileStage
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		ins := cur.String()
		cur.Reset()
		fields := strings.Fields(ins)
		if strings.EqualFold(fields[0], "FROM") {
			st := dockerfileStage{from: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %q before FROM", ins)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, ins)
	}
	return stages
}

// TestDockerfile checks what can be checked without a Docker engine: a
// cgo build stage that builds both commands, a small runtime stage that
// runs as a non-root user, and COPY sources that exist and are not
// excluded by .dockerignore.
func TestDockerfile(t *testing.T) {
	stages := dockerfileStages(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, have %d stages", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26-*", build.from)
	}
	all := strings.Join(build.lines, "\n")
	for _, want := range []string{"./cmd/pgproxy", "./cmd/metabase-provision", "CGO_ENABLED=1", "internal/buildinfo.Version"} {
		if !strings.Contains(all, want) {
			t.Errorf("build stage does not mention %s", want)
		}
	}
	if !strings.HasPrefix(final.from, "debian:bookworm-slim") && !strings.HasPrefix(final.from, "gcr.io/distroless/base") {
		t.Errorf("runtime FROM %s: want debian:bookworm-slim or distroless/base (glibc for cgo)", final.from)
	}
	user := ""
	var entry string
	ignore := readDockerignore(t)
	for _, st := range stages {
		for _, ins := range st.lines {
			f := strings.Fields(ins)
			switch strings.ToUpper(f[0]) {
			case "USER":
				if st.from == final.from {
					user = f[1]
				}
			case "ENTRYPOINT":
				if st.from == final.from {
					entry = strings.TrimSpace(strings.TrimPrefix(ins, f[0]))
				}
			case "COPY":
				var srcs []string
				fromStage := false
				for _, a := range f[1 : len(f)-1] {
					if strings.HasPrefix(a, "--from=") {
						fromStage = true
					}
					if !strings.HasPrefix(a, "--") {
						srcs = append(srcs, a)
					}
				}
				if fromStage {
					continue
				}
				for _, s := range srcs {
					if s == "." {
						continue
					}
					if _, err := os.Stat(repoPath(t, s)); err != nil {
						t.Errorf("COPY %s: %v", s, err)
					}
					if ignore.excluded(s) {
						t.Errorf("COPY %s: excluded by .dockerignore", s)
					}
				}
			}
		}
	}
	if uid, _, _ := strings.Cut(user, ":"); user == "" || uid == "0" || uid == "root" {
		t.Errorf("runtime USER %q: want a non-root user", user)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entry), &ep); err != nil || len(ep) == 0 || !strings.HasSuffix(ep[0], "/pgproxy") {
		t.Errorf("ENTRYPOINT %s: want the exec form running pgproxy", entry)
	}
}

// dockerignore holds .dockerignore patterns in order (last match wins, !
// re-includes), as Docker applies them.
type dockerignore []struct {
	pattern string
	include bool
}

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		inc := strings.HasPrefix(line, "!")
		line = strings.Trim(strings.TrimPrefix(line, "!"), "/")
		d = append(d, struct {
			pattern string
			include bool
		}{path.Clean(line), inc})
	}
	return d
}

// excluded reports whether the slash path rel (relative to the context) is
// left out of the build context.
func (d dockerignore) excluded(rel string) bool {
	rel = path.Clean(filepath.ToSlash(rel))
	out := false
	for _, p := range d {
		if matchIgnore(p.pattern, rel) {
			out = !p.include
		}
	}
	return out
}

// matchIgnore matches a pattern against rel or any of its parent
// directories; "**/" matches any number of leading directories.
func matchIgnore(pattern, rel string) bool {
	parts := strings.Split(rel, "/")
	for i := 1; i <= len(parts); i++ {
		prefix := strings.Join(parts[:i], "/")
		if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
			for j := 0; j < i; j++ {
				if m, _ := path.Match(rest, strings.Join(parts[j:i], "/")); m {
					return true
				}
			}
			continue
		}
		if m, _ := path.Match(pattern, prefix); m {
			return true
		}
	}
	return false
}

func TestDockerignoreMatcher(t *testing.T) {
	d := dockerignore{{"test", false}, {"test/pgcluster", true}, {"**/*_test.go", false}, {"docs", false}}
	for rel, want := range map[string]bool{
		"test/e2e/main_test.go":       true,
		"test/pgcluster/pgcluster.go": false,
		"test/pgcluster/x_test.go":    true,
		"proxy/proxy_test.go":         true,
		"proxy/server.go":             false,
		"docs/operations.md":          true,
		"docsx/a":                     false,
		"go.mod":                      false,
	} {
		if got := d.excluded(rel); got != want {
			t.Errorf("excluded(%s) = %v, want %v", rel, got, want)
		}
	}
}

// TestDockerContextHasSources: every file `go build` needs for the two
// commands (Go and cgo sources, embedded files, go.mod, go.sum) is in the
// build context.
func TestDockerContextHasSources(t *testing.T) {
	goBin := tool(t, "go")
	out, err := run(t, root(t), nil, goBin, "list", "-e", "-deps", "-f",
		`{{if .Module}}{{if eq .Module.Path "github.com/ofitec/pgproxy"}}{{.Dir}}|{{join .GoFiles ","}}|{{join .CgoFiles ","}}|{{join .EmbedFiles ","}}{{end}}{{end}}`,
		"./cmd/pgproxy", "./cmd/metabase-provision")
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	ignore := readDockerignore(t)
	files := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		if len(parts) != 4 {
			continue
		}
		rel, err := filepath.Rel(root(t), parts[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, list := range parts[1:] {
			for _, f := range strings.Split(list, ",") {
				if f != "" {
					files = append(files, filepath.ToSlash(filepath.Join(rel, f)))
				}
			}
		}
	}
	if len(files) < 20 {
		t.Fatalf("go list found only %d files: %s", len(files), out)
	}
	for _, f := range files {
		if ignore.excluded(f) {
			t.Errorf("%s is needed to build the commands but .dockerignore excludes it", f)
		}
	}
}
