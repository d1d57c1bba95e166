package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// The pooled part of the bench (issue 17): pgproxy with auth.mode proxy and
// a pool, against PgBouncer in the same pool mode, both authenticating a
// SCRAM role with the verifier copied from pg_authid.

// pooledUser is the SCRAM role of the pooled targets: the cluster's
// scram_user (pg_hba: scram-sha-256 on 127.0.0.1; a superuser, so it reads
// pgbench's tables). md5User is the md5 role of the (md5) cases (pg_hba:
// md5), in the same userlist.
const (
	pooledUser     = pgcluster.ScramUser
	pooledPassword = pgcluster.ScramPassword
	md5User        = pgcluster.MD5User
	md5Password    = pgcluster.MD5Password
)

// skipPooled says which pooled target does not run a case: PgBouncer 1.18
// has no prepared statement support in transaction mode (a client's
// statement exists only on the server it was prepared on), so -M prepared
// against it fails by design, and the table shows n/a. A -C case with the
// SCRAM role runs in transaction mode only: its TPS is pgbench's PBKDF2
// (4096 iterations per connection), which the pool mode does not change.
func skipPooled(c Case, target string) bool {
	switch {
	case c.Mode == "prepared" && target == PgBouncerTxn:
		return true
	case c.Connect && !c.MD5 && (target == PgBouncerSession || target == PgproxySession):
		return true
	}
	return false
}

// naPooled says whether a skipped case is shown as n/a (it cannot run)
// rather than left out.
func naPooled(c Case, target string) bool {
	return c.Mode == "prepared" && target == PgBouncerTxn
}

// forCase is the target as the case logs in: the md5 role for an (md5)
// case.
func (t target) forCase(c Case) target {
	if c.MD5 && t.password != "" {
		t.user, t.password = md5User, md5Password
	}
	return t
}

// roleSecret is user's rolpassword from pg_authid on the primary (a SCRAM
// verifier or an md5 hash).
func roleSecret(ctx context.Context, primary *pgcluster.Node, user string) (string, error) {
	conn, err := pgconn.Connect(ctx, dsn(primary.Port, "postgres", ""))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	rr := conn.ExecParams(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if rr.Err != nil {
		return "", rr.Err
	}
	if len(rr.Rows) != 1 || len(rr.Rows[0]) != 1 || !(strings.HasPrefix(string(rr.Rows[0][0]), "SCRAM-SHA-256$") || strings.HasPrefix(string(rr.Rows[0][0]), "md5")) {
		return "", fmt.Errorf("pg_authid has no SCRAM verifier or md5 hash for %s", user)
	}
	return string(rr.Rows[0][0]), nil
}

// raiseNofile sets the soft open files limit to the hard one (the bench,
// and so pgbench, pgproxy and PgBouncer, which inherit it), and returns it.
// Go raises its own soft limit at start but gives children the original
// one back unless the program sets the limit itself, as here.
func raiseNofile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}

// Latency is the distribution of per-transaction latencies of one run, from
// pgbench's --log files.
type Latency struct {
	N             int     // transactions logged with a latency
	Other         int     // logged without one (failed, skipped, ...)
	P50, P99, Max float64 // ms
}

// parsePgbenchLogs reads pgbench's per-transaction log lines ("client_id
// transaction_no time script_no time_epoch time_us [schedule_lag]": time is
// the latency in µs; a failed or skipped transaction has a word there).
func parsePgbenchLogs(rs ...io.Reader) (Latency, error) {
	var lat Latency
	var us []float64
	for _, r := range rs {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			if len(f) < 6 {
				return lat, fmt.Errorf("pgbench log: line %q: %d fields, want >= 6", sc.Text(), len(f))
			}
			v, err := strconv.ParseFloat(f[2], 64)
			if err != nil {
				lat.Other++
				continue
			}
			us = append(us, v)
		}
		if err := sc.Err(); err != nil {
			return lat, err
		}
	}
	sort.Float64s(us)
	lat.N = len(us)
	lat.P50, lat.P99 = percentile(us, 0.50)/1000, percentile(us, 0.99)/1000
	lat.Max = math.NaN()
	if len(us) > 0 {
		lat.Max = us[len(us)-1] / 1000
	}
	return lat, nil
}

// percentile is the nearest-rank p-quantile of sorted xs (NaN when empty).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// readPgbenchLogs parses every log file pgbench wrote with --log-prefix
// prefix (prefix.PID, prefix.PID.1, ...) and removes them.
func readPgbenchLogs(prefix string) (Latency, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return Latency{}, err
	}
	if len(files) == 0 {
		return Latency{}, fmt.Errorf("no pgbench log files %s.*", prefix)
	}
	var rs []io.Reader
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return Latency{}, err
		}
		defer os.Remove(f)
		defer fh.Close()
		rs = append(rs, fh)
	}
	return parsePgbenchLogs(rs...)
}

// Histogram is a Prometheus histogram's cumulative bucket counts by upper
// bound (+Inf included).
type Histogram map[float64]float64

// parseHistogram reads name's buckets from the Prometheus text format
// (`name_bucket{le="0.0004"} 17`; no other labels).
func parseHistogram(text, name string) (Histogram, error) {
	h := Histogram{}
	prefix := name + `_bucket{le="`
	for _, l := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(l, prefix)
		if !ok {
			continue
		}
		le, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("%s: line %q", name, l)
		}
		bound, err1 := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
		n, err2 := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: line %q", name, l)
		}
		h[bound] = n
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("no %s buckets", name)
	}
	return h, nil
}

// Sub is h minus an earlier reading of the same histogram.
func (h Histogram) Sub(before Histogram) Histogram {
	d := Histogram{}
	for b, n := range h {
		d[b] = n - before[b]
	}
	return d
}

// Quantile is the bucket holding the q-quantile: its lower and upper bound
// in seconds (upper +Inf when it is past the last bucket); ok is false when
// the histogram counted nothing.
func (h Histogram) Quantile(q float64) (lo, hi float64, ok bool) {
	bounds := make([]float64, 0, len(h))
	for b := range h {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return 0, 0, false
	}
	total := h[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0, 0, false
	}
	lo = 0
	for _, b := range bounds {
		if h[b] >= q*total {
			return lo, b, true
		}
		lo = b
	}
	return lo, math.Inf(1), true
}

// scrapeHistogram reads one histogram from a pgproxy's /metrics.
func scrapeHistogram(ctx context.Context, httpAddr, name string) (Histogram, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	return parseHistogram(string(b), name)
}

// LargeResult is the many-clients run through one transaction-mode relay.
type LargeResult struct {
	Target  string
	Clients int
	Servers int
	Threads int
	Sample  Sample
	Latency Latency
	// T is the -T given to pgbench: the run's length plus the estimated
	// connection phase, which pgbench's -T counts too (10 000 SCRAM logins
	// take pgbench tens of seconds of PBKDF2).
	T       time.Duration
	PeakKiB int64 // the relay's VmHWM after the run (it was started for it)
	// WaitLo, WaitHi bound pgproxy's p99 wait for a server (its
	// pgproxy_pool_wait_seconds histogram over the run); HasWait says they
	// were read.
	WaitLo, WaitHi float64
	HasWait        bool
	Err            error
}

// largeT is the -T of the large run: pgbench's -T starts before its
// threads connect their clients (one after the other), so it is d plus the
// connection phase, estimated from the warm-up's (warmMS for warm clients
// on 2 threads) with a margin.
func largeT(d time.Duration, warmMS float64, warm, clients, threads int) time.Duration {
	perConn := warmMS / float64(max(1, warm/2)) // ms per connection and thread
	est := time.Duration(perConn * float64(clients) / float64(max(1, threads)) * float64(time.Millisecond))
	return (d + est*5/4 + 2*time.Second).Round(time.Second)
}

// runLarge starts a transaction-mode relay (kind Pgproxy or PgBouncer) with
// o.largeServers server connections, fills its pool, runs pgbench -S with
// o.largeClients clients through it for o.largeDuration with per-transaction
// logs, and stops it.
func runLarge(ctx context.Context, o *options, kind string, st *setup) LargeResult {
	res := LargeResult{Target: kind + "-txn", Clients: o.largeClients, Servers: o.largeServers, Threads: o.largeThreads}
	fail := func(err error) LargeResult { res.Err = err; return res }
	dir := filepath.Join(st.dir, "large-"+kind)
	var t target
	switch kind {
	case Pgproxy:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fail(err)
		}
		conf := proxyConf{Gomaxprocs: o.gomaxprocs, MaxSessions: o.largeClients + 100, AuthFile: st.userlist, Pool: "transaction", PoolSize: o.largeServers}
		ch, port, httpAddr, err := startPgproxy(ctx, o.pgproxy, o.proxyEnv, conf, dir, st.cluster, pooledUser, pooledPassword)
		if err != nil {
			return fail(err)
		}
		defer ch.stop()
		t = target{name: res.Target, port: port, pid: ch.pid, user: pooledUser, password: pooledPassword, http: httpAddr}
	default:
		conf := bouncerConf{Dir: dir, Mode: "transaction", AuthType: "md5", Userlist: st.userlistText, PoolSize: o.largeServers, MaxClientConn: o.largeClients + 100}
		ch, port, err := startPgbouncer(ctx, st.bouncerBin, conf, st.replica, pooledUser, pooledPassword)
		if err != nil {
			return fail(err)
		}
		defer ch.stop()
		t = target{name: res.Target, port: port, pid: ch.pid, user: pooledUser, password: pooledPassword}
	}
	// Fill the pool (twice as many clients as servers), so the run starts
	// with every server logged in, as the other pooled cases do.
	warm := Case{Mode: "simple", Clients: 2 * o.largeServers}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	wr, out, err := runPgbench(wctx, st.pgbench, warm.Args(t.port, t.user, "postgres", 2*time.Second), t.env(st.env))
	wcancel()
	if err != nil {
		return fail(fmt.Errorf("warm-up: %w %s", err, lastLines(out, 3)))
	}
	res.T = largeT(o.largeDuration, wr.ConnectMS, warm.Clients, o.largeClients, o.largeThreads)
	var before Histogram
	if t.http != "" {
		if before, err = scrapeHistogram(ctx, t.http, "pgproxy_pool_wait_seconds"); err != nil {
			return fail(err)
		}
	}
	prefix := filepath.Join(st.dir, "large-"+kind+"-log")
	c := Case{Mode: "simple", Clients: o.largeClients, Threads: o.largeThreads}
	// -P: a run that hangs still says how far it got (in the error).
	args := append([]string{"-l", "--log-prefix", prefix, "-P", "5"}, c.Args(t.port, t.user, "postgres", res.T)...)
	s, err := measure(ctx, st.pgbench, st.env, args, t, res.T+time.Minute, st.tick, st.postmaster)
	res.Sample = s
	if err != nil && s.Processed == 0 {
		return fail(err)
	}
	res.Err = err
	if lat, lerr := readPgbenchLogs(prefix); lerr != nil {
		res.Err = errors.Join(res.Err, lerr)
	} else {
		res.Latency = lat
	}
	if t.http != "" {
		if after, herr := scrapeHistogram(ctx, t.http, "pgproxy_pool_wait_seconds"); herr == nil {
			res.WaitLo, res.WaitHi, res.HasWait = after.Sub(before).Quantile(0.99)
		}
	}
	res.PeakKiB, _ = procPeakRSS(t.pid)
	return res
}
