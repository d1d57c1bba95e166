// Command bench is `make bench`: pgbench `-S` against a replica directly,
// through PgBouncer (session mode) and through pgproxy (a separate
// `bin/pgproxy serve` process on its read listener), interleaved over
// several rounds, reporting medians of TPS and latency, the relays' CPU
// seconds per 100 000 queries (from /proc/PID/stat around each run), and
// pgproxy's RSS per idle session. It prints a markdown table and writes
// docs/benchmarks.md.
//
// With -pooled (the default) the same rounds also measure pooling (issue
// 17): pgproxy with auth.mode proxy against PgBouncer, each in session and
// in transaction mode, both authenticating a SCRAM role from a userlist
// with the verifier copied from pg_authid; then the RSS per idle client of
// -pooled-idle clients on -pool-size servers in transaction mode, and
// -large-clients clients on -large-servers servers for -large-duration.
//
// With -routing (the default) the rounds also measure per-transaction
// routing (issue 18, routing.go): -S through routing.unit transaction at
// each consistency level against session routing and the direct replica,
// and a mixed read/write script with the share of reads on the replica.
//
//	go run ./test/bench [-duration 10s] [-rounds 2] [-quick] [-pooled=false] [-perf 10s] [-out docs/benchmarks.md]
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
	"slices"
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

	// Pooled targets (issue 17).
	pooled          bool
	pooledClients   []int
	pooledModes     []string
	pooledConnect   []int
	poolSize        int // transaction mode: pool.size / default_pool_size
	sessionPoolSize int // session mode: at least the most clients of a case
	pooledIdle      int
	largeClients    int
	largeServers    int
	largeThreads    int
	largeDuration   time.Duration

	routing routingOptions // issue 18 (routing.go)
	mask    maskOptions    // the masking cases (issue 19, masking.go)
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
	var pooledClients, pooledModes, pooledConnect string
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "pgbench -T of each run")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds (every target once per case per round); medians are reported")
	fs.IntVar(&o.scale, "scale", 10, "pgbench -i scale")
	fs.BoolVar(&o.quick, "quick", false, "smoke run of a few minutes: 1 round of 2 s runs, scale 1; pooled: -c 16 simple and prepared, 200 idle clients, 500 clients for 3 s")
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
	fs.BoolVar(&o.pooled, "pooled", true, "also measure pooling (issue 17): pgproxy with auth.mode proxy against PgBouncer, session and transaction mode; -pooled=false skips it")
	fs.StringVar(&pooledClients, "pooled-clients", "16,64", "pgbench -c values of the pooled cases")
	fs.StringVar(&pooledModes, "pooled-modes", "simple,extended,prepared", "pgbench -M values of the pooled cases (prepared is not run against PgBouncer in transaction mode: n/a)")
	fs.StringVar(&pooledConnect, "pooled-connect-clients", "16", "pgbench -c values of the pooled -C runs; empty for none")
	fs.IntVar(&o.poolSize, "pool-size", 20, "server connections of the transaction-mode pools (pgproxy pool.size, PgBouncer default_pool_size)")
	fs.IntVar(&o.sessionPoolSize, "session-pool-size", 100, "server connections of the session-mode pools (at least the largest -pooled-clients, or clients wait for a whole session)")
	fs.IntVar(&o.pooledIdle, "pooled-idle", 2000, "idle clients opened through each transaction-mode relay to measure RSS per idle client; 0 skips")
	fs.IntVar(&o.largeClients, "large-clients", 10000, "clients of the large transaction-mode run (pgbench -S); 0 skips")
	fs.IntVar(&o.largeServers, "large-servers", 50, "server connections of the large run's pools")
	fs.IntVar(&o.largeThreads, "large-threads", 2, "pgbench -j of the large run")
	fs.DurationVar(&o.largeDuration, "large-duration", 30*time.Second, "pgbench -T of the large run")
	fs.StringVar(&compareEnv, "compare-env", "", "comma-separated KEY=value added to pgproxy-B's environment (with -compare). pgproxy-B runs without runtime.gomaxprocs, so `-compare bin/pgproxy` alone compares -gomaxprocs with pgproxy's default; PGPROXY_RUNTIME_EVENT_LOOPS=-1 compares the goroutine relay")
	finishRouting := routingFlags(fs, &o.routing)
	maskParse := maskingFlags(fs, &o.mask)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := maskParse(); err != nil {
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
		if !set["pooled-clients"] {
			pooledClients = "16"
		}
		if !set["pooled-modes"] {
			pooledModes = "simple,prepared"
		}
		if !set["pooled-idle"] {
			o.pooledIdle = 200
		}
		if !set["large-clients"] {
			o.largeClients = 500
		}
		if !set["large-duration"] {
			o.largeDuration = 3 * time.Second
		}
	}
	if err := finishRouting(set, o.quick); err != nil {
		return nil, err
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
	if o.modes, err = modeList(modes); err != nil {
		return nil, fmt.Errorf("-modes: %w", err)
	}
	if o.pooledClients, err = ints(pooledClients); err != nil {
		return nil, fmt.Errorf("-pooled-clients: %w", err)
	}
	if o.pooledConnect, err = ints(pooledConnect); err != nil {
		return nil, fmt.Errorf("-pooled-connect-clients: %w", err)
	}
	if o.pooledModes, err = modeList(pooledModes); err != nil {
		return nil, fmt.Errorf("-pooled-modes: %w", err)
	}
	if o.poolSize < 1 || o.sessionPoolSize < 1 || o.largeServers < 1 || o.largeThreads < 1 {
		return nil, errors.New("-pool-size, -session-pool-size, -large-servers and -large-threads must be >= 1")
	}
	if o.pooledIdle < 0 || o.largeClients < 0 {
		return nil, errors.New("-pooled-idle and -large-clients must be >= 0")
	}
	if o.largeClients > 0 && o.largeDuration < time.Second {
		return nil, errors.New("-large-duration must be >= 1s")
	}
	if o.gomaxprocs < 0 {
		return nil, errors.New("-gomaxprocs must be >= 0")
	}
	if o.rounds < 1 || o.duration < time.Second || o.scale < 1 {
		return nil, errors.New("-rounds and -scale must be >= 1, -duration >= 1s")
	}
	return o, nil
}

func modeList(s string) ([]string, error) {
	var out []string
	for _, m := range strings.Split(s, ",") {
		switch m = strings.TrimSpace(m); m {
		case "simple", "extended", "prepared":
			out = append(out, m)
		case "":
		default:
			return nil, fmt.Errorf("unknown pgbench -M %q", m)
		}
	}
	return out, nil
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

// pooledCases are the pooled matrix: -S at each -pooled-clients and
// -pooled-modes, then -C at each -pooled-connect-clients.
func (o *options) pooledCases() []Case {
	if !o.pooled {
		return nil
	}
	var cs []Case
	for _, c := range o.pooledClients {
		for _, m := range o.pooledModes {
			cs = append(cs, Case{Mode: m, Clients: c})
		}
	}
	for _, c := range o.pooledConnect {
		cs = append(cs, Case{Mode: "simple", Clients: c, Connect: true, MD5: true}, Case{Mode: "simple", Clients: c, Connect: true})
	}
	return cs
}

// estimate is about how long the run takes: every measured run plus a
// second each, set-up, idle sessions, the large run.
func (o *options) estimate() time.Duration {
	ntargets := 3
	if o.compare != "" {
		ntargets++
	}
	runs := o.rounds * len(o.cases()) * ntargets
	for _, c := range o.pooledCases() {
		for _, t := range pooledTargets {
			if !skipPooled(c, t) {
				runs += o.rounds
			}
		}
	}
	runs += o.maskingRuns()
	est := time.Duration(runs)*(o.duration+time.Second) + 5*time.Minute + 2*o.perf + 2*o.syscalls + o.routing.estimate(o)
	if o.pooled && o.largeClients > 0 {
		// two relays: start, warm-up, connecting the clients (a SCRAM
		// login each), the run
		est += 2 * (o.largeDuration + 20*time.Second + time.Duration(o.largeClients)*3*time.Millisecond)
	}
	return est
}

type target struct {
	name     string
	port     int
	pid      int    // measured for CPU; 0 for direct
	user     string // pgbench's -U
	password string // PGPASSWORD; "" for trust
	http     string // a pgproxy's HTTP address (/metrics); "" for the others
}

// env is base with the target's PGPASSWORD.
func (t target) env(base []string) []string {
	if t.password == "" {
		return base
	}
	return append(append([]string(nil), base...), "PGPASSWORD="+t.password)
}

func (t target) dsn() string { return dsn(t.port, t.user, t.password) }

// group is one matrix of the rounds: its cases against its targets.
type group struct {
	table   *Table
	targets []target
	skip    func(Case, string) bool
}

// setup is what the pooled part needs of the run.
type setup struct {
	dir          string
	cluster      *pgcluster.Cluster
	replica      *pgcluster.Node
	pgbench      string
	env          []string
	tick         time.Duration
	postmaster   int
	bouncerBin   string // "" without PgBouncer
	userlist     string // the userlist file pgproxy reads
	userlistText string // its content, written again for each PgBouncer
}

func bench(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	pgbench := filepath.Join(o.pgbin, "pgbench")
	if _, err := os.Stat(o.pgproxy); err != nil {
		return fmt.Errorf("pgproxy binary: %w (run `make build` first, or `make bench`)", err)
	}
	nofile, err := raiseNofile()
	if err != nil {
		return fmt.Errorf("open files limit: %w", err)
	}
	if o.pooled {
		// pgbench and the relay each hold a descriptor per client.
		if need := uint64(max(o.largeClients, o.pooledIdle) + 200); nofile < need {
			return fmt.Errorf("open files limit (hard) is %d, the pooled runs need %d: raise it (ulimit -Hn) or lower -large-clients / -pooled-idle", nofile, need)
		}
	}
	cases, pcases := o.cases(), o.pooledCases()
	est := o.estimate()
	if o.hold != "" {
		est = 12 * time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, 2*est)
	defer cancel()
	logf("bench: %d cases × 3 targets + %d pooled cases × 4 targets, %d rounds of %s (about %s; open files limit %d)", len(cases), len(pcases), o.rounds, o.duration, est.Round(time.Minute), nofile)

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

	proxy, proxyPort, _, err := startPgproxy(ctx, o.pgproxy, o.proxyEnv, proxyConf{Gomaxprocs: o.gomaxprocs}, dir, cluster, "postgres", "")
	if err != nil {
		return err
	}
	defer proxy.stop()
	logf("bench: pgproxy pid %d on 127.0.0.1:%d (read listener)", proxy.pid, proxyPort)

	trust := func(name string, port, pid int) target {
		return target{name: name, port: port, pid: pid, user: "postgres"}
	}
	targets := []target{trust(Direct, replica.Port, 0)}
	bouncerNote := ""
	bouncerBin, note := findPgbouncer(ctx, o.pgbouncer, logf)
	if bouncerBin != "" {
		conf := bouncerConf{Dir: filepath.Join(dir, "pgbouncer"), Mode: "session", AuthType: "trust", Userlist: userlistLine("postgres", ""), PoolSize: 100, MaxClientConn: 2000}
		pb, port, err := startPgbouncer(ctx, bouncerBin, conf, replica, "postgres", "")
		if err != nil {
			bouncerNote = fmt.Sprintf("PgBouncer did not start (%v); its column is empty.", firstLine(err))
			logf("bench: %s", bouncerNote)
			bouncerBin = ""
		} else {
			defer pb.stop()
			logf("bench: PgBouncer pid %d on 127.0.0.1:%d (session mode)", pb.pid, port)
			targets = append(targets, trust(PgBouncer, port, pb.pid))
		}
	} else {
		bouncerNote = note
		logf("bench: %s", note)
	}
	targets = append(targets, trust(Pgproxy, proxyPort, proxy.pid))
	if o.compare != "" {
		dirB := filepath.Join(dir, "b")
		if err := os.MkdirAll(dirB, 0o755); err != nil {
			return err
		}
		pbB, portB, _, err := startPgproxy(ctx, o.compare, o.compareEnv, proxyConf{}, dirB, cluster, "postgres", "")
		if err != nil {
			return fmt.Errorf("-compare: %w", err)
		}
		defer pbB.stop()
		logf("bench: pgproxy-B (%s) pid %d on 127.0.0.1:%d", o.compare, pbB.pid, portB)
		targets = append(targets, trust(PgproxyB, portB, pbB.pid))
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}

	tick := clockTick()
	postmaster, err := postmasterPID(replica.DataDir)
	if err != nil {
		return err
	}
	st := &setup{dir: dir, cluster: cluster, replica: replica, pgbench: pgbench, env: env, tick: tick, postmaster: postmaster, bouncerBin: bouncerBin}

	// The pooled targets: both relays in both modes, one SCRAM role.
	var ptargets []target
	if o.pooled {
		for _, u := range []string{pooledUser, md5User} {
			secret, err := roleSecret(ctx, primary, u)
			if err != nil {
				return fmt.Errorf("the pooled roles' secrets: %w", err)
			}
			st.userlistText += userlistLine(u, secret)
		}
		st.userlist = filepath.Join(dir, "userlist.txt")
		if err := os.WriteFile(st.userlist, []byte(st.userlistText), 0o600); err != nil {
			return err
		}
		maxClients := max(o.pooledIdle, slices.Max(append([]int{1}, append(o.pooledClients, o.pooledConnect...)...))) + 100
		for _, mode := range []string{"session", "transaction"} {
			size := o.poolSize
			if mode == "session" {
				size = o.sessionPoolSize
			}
			name := map[string]string{"session": PgproxySession, "transaction": PgproxyTxn}[mode]
			pdir := filepath.Join(dir, name)
			if err := os.MkdirAll(pdir, 0o755); err != nil {
				return err
			}
			conf := proxyConf{Gomaxprocs: o.gomaxprocs, MaxSessions: maxClients, AuthFile: st.userlist, Pool: mode, PoolSize: size}
			ch, port, httpAddr, err := startPgproxy(ctx, o.pgproxy, o.proxyEnv, conf, pdir, cluster, pooledUser, pooledPassword)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			defer ch.stop()
			logf("bench: %s pid %d on 127.0.0.1:%d (pool.size %d)", name, ch.pid, port, size)
			pt := target{name: name, port: port, pid: ch.pid, user: pooledUser, password: pooledPassword, http: httpAddr}
			if bouncerBin != "" {
				bname := map[string]string{"session": PgBouncerSession, "transaction": PgBouncerTxn}[mode]
				// md5: SCRAM for a user with a SCRAM secret, md5 for an md5 one.
				bconf := bouncerConf{Dir: filepath.Join(dir, bname), Mode: mode, AuthType: "md5", Userlist: st.userlistText, PoolSize: size, MaxClientConn: maxClients}
				pb, bport, err := startPgbouncer(ctx, bouncerBin, bconf, replica, pooledUser, pooledPassword)
				if err != nil {
					return fmt.Errorf("%s: %w", bname, err)
				}
				defer pb.stop()
				logf("bench: %s pid %d on 127.0.0.1:%d (default_pool_size %d)", bname, pb.pid, bport, size)
				ptargets = append(ptargets, target{name: bname, port: bport, pid: pb.pid, user: pooledUser, password: pooledPassword})
			}
			ptargets = append(ptargets, pt)
		}
	}
	var rb *routingBench
	if o.routing.on {
		if rb, err = startRouting(ctx, o, st, logf); err != nil {
			return fmt.Errorf("routing targets: %w", err)
		}
		defer rb.stop()
	}
	mb, err := setupMasking(ctx, o, st, proxyPort, proxy.pid, logf)
	if err != nil {
		return err
	}
	defer mb.stop()
	var pnames []string
	for _, t := range ptargets {
		pnames = append(pnames, t.name)
	}

	var idle *IdleResult
	if o.idle > 0 {
		logf("bench: opening %d idle sessions through pgproxy", o.idle)
		r, err := measureIdle(ctx, proxy.pid, dsn(proxyPort, "postgres", ""), o.idle)
		if err != nil {
			logf("bench: idle sessions: %v", err)
		} else {
			idle = &r
			logf("bench: pgproxy RSS %d KiB → %d KiB with %d idle sessions: %.1f KiB per session", r.BeforeKiB, r.WithKiB, r.Sessions, r.PerSessionKiB())
		}
		time.Sleep(time.Second) // let the sessions end on the server side
	}
	pooledIdle := map[string]IdleResult{}
	if o.pooledIdle > 0 {
		for _, t := range ptargets {
			if t.name != PgproxyTxn && t.name != PgBouncerTxn {
				continue
			}
			logf("bench: opening %d idle clients through %s (%d servers)", o.pooledIdle, t.name, o.poolSize)
			r, err := measureIdle(ctx, t.pid, t.dsn(), o.pooledIdle)
			if err != nil {
				logf("bench: idle clients through %s: %v", t.name, err)
				continue
			}
			pooledIdle[t.name] = r
			logf("bench: %s RSS %d KiB → %d KiB with %d idle clients: %.2f KiB per client", t.name, r.BeforeKiB, r.WithKiB, r.Sessions, r.PerSessionKiB())
			time.Sleep(time.Second)
		}
	}

	logf("bench: warm-up")
	warmClients := slices.Max(append([]int{2}, o.pooledClients...))
	for _, t := range append(append([]target(nil), targets...), ptargets...) {
		w := Case{Mode: "simple", Clients: 2}
		if t.password != "" {
			w.Clients = warmClients // fill the pool, as a long-running pooler's is
		}
		ws := []Case{w}
		if t.password != "" && len(o.pooledConnect) > 0 {
			ws = append(ws, Case{Mode: "simple", Clients: slices.Max(o.pooledConnect), MD5: true}) // the md5 role's pool
		}
		for _, w := range ws {
			wt := t.forCase(w)
			wctx, wcancel := context.WithTimeout(ctx, time.Minute)
			_, out, err := runPgbench(wctx, pgbench, w.Args(wt.port, wt.user, "postgres", 2*time.Second), wt.env(env))
			wcancel()
			if err != nil {
				logf("bench: warm-up through %s failed (its runs will show it): %v %s", t.name, firstLine(err), lastLines(out, 3))
			}
		}
	}

	if o.hold != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "postmaster=%d\nreplica_data=%s\n", postmaster, replica.DataDir)
		held := append(append([]target(nil), targets...), ptargets...)
		if mb != nil {
			held = append(held, mb.targets[2])
		}
		for _, t := range held {
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
	groups := []group{{table: table, targets: targets}}
	var ptable *Table
	if len(pcases) > 0 && len(ptargets) > 0 {
		ptable = newTable(pcases, pnames)
		groups = append(groups, group{table: ptable, targets: ptargets, skip: skipPooled})
	}
	if mb != nil {
		groups = append(groups, group{table: mb.table, targets: mb.targets})
	}
	var load [2]string
	load[0] = loadAvg()
	for round := 0; round < o.rounds; round++ {
		for _, g := range groups {
			for ci, c := range g.table.Cases {
				// Rotate the order so no target always runs first (or right after another).
				for k := range g.targets {
					t := g.targets[(k+round+ci)%len(g.targets)]
					if g.skip != nil && g.skip(c, t.name) {
						continue
					}
					t = t.forCase(c)
					s, err := measure(ctx, pgbench, env, c.Args(t.port, t.user, "postgres", o.duration), t, o.duration+time.Minute, tick, postmaster)
					if ctx.Err() != nil {
						return fmt.Errorf("stopped: %w", ctx.Err())
					}
					g.table.add(c, t.name, s)
					if err != nil {
						logf("round %d/%d %-26s %-17s  error: %v", round+1, o.rounds, c.Name(), t.name, firstLine(err))
						continue
					}
					cpu := ""
					if s.HasCPU && s.Processed > 0 {
						cpu = fmt.Sprintf("  cpu %.2f s/100k  %.2f cs/q", s.CPU.Seconds()/float64(s.Processed)*100000, float64(s.Switches)/float64(s.Processed))
					}
					logf("round %d/%d %-26s %-17s %9.0f tps  %7.3f ms  failed %d%s", round+1, o.rounds, c.Name(), t.name, s.TPS, s.LatencyMS, s.Failed, cpu)
				}
			}
		}
		if rb != nil {
			if err := rb.round(ctx, round, logf); err != nil {
				return err
			}
		}
	}

	load[1] = loadAvg()

	var large []LargeResult
	if o.pooled && o.largeClients > 0 {
		kinds := []string{Pgproxy}
		if bouncerBin != "" {
			kinds = []string{PgBouncer, Pgproxy}
		}
		for _, kind := range kinds {
			logf("bench: %d clients on %d servers through %s in transaction mode, -T %s", o.largeClients, o.largeServers, kind, o.largeDuration)
			r := runLarge(ctx, o, kind, st)
			if ctx.Err() != nil {
				return fmt.Errorf("stopped: %w", ctx.Err())
			}
			if r.Err != nil {
				logf("bench: large run through %s: %v", kind, r.Err)
			}
			logf("bench: %s: %.0f tps, p99 %.1f ms, %d failed, %d aborted clients", r.Target, r.Sample.TPS, r.Latency.P99, r.Sample.Failed, r.Sample.AbortedClients)
			large = append(large, r)
			time.Sleep(time.Second)
		}
		load[1] = loadAvg()
	}

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
	var pooled *PooledReport
	if o.pooled {
		pooled = &PooledReport{Table: ptable, Idle: pooledIdle, Large: large}
		fmt.Fprintf(stdout, "\n%s\n", pooled.Markdown(o))
	}
	var routing *RoutingReport
	if rb != nil {
		routing = rb.report()
		fmt.Fprintf(stdout, "\n%s\n", routing.Markdown())
	}
	var masking *MaskingReport
	if mb != nil {
		masking = &MaskingReport{Table: mb.table}
		fmt.Fprintf(stdout, "\n%s", masking.Markdown())
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
		Pooled:  pooled,
		Routing: routing,
		Masking: masking,
	})
	if err := os.WriteFile(o.out, []byte(doc), 0o644); err != nil {
		return err
	}
	logf("bench: wrote %s", o.out)
	return nil
}

// measure runs pgbench with args against one target, reading the target's
// CPU time just before and just after. A run still going after limit is
// killed.
func measure(ctx context.Context, pgbench string, env []string, args []string, t target, limit time.Duration, tick time.Duration, postmaster int) (Sample, error) {
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
	// killed after limit and recorded without a summary.
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	r, out, err := runPgbench(rctx, pgbench, args, t.env(env))
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			err = fmt.Errorf("pgbench still running after %s: killed (a hung session?)", limit)
		}
		s.Result = r // no summary, but what pgbench said meanwhile (-P, aborted clients)
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
