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
//
// With all, the whole machine is recorded (t may be the direct target) and
// the report is by process name: what PostgreSQL, pgbench and the relay
// each spend, in the kernel and outside it.
func perfProfile(ctx context.Context, pgbench string, env []string, c Case, t target, dso string, d time.Duration, dir string, all bool) (string, error) {
	data := filepath.Join(dir, "perf-"+t.name+".data")
	secs := strconv.FormatFloat(d.Seconds(), 'f', 1, 64)
	who := []string{"-p", strconv.Itoa(t.pid)}
	if all {
		who = []string{"-a"}
	}
	if _, err := duringPgbench(ctx, pgbench, env, c, t, d, func() ([]byte, error) {
		return command(ctx, env, "perf", append(append([]string{"record", "-F", "999", "-g"}, who...), "-o", data, "--", "sleep", secs)...)
	}); err != nil {
		return "", fmt.Errorf("perf record: %w", err)
	}
	var b strings.Builder
	reports := []perfReport{
		{"self time by object (kernel = syscalls, scheduling, TCP loopback)", []string{"--no-children", "--sort", "dso", "--percent-limit", "0.5"}, 8},
		{"inclusive time by symbol (callers include callees)", []string{"--children", "--sort", "symbol", "--percent-limit", "4"}, 40},
		{"self time inside " + dso, []string{"--no-children", "--sort", "symbol", "--dsos", dso, "--percent-limit", "0.3"}, 25},
	}
	if all {
		reports = []perfReport{
			{"samples by process and object", []string{"--no-children", "--sort", "comm,dso", "--percent-limit", "0.5"}, 14},
			{"postgres: self time by symbol", []string{"--no-children", "--comms", "postgres", "--sort", "sym", "--percent-limit", "0.4"}, 30},
		}
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

// traceSyscalls are the system calls syscallProfile counts one by one
// (the relays here make no others per query); the rest is reported as one.
var traceSyscalls = []string{"read", "write", "recvfrom", "sendto", "recvmsg", "sendmsg",
	"epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "nanosleep", "sched_yield", "getpid", "tgkill", "madvise"}

// duringPgbench runs pgbench with case c through t for d and a bit more,
// and measure a second into it (past connection setup); it returns the
// pgbench result, or an error naming which of the two failed.
func duringPgbench(ctx context.Context, pgbench string, env []string, c Case, t target, d time.Duration, measure func() ([]byte, error)) (Result, error) {
	var wg sync.WaitGroup
	var res Result
	var benchErr error
	var benchOut []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		rctx, cancel := context.WithTimeout(ctx, d+time.Minute)
		defer cancel()
		res, benchOut, benchErr = runPgbench(rctx, pgbench, c.Args(t.port, t.user, "postgres", d+2*time.Second), t.env(env))
	}()
	time.Sleep(time.Second)
	out, err := measure()
	wg.Wait()
	if err != nil {
		return res, fmt.Errorf("%w: %s", err, lastLines(out, 3))
	}
	if benchErr != nil {
		return res, fmt.Errorf("pgbench meanwhile: %w: %s", benchErr, lastLines(benchOut, 3))
	}
	return res, nil
}

// perfReport is one `perf report` of a profile: its title, arguments and
// how many lines of it to keep.
type perfReport struct {
	title string
	args  []string
	limit int
}

// syscallProfile counts a relay's system calls with `perf stat` on the
// syscall tracepoints (counted in the kernel: nothing is lost, unlike
// perf trace) while pgbench runs case c through it, and returns them per
// transaction. The count covers d of the run; its transactions are
// estimated from the run's TPS.
func syscallProfile(ctx context.Context, pgbench string, env []string, c Case, t target, d time.Duration) (string, error) {
	args := []string{"stat", "-x", ",", "-e", "raw_syscalls:sys_enter"}
	for _, n := range traceSyscalls {
		args = append(args, "-e", "syscalls:sys_enter_"+n)
	}
	args = append(args, "-p", strconv.Itoa(t.pid), "--", "sleep", strconv.FormatFloat(d.Seconds(), 'f', 1, 64))
	var out []byte
	res, err := duringPgbench(ctx, pgbench, env, c, t, d, func() (b []byte, err error) {
		out, err = command(ctx, env, "perf", args...)
		return out, err
	})
	if err != nil {
		return "", fmt.Errorf("perf stat: %w", err)
	}
	tx := res.TPS * d.Seconds()
	if tx <= 0 {
		return "", fmt.Errorf("perf stat: no transactions")
	}
	counts := parseStatCounts(out)
	var b strings.Builder
	fmt.Fprintf(&b, "## %s, `%s`: system calls per transaction (perf stat on syscall tracepoints, %s, %.0f tps)\n", t.name, c.Name(), d, res.TPS)
	all, named := counts["raw_syscalls:sys_enter"], 0.0
	fmt.Fprintf(&b, "%-12s %6.2f\n", "all", all/tx)
	for _, n := range traceSyscalls {
		k := counts["syscalls:sys_enter_"+n]
		named += k
		if k/tx >= 0.005 {
			fmt.Fprintf(&b, "%-12s %6.2f\n", n, k/tx)
		}
	}
	fmt.Fprintf(&b, "%-12s %6.2f\n", "others", (all-named)/tx)
	return strings.TrimRight(b.String(), "\n"), nil
}

// parseStatCounts reads `perf stat -x ,` output: count,unit,event,...
func parseStatCounts(out []byte) map[string]float64 {
	m := map[string]float64{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Split(l, ",")
		if len(f) < 3 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			m[f[2]] += v
		}
	}
	return m
}
