package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// perfProfile samples a relay with `perf record -g` while pgbench runs case
// c through it, and returns the top of `perf report` (self time by object,
// inclusive by symbol, self inside the binary named dso).
func perfProfile(ctx context.Context, pgbench string, env []string, c Case, t target, dso string, d time.Duration, dir string) (string, error) {
	pid, port := t.pid, t.port
	data := filepath.Join(dir, "perf-"+t.name+".data")
	var wg sync.WaitGroup
	var benchErr error
	var benchOut []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		rctx, cancel := context.WithTimeout(ctx, d+time.Minute)
		defer cancel()
		_, benchOut, benchErr = runPgbench(rctx, pgbench, c.Args(port, "postgres", d+2*time.Second), env)
	}()
	time.Sleep(time.Second) // past connection setup
	secs := strconv.FormatFloat(d.Seconds(), 'f', 1, 64)
	out, err := command(ctx, env, "perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", data, "--", "sleep", secs)
	wg.Wait()
	if err != nil {
		return "", fmt.Errorf("perf record: %w: %s", err, lastLines(out, 3))
	}
	if benchErr != nil {
		return "", fmt.Errorf("pgbench during perf: %w: %s", benchErr, lastLines(benchOut, 3))
	}
	var b strings.Builder
	reports := []struct {
		title string
		args  []string
		limit int
	}{
		{"self time by object (kernel = syscalls, scheduling, TCP loopback)", []string{"--no-children", "--sort", "dso", "--percent-limit", "0.5"}, 8},
		{"inclusive time by symbol (callers include callees)", []string{"--children", "--sort", "symbol", "--percent-limit", "4"}, 40},
		{"self time inside " + dso, []string{"--no-children", "--sort", "symbol", "--dsos", dso, "--percent-limit", "0.3"}, 25},
	}
	for _, r := range reports {
		args := append([]string{"report", "-i", data, "--stdio", "-g", "none"}, r.args...)
		out, err := command(ctx, env, "perf", args...)
		if err != nil {
			return "", fmt.Errorf("perf report: %w: %s", err, lastLines(out, 3))
		}
		fmt.Fprintf(&b, "## %s, `%s`, %s: perf report %s\n", t.name, c.Name(), r.title, strings.Join(r.args, " "))
		n := 0
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
				continue
			}
			b.WriteString(strings.TrimRight(l, " -") + "\n")
			if n++; n == r.limit {
				break
			}
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n"), nil
}
