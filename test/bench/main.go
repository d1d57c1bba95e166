// Command bench is `make bench`: pgbench `-S` against a replica directly,
// through PgBouncer (session mode) and through pgproxy (a separate
// `bin/pgproxy serve` process on its read listener), interleaved over
// several rounds, reporting medians of TPS and latency, the relays' CPU
// seconds per 100 000 queries (from /proc/PID/stat around each run), and
// pgproxy's RSS per idle session. It prints a markdown table and writes
// docs/benchmarks.md.
//
//	go run ./test/bench [-duration 10s] [-rounds 3] [-quick] [-perf 10s] [-out docs/benchmarks.md]
//
// Every process it starts (the cluster, pgproxy, PgBouncer, pgbench) is
// stopped by PID when it returns, on error, and on SIGINT/SIGTERM/SIGHUP; a
// SIGKILLed bench leaves nothing behind either (Pdeathsig, and the
// pgcluster watchdog). It is not part of `make test`: numbers are only
// meaningful on a quiet machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

type options struct {
	duration   time.Duration
	rounds     int
	scale      int
	quick      bool
	clients    []int
	modes      []string
	connectC   []int
	idle       int
	perf       time.Duration
	perfC      bool // profile the -C case instead of -c 16
	syscalls   time.Duration
	perfAll    bool // perf record the whole machine, not the relay
	perfMode   string
	perfCli    int
	out        string
	pgproxy    string
	pgbin      string
	pgbouncer  string
	proxyEnv   []string // extra environment of the pgproxy process (GOMAXPROCS=1)
	gomaxprocs int      // pgproxy's runtime.gomaxprocs (0: its default)
	compare    string   // a second pgproxy binary, measured as target "pgproxy-B" (A/B of a change in one run)
	compareEnv []string
	note       string // free text for the report
	hold       string // -hold: write the setup here and wait
	args       []string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if err := bench(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{args: args}
	var clients, modes, connectC, proxyEnv, compareEnv string
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "pgbench -T of each run")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds (every target once per case per round); medians are reported")
	fs.IntVar(&o.scale, "scale", 10, "pgbench -i scale")
	fs.BoolVar(&o.quick, "quick", false, "smoke run of about a minute: 1 round of 2 s runs, scale 1")
	fs.StringVar(&clients, "clients", "1,16,64", "pgbench -c values")
	fs.StringVar(&modes, "modes", "simple,extended,prepared", "pgbench -M values")
	fs.StringVar(&connectC, "connect-clients", "1,16", "pgbench -c values of the -C runs (-M simple); empty for none")
	fs.IntVar(&o.idle, "idle", 1000, "idle sessions opened to measure pgproxy's RSS per session; 0 skips")
	fs.DurationVar(&o.perf, "perf", 0, "if > 0: also profile each relay with `perf record -g` during a run of this length (-M simple -c 16 unless -perf-mode, -perf-clients)")
	fs.DurationVar(&o.syscalls, "syscalls", 0, "if > 0: also count each relay's system calls per transaction (perf stat on the syscall tracepoints) during a run of this length (-M simple -c 16 unless -perf-mode, -perf-clients; -perf-connect: with -C)")
	fs.StringVar(&o.perfMode, "perf-mode", "simple", "pgbench -M of the -perf and -syscalls runs")
	fs.IntVar(&o.perfCli, "perf-clients", 16, "pgbench -c of the -perf and -syscalls runs")
	fs.BoolVar(&o.perfAll, "perf-all", false, "with -perf: record the whole machine (perf record -a) and report by process name, to see what PostgreSQL and pgbench spend behind each relay")
	fs.BoolVar(&o.perfC, "perf-connect", false, "with -perf: profile -M simple -c 16 -C (a connection per transaction) instead")
	fs.StringVar(&o.out, "out", "docs/benchmarks.md", "markdown report to write; empty: stdout only")
	fs.StringVar(&o.pgproxy, "pgproxy", "bin/pgproxy", "pgproxy binary (make bench builds it)")
	fs.StringVar(&o.pgbin, "pgbin", "/usr/lib/postgresql/15/bin", "directory of pgbench and the server binaries")
	fs.StringVar(&o.pgbouncer, "pgbouncer", "/usr/sbin/pgbouncer", "PgBouncer binary")
	fs.StringVar(&o.hold, "hold", "", "after the warm-up, write the targets' ports and PIDs (KEY=value lines) to this file and wait for a signal instead of running the cases: the same setup, to instrument by hand")
	fs.StringVar(&o.note, "note", "", "free text added to the report's Run section (e.g. what else ran on the machine)")
	fs.StringVar(&proxyEnv, "pgproxy-env", "", "comma-separated KEY=value added to pgproxy's environment (e.g. GOMAXPROCS=1)")
	fs.IntVar(&o.gomaxprocs, "gomaxprocs", 0, "pgproxy's runtime.gomaxprocs; 0 = pgproxy's default (half the CPUs, at least 1). A/B against another thread count with -compare bin/pgproxy -compare-env GOMAXPROCS=2")
	fs.StringVar(&o.compare, "compare", "", "a second pgproxy binary (e.g. built from the parent commit), measured as an extra target \"pgproxy-B\" in every round; adds an A/B table")
	fs.StringVar(&compareEnv, "compare-env", "", "comma-separated KEY=value added to pgproxy-B's environment (with -compare). pgproxy-B runs without runtime.gomaxprocs, so `-compare bin/pgproxy` alone compares -gomaxprocs with pgproxy's default; PGPROXY_RUNTIME_EVENT_LOOPS=-1 compares the goroutine relay")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["duration"] {
			o.duration = 2 * time.Second
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["scale"] {
			o.scale = 1
		}
	}
	var err error
	if o.proxyEnv, err = envList(proxyEnv); err != nil {
		return nil, fmt.Errorf("-pgproxy-env: %w", err)
	}
	if o.compareEnv, err = envList(compareEnv); err != nil {
		return nil, fmt.Errorf("-compare-env: %w", err)
	}
	if len(o.compareEnv) > 0 && o.compare == "" {
		return nil, errors.New("-compare-env needs -compare")
	}
	if o.clients, err = ints(clients); err != nil {
		return nil, fmt.Errorf("-clients: %w", err)
	}
	if o.connectC, err = ints(connectC); err != nil {
		return nil, fmt.Errorf("-connect-clients: %w", err)
	}
	for _, m := range strings.Split(modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case "simple", "extended", "prepared":
			o.modes = append(o.modes, m)
		default:
			return nil, fmt.Errorf("-modes: unknown pgbench -M %q", m)
		}
	}
	if o.gomaxprocs < 0 {
		return nil, errors.New("-gomaxprocs must be >= 0")
	}
	if o.rounds < 1 || o.duration < time.Second || o.scale < 1 {
		return nil, errors.New("-rounds and -scale must be >= 1, -duration >= 1s")
	}
	return o, nil
}

func envList(s string) ([]string, error) {
	var out []string
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=value", kv)
		}
		out = append(out, kv)
	}
	return out, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (o *options) cases() []Case {
	var cs []Case
	for _, c := range o.clients {
		for _, m := range o.modes {
			cs = append(cs, Case{Mode: m, Clients: c})
		}
	}
	for _, c := range o.connectC {
		cs = append(cs, Case{Mode: "simple", Clients: c, Connect: true})
	}
	return cs
}

type target struct {
	name string
	port int
	pid  int // measured for CPU; 0 for direct
}

func bench(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	pgbench := filepath.Join(o.pgbin, "pgbench")
	if _, err := os.Stat(o.pgproxy); err != nil {
		return fmt.Errorf("pgproxy binary: %w (run `make build` first, or `make bench`)", err)
	}
	cases := o.cases()
	ntargets := 3
	if o.compare != "" {
		ntargets++
	}
	est := time.Duration(o.rounds*len(cases)*ntargets)*(o.duration+time.Second) + 5*time.Minute + 2*o.perf + 2*o.syscalls
	if o.hold != "" {
		est = 12 * time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, 2*est)
	defer cancel()
	logf("bench: %d cases × %d targets × %d rounds of %s (about %s)", len(cases), ntargets, o.rounds, o.duration, est.Round(time.Minute))

	dir, err := os.MkdirTemp("", "pgproxy-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}

	logf("bench: starting primary + 1 replica (max_connections 1100)")
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	cluster, err := pgcluster.Start(sctx, pgcluster.Options{
		Replicas:       1,
		MaxConnections: 1100,
		BinDir:         o.pgbin,
		ExtraConf:      []string{"shared_buffers = '256MB'"},
	})
	scancel()
	if err != nil {
		return err
	}
	defer cluster.Close()
	primary, replica := cluster.Primary(), cluster.Replicas()[0]

	env := append(os.Environ(), "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	logf("bench: pgbench -i -s %d on the primary", o.scale)
	initArgs := []string{"-i", "-q", "-s", strconv.Itoa(o.scale), "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres", "postgres"}
	if out, err := command(ctx, env, pgbench, initArgs...); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	err = cluster.WaitReplicasCaughtUp(wctx)
	wcancel()
	if err != nil {
		return err
	}

	proxy, proxyPort, err := startPgproxy(ctx, o.pgproxy, o.proxyEnv, o.gomaxprocs, dir, cluster)
	if err != nil {
		return err
	}
	defer proxy.stop()
	logf("bench: pgproxy pid %d on 127.0.0.1:%d (read listener)", proxy.pid, proxyPort)

	targets := []target{{name: Direct, port: replica.Port}}
	bouncerNote := ""
	if bin, note := findPgbouncer(ctx, o.pgbouncer, logf); bin != "" {
		pb, port, err := startPgbouncer(ctx, bin, dir, replica)
		if err != nil {
			bouncerNote = fmt.Sprintf("PgBouncer did not start (%v); its column is empty.", firstLine(err))
			logf("bench: %s", bouncerNote)
		} else {
			defer pb.stop()
			logf("bench: PgBouncer pid %d on 127.0.0.1:%d (session mode)", pb.pid, port)
			targets = append(targets, target{name: PgBouncer, port: port, pid: pb.pid})
		}
	} else {
		bouncerNote = note
		logf("bench: %s", note)
	}
	targets = append(targets, target{name: Pgproxy, port: proxyPort, pid: proxy.pid})
	if o.compare != "" {
		dirB := filepath.Join(dir, "b")
		if err := os.MkdirAll(dirB, 0o755); err != nil {
			return err
		}
		pbB, portB, err := startPgproxy(ctx, o.compare, o.compareEnv, 0, dirB, cluster)
		if err != nil {
			return fmt.Errorf("-compare: %w", err)
		}
		defer pbB.stop()
		logf("bench: pgproxy-B (%s) pid %d on 127.0.0.1:%d", o.compare, pbB.pid, portB)
		targets = append(targets, target{name: PgproxyB, port: portB, pid: pbB.pid})
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}

	var idle *IdleResult
	if o.idle > 0 {
		logf("bench: opening %d idle sessions through pgproxy", o.idle)
		r, err := measureIdle(ctx, proxy.pid, proxyPort, o.idle)
		if err != nil {
			logf("bench: idle sessions: %v", err)
		} else {
			idle = &r
			logf("bench: pgproxy RSS %d KiB → %d KiB with %d idle sessions: %.1f KiB per session", r.BeforeKiB, r.WithKiB, r.Sessions, r.PerSessionKiB())
		}
		time.Sleep(time.Second) // let the sessions end on the server side
	}

	tick := clockTick()
	postmaster, err := postmasterPID(replica.DataDir)
	if err != nil {
		return err
	}
	logf("bench: warm-up")
	for _, t := range targets {
		w := Case{Mode: "simple", Clients: 2}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, out, err := runPgbench(wctx, pgbench, w.Args(t.port, "postgres", 2*time.Second), env)
		wcancel()
		if err != nil {
			logf("bench: warm-up through %s failed (its runs will show it): %v %s", t.name, firstLine(err), lastLines(out, 3))
		}
	}

	if o.hold != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "postmaster=%d\nreplica_data=%s\n", postmaster, replica.DataDir)
		for _, t := range targets {
			key := strings.ToLower(strings.ReplaceAll(t.name, "-", "_"))
			fmt.Fprintf(&b, "%s_port=%d\n%s_pid=%d\n", key, t.port, key, t.pid)
		}
		if err := os.WriteFile(o.hold, []byte(b.String()), 0o644); err != nil {
			return err
		}
		logf("bench: holding (setup in %s); send SIGINT to stop", o.hold)
		<-ctx.Done()
		return nil
	}
	table := newTable(cases, names)
	var load [2]string
	load[0] = loadAvg()
	for round := 0; round < o.rounds; round++ {
		for ci, c := range cases {
			// Rotate the order so no target always runs first (or right after another).
			for k := range targets {
				t := targets[(k+round+ci)%len(targets)]
				s, err := measure(ctx, pgbench, env, c, t, o.duration, tick, postmaster)
				if ctx.Err() != nil {
					return fmt.Errorf("stopped: %w", ctx.Err())
				}
				table.add(c, t.name, s)
				if err != nil {
					logf("round %d/%d %-26s %-9s  error: %v", round+1, o.rounds, c.Name(), t.name, firstLine(err))
					continue
				}
				cpu := ""
				if s.HasCPU && s.Processed > 0 {
					cpu = fmt.Sprintf("  cpu %.2f s/100k  %.2f cs/q", s.CPU.Seconds()/float64(s.Processed)*100000, float64(s.Switches)/float64(s.Processed))
				}
				logf("round %d/%d %-26s %-9s %9.0f tps  %7.3f ms  failed %d%s", round+1, o.rounds, c.Name(), t.name, s.TPS, s.LatencyMS, s.Failed, cpu)
			}
		}
	}

	load[1] = loadAvg()

	var profile string
	if o.perf > 0 {
		var parts []string
		pc := Case{Mode: o.perfMode, Clients: o.perfCli, Connect: o.perfC}
		for _, t := range targets {
			if t.pid == 0 && !o.perfAll {
				continue
			}
			logf("bench: perf record on %s for %s (%s)", t.name, o.perf, pc.Name())
			p, err := perfProfile(ctx, pgbench, env, pc, t, filepath.Base(procExe(t.pid)), o.perf, dir, o.perfAll)
			if err != nil {
				logf("bench: perf: %v", err)
				p = t.name + ": perf failed: " + firstLine(err)
			}
			parts = append(parts, p)
		}
		profile = strings.Join(parts, "\n\n")
	}
	if o.syscalls > 0 {
		parts := []string{}
		if profile != "" {
			parts = append(parts, profile)
		}
		pc := Case{Mode: o.perfMode, Clients: o.perfCli, Connect: o.perfC}
		for _, t := range targets {
			if t.pid == 0 {
				continue
			}
			logf("bench: counting system calls of %s for %s (%s)", t.name, o.syscalls, pc.Name())
			p, err := syscallProfile(ctx, pgbench, env, pc, t, o.syscalls)
			if err != nil {
				logf("bench: perf trace: %v", err)
				p = t.name + ": perf trace failed: " + firstLine(err)
			}
			logf("%s", p)
			parts = append(parts, p)
		}
		profile = strings.Join(parts, "\n\n")
	}

	md := table.Markdown() + "\n" + table.MachineMarkdown()
	if o.compare != "" {
		md += "\n" + table.CompareMarkdown(o.compare, o.compareEnv)
	}
	checks := checksMarkdown(table.Checks(idle))
	fmt.Fprintf(stdout, "\n%s\n%s", md, checks)
	if idle != nil {
		fmt.Fprintf(stdout, "\npgproxy idle sessions: %d, RSS %d → %d KiB, %.1f KiB per session\n", idle.Sessions, idle.BeforeKiB, idle.WithKiB, idle.PerSessionKiB())
	}
	if profile != "" {
		fmt.Fprintf(stdout, "\n%s\n", profile)
	}
	if o.out == "" {
		return nil
	}
	doc := renderDoc(docInput{
		Machine: machine(ctx, o),
		Command: commandLine(o),
		Date:    time.Now().UTC(),
		Options: o,
		Table:   md,
		Checks:  checks,
		Idle:    idle,
		Note:    bouncerNote,
		Profile: profile,
		LoadAvg: load,
	})
	if err := os.WriteFile(o.out, []byte(doc), 0o644); err != nil {
		return err
	}
	logf("bench: wrote %s", o.out)
	return nil
}

// measure runs one case against one target, reading the target's CPU time
// just before and just after.
func measure(ctx context.Context, pgbench string, env []string, c Case, t target, d time.Duration, tick time.Duration, postmaster int) (Sample, error) {
	var s Sample
	var before time.Duration
	var swBefore int64
	machBefore, machErr := machineCPU(tick)
	csBefore, csErr := machineSwitches()
	pgBefore, pgErr := procTreeCPU(postmaster, tick)
	if t.pid > 0 {
		b, err := procCPU(t.pid, tick)
		if err != nil {
			s.Err = err
			return s, err
		}
		before = b
		if swBefore, err = procSwitches(t.pid); err != nil {
			s.Err = err
			return s, err
		}
	}
	// A relay that hangs a session must not hang the bench: the run is
	// killed a minute after its -T and recorded without a summary.
	rctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	r, out, err := runPgbench(rctx, pgbench, c.Args(t.port, "postgres", d), env)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			err = fmt.Errorf("pgbench still running a minute after -T %s: killed (a hung session?)", d)
		}
		s.Err = fmt.Errorf("%w\n%s", err, lastLines(out, 5))
		return s, s.Err
	}
	s.Result = r
	// The backends exit after pgbench disconnects; their CPU reaches the
	// postmaster's cutime/cstime when it has reaped them.
	time.Sleep(300 * time.Millisecond)
	machAfter, err1 := machineCPU(tick)
	csAfter, err3 := machineSwitches()
	pgAfter, err2 := procTreeCPU(postmaster, tick)
	if err1 == nil && machErr == nil && err2 == nil && pgErr == nil && err3 == nil && csErr == nil {
		s.Machine, s.Server, s.HasMachine = machAfter-machBefore, pgAfter-pgBefore, true
		s.MachineSwitches = csAfter - csBefore
	}
	if t.pid > 0 {
		after, err := procCPU(t.pid, tick)
		if err != nil {
			s.Err = err
			return s, err
		}
		s.CPU, s.HasCPU = after-before, true
		sw, err := procSwitches(t.pid)
		if err != nil {
			s.Err = err
			return s, err
		}
		s.Switches = sw - swBefore
	}
	if r.Aborted {
		return s, fmt.Errorf("pgbench exited non-zero (%d processed, %d failed): %s", r.Processed, r.Failed, lastLines(out, 3))
	}
	return s, nil
}

// findPgbouncer returns the PgBouncer binary, installing the Debian package
// when it is missing and we are root; "" and the reason otherwise.
func findPgbouncer(ctx context.Context, bin string, logf func(string, ...any)) (string, string) {
	if _, err := os.Stat(bin); err == nil {
		return bin, ""
	}
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, ""
	}
	if os.Geteuid() != 0 {
		return "", "PgBouncer is not installed and the bench is not root (cannot apt-get install pgbouncer): its column is skipped."
	}
	logf("bench: installing pgbouncer (apt-get)")
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := command(ctx, env, "apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"); err != nil {
		return "", fmt.Sprintf("apt-get install pgbouncer failed (%v): its column is skipped. %s", err, lastLines(out, 2))
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, ""
	}
	return "", "pgbouncer is still missing after apt-get install: its column is skipped."
}

func command(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// procExe is the path of pid's executable ("" when unreadable).
func procExe(pid int) string {
	p, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return p
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " / ")
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// commandLine is how this run was invoked.
func commandLine(o *options) string {
	s := "go run ./test/bench"
	for _, a := range o.args {
		if a == "" || strings.ContainsAny(a, " '\"$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		s += " " + a
	}
	if os.Getenv("MAKELEVEL") != "" && len(o.args) == 0 {
		return "make bench  (= make build && go run ./test/bench)"
	}
	return s
}

// Machine describes where the numbers come from.
type Machine struct {
	CPUs, Model, Kernel, Go, PG, PgBouncer, Pgproxy string
}

func machine(ctx context.Context, o *options) Machine {
	m := Machine{CPUs: strconv.Itoa(runtime.NumCPU()), Go: runtime.Version()}
	if out, err := exec.CommandContext(ctx, "nproc").Output(); err == nil {
		m.CPUs = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, filepath.Join(o.pgbin, "postgres"), "--version").Output(); err == nil {
		m.PG = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, o.pgproxy, "version").Output(); err == nil {
		m.Pgproxy = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, o.pgbouncer, "--version").Output(); err == nil {
		m.PgBouncer, _, _ = strings.Cut(strings.TrimSpace(string(out)), "\n")
	}
	return m
}

// postmasterPID is the first line of a data directory's postmaster.pid.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("postmaster.pid: first line %q is not a PID", line)
	}
	return pid, nil
}
