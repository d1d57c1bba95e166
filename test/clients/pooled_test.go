package clients

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// Issue 17's acceptance for real clients: 8 clients of each driver on one
// pgproxy with auth.mode proxy, pool.mode transaction, pool.size 2. The
// proxy authenticates them from an auth.file of the cluster's verifiers;
// the primary never has more than 2 backends of the user meanwhile.

const (
	pooledClients = 8
	pooledSize    = 2
)

// startPooled runs a pgproxy that authenticates users itself (auth.file
// from pg_authid) and pools their server connections.
func startPooled(t *testing.T, mode string, size int, users ...string) *proxytest.Proxy {
	t.Helper()
	pgcluster.Require(t, cluster)
	return startProxyWith(t, &proxytest.Options{YAML: fmt.Sprintf(`auth:
  mode: proxy
  file: %s
pool:
  mode: %s
  size: %d
  max_client_wait: 30s
`, proxytest.Userlist(t, cluster, users...), mode, size)})
}

// backendSampler counts a user's client backends on the primary, straight
// from pg_stat_activity (not through the proxy), every 10 ms.
type backendSampler struct {
	mu      sync.Mutex
	max     int
	samples int
	err     error
	stop    chan struct{}
	done    chan struct{}
}

// sampleBackends starts sampling once the user has no backend left from
// earlier tests; Stop returns the largest count seen.
func sampleBackends(t *testing.T, user string) *backendSampler {
	t.Helper()
	ctx := ctxT(t, 3*time.Minute)
	conn, err := cluster.Primary().Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const q = "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend'"
	for deadline := time.Now().Add(15 * time.Second); ; {
		var n int
		if err := conn.QueryRow(ctx, q, user).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backends of %s left on the primary before the test", n, user)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b := &backendSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		defer conn.Close(context.Background())
		for {
			var n int
			err := conn.QueryRow(ctx, q, user).Scan(&n)
			b.mu.Lock()
			if err != nil && b.err == nil {
				b.err = err
			}
			b.samples++
			b.max = max(b.max, n)
			b.mu.Unlock()
			select {
			case <-b.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { b.Stop() })
	return b
}

// Stop ends the sampling (idempotent) and returns the largest count seen
// and the number of samples.
func (b *backendSampler) Stop() (maxSeen, samples int, err error) {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max, b.samples, b.err
}

// checkBackends fails t unless the primary held between 1 and pooledSize
// backends of the user while the clients ran.
func checkBackends(t *testing.T, b *backendSampler, user string) {
	t.Helper()
	maxSeen, samples, err := b.Stop()
	if err != nil {
		t.Fatalf("sampling pg_stat_activity: %v", err)
	}
	t.Logf("%s: at most %d backends on the primary over %d samples", user, maxSeen, samples)
	if samples < 5 || maxSeen < 1 {
		t.Fatalf("%d samples, max %d: the sampler did not see the run", samples, maxSeen)
	}
	if maxSeen > pooledSize {
		t.Errorf("%d backends of %s on the primary at once, want at most pool.size %d", maxSeen, user, pooledSize)
	}
}

// TestPooledPgjdbc: 8 pgjdbc connections (threads of one JVM) with
// prepareThreshold=1 and fetchSize cursor reads in transactions
// (testdata/PooledJdbc.java), md5 role, through transaction pooling on 2
// server connections.
func TestPooledPgjdbc(t *testing.T) {
	pgcluster.Require(t, cluster)
	javac, errC := exec.LookPath("javac")
	java, errJ := exec.LookPath("java")
	if errC != nil || errJ != nil {
		if isCI() {
			t.Fatalf("javac/java missing (CI installs default-jdk-headless): %v %v", errC, errJ)
		}
		t.Skipf("javac/java missing: %v %v", errC, errJ)
	}
	needTool(t, jdbcJar)
	classes := t.TempDir()
	if out, err := runCmd(t, javac, "-d", classes, "-cp", jdbcJar, "testdata/PooledJdbc.java"); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	p := startPooled(t, "transaction", pooledSize, pgcluster.MD5User)
	primaryExec(t, "DROP TABLE IF EXISTS pooled_jdbc; CREATE TABLE pooled_jdbc (client int, round int)")
	const rounds = 12
	b := sampleBackends(t, pgcluster.MD5User)
	url := fmt.Sprintf("jdbc:postgresql://%s/postgres", p.WriteAddr())
	r := run(ctxT(t, 3*time.Minute), []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "LANG=C.UTF-8"}, "", java,
		"-XX:TieredStopAtLevel=1", "-cp", jdbcJar+":"+classes, "PooledJdbc", url, pgcluster.MD5User, pgcluster.MD5Password,
		strconv.Itoa(pooledClients), strconv.Itoa(rounds))
	checkBackends(t, b, pgcluster.MD5User)
	got := keyValues(r.stdout)
	if r.err != nil || got["errors"] != "0" {
		t.Fatalf("PooledJdbc: %s", r)
	}
	// pgjdbc's own "SET extra_float_digits = 3" moves with each client.
	noPins(t, p)
	committed := rounds - rounds/3 // every third round rolled back
	for i := 0; i < pooledClients; i++ {
		for k, want := range map[string]int{"rows": committed, "committed": committed, "fetched_ok": rounds, "server_prepared": 3} {
			key := fmt.Sprintf("client%d_%s", i, k)
			if got[key] != strconv.Itoa(want) {
				t.Errorf("%s = %q, want %d", key, got[key], want)
			}
		}
	}
	var n int
	primaryScalar(t, "SELECT count(*) FROM pooled_jdbc", &n)
	if n != pooledClients*committed {
		t.Errorf("pooled_jdbc has %d rows on the primary, want %d", n, pooledClients*committed)
	}
}

// odooPooled is what testdata/odoo_pooled.py prints.
type odooPooled struct {
	Psycopg2 string `json:"psycopg2"`
	Workers  map[string]struct {
		IsolationOK int `json:"isolation_ok"`
		SnapshotOK  int `json:"snapshot_ok"`
		NamedOK     int `json:"named_ok"`
		Committed   int `json:"committed"`
		Rows        int `json:"rows"`
	} `json:"workers"`
	Listen struct {
		Count             int  `json:"count"`
		ChannelsOK        bool `json:"channels_ok"`
		PayloadsOK        bool `json:"payloads_ok"`
		PidBefore         int  `json:"pid_before"`
		PidAfter          int  `json:"pid_after"`
		ChannelsListening int  `json:"channels_listening"`
	} `json:"listen"`
	Errors []string `json:"errors"`
}

// TestPooledPsycopg2Odoo: Odoo-style psycopg2 through transaction pooling
// (testdata/odoo_pooled.py), SCRAM role: 6 workers in REPEATABLE READ
// transactions with named cursors, Odoo's bus listener (LISTEN pins it to
// its server) and a notifier, 8 connections on 2 servers. The listener
// receives every notification sent through the proxy by another client.
func TestPooledPsycopg2Odoo(t *testing.T) {
	pgcluster.Require(t, cluster)
	needPsycopg2(t)
	p := startPooled(t, "transaction", pooledSize, pgcluster.ScramUser)
	const workers, rounds = pooledClients - 2, 8
	proxyDSN := fmt.Sprintf("postgresql://%s:%s@%s/postgres?sslmode=disable&connect_timeout=20", pgcluster.ScramUser, pgcluster.ScramPassword, p.WriteAddr())
	b := sampleBackends(t, pgcluster.ScramUser)
	r := run(ctxT(t, 3*time.Minute), pgEnv(p.WriteAddr(), "postgres", "postgres"), "", python3Bin, "testdata/odoo_pooled.py",
		proxyDSN, cluster.Primary().DSN("postgres"), strconv.Itoa(workers), strconv.Itoa(rounds))
	checkBackends(t, b, pgcluster.ScramUser)
	var got odooPooled
	if jerr := json.Unmarshal([]byte(lastLine(r.stdout)), &got); jerr != nil || r.err != nil || len(got.Errors) > 0 {
		t.Fatalf("odoo_pooled.py failed (json: %v, errors %q)\n%s", jerr, got.Errors, r)
	}
	t.Logf("psycopg2 %s: %s", got.Psycopg2, strings.TrimSpace(r.stdout))
	committed := rounds - rounds/4 // every fourth round rolled back
	if len(got.Workers) != workers {
		t.Fatalf("%d workers reported, want %d", len(got.Workers), workers)
	}
	for id, w := range got.Workers {
		if w.IsolationOK != rounds || w.SnapshotOK != rounds || w.NamedOK != rounds || w.Committed != committed || w.Rows != committed {
			t.Errorf("worker %s: %+v, want %d rounds ok and %d rows", id, w, rounds, committed)
		}
	}
	l := got.Listen
	if l.Count != 5 || !l.ChannelsOK || !l.PayloadsOK {
		t.Errorf("listener: %+v, want the 5 notifications in order", l)
	}
	// Pinned: the same server before and after, still listening.
	if l.PidBefore == 0 || l.PidAfter != l.PidBefore || l.ChannelsListening != 1 {
		t.Errorf("listener pid %d then %d, listening on %d channels: not kept on its server", l.PidBefore, l.PidAfter, l.ChannelsListening)
	}
	_, metrics := p.Get(t, "/metrics")
	if !regexp.MustCompile(`(?m)^pgproxy_pool_pins_total\{reason="listen"\} 1$`).MatchString(metrics) {
		t.Errorf("want one listen pin counted:\n%s", grepLines(metrics, "pgproxy_pool_pins_total"))
	}
}

// TestPooledPgx: pgx with its default statement cache
// (QueryExecModeCacheStatement: named prepared statements, the same names
// in every client) through the whole app, 8 clients on 2 servers.
func TestPooledPgx(t *testing.T) {
	p := startPooled(t, "transaction", pooledSize, pgcluster.ScramUser)
	primaryExec(t, "DROP TABLE IF EXISTS pooled_pgx; CREATE TABLE pooled_pgx (client int, round int)")
	ctx := ctxT(t, 2*time.Minute)
	const rounds = 30
	b := sampleBackends(t, pgcluster.ScramUser)
	var wg sync.WaitGroup
	errc := make(chan error, pooledClients)
	together := newBarrier(pooledClients)
	for i := 0; i < pooledClients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			arrive := func() { once.Do(together.arrive) }
			defer arrive() // a client that fails early lets the others go on
			if err := pgxClient(ctx, p, i, rounds, func() error { arrive(); return together.wait(time.Minute) }); err != nil {
				errc <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	checkBackends(t, b, pgcluster.ScramUser)
	for err := range errc {
		t.Error(err)
	}
	noPins(t, p)
	committed := rounds - rounds/5
	var n int
	primaryScalar(t, "SELECT count(*) FROM pooled_pgx", &n)
	if n != pooledClients*committed {
		t.Errorf("pooled_pgx has %d rows on the primary, want %d", n, pooledClients*committed)
	}
}

func pgxClient(ctx context.Context, p *proxytest.Proxy, id, rounds int, together func() error) error {
	dsn := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&application_name=pgx-%d", pgcluster.ScramUser, pgcluster.ScramPassword, p.WriteAddr(), id)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if m := c.Config().DefaultQueryExecMode; m != pgx.QueryExecModeCacheStatement {
		return fmt.Errorf("exec mode %v, want the default cache_statement", m)
	}
	for r := 0; r < rounds; r++ {
		var sum int
		var app string
		if err := c.QueryRow(ctx, "SELECT $1::int + $2::int, current_setting('application_name')", id, r).Scan(&sum, &app); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		if sum != id+r || app != fmt.Sprintf("pgx-%d", id) {
			return fmt.Errorf("round %d: got %d, %q", r, sum, app)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO pooled_pgx (client, round) VALUES ($1, $2)", id, r); err != nil {
			return fmt.Errorf("round %d insert: %w", r, err)
		}
		var inTx int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM pooled_pgx WHERE client = $1 AND round = $2", id, r).Scan(&inTx); err != nil || inTx != 1 {
			return fmt.Errorf("round %d: %d rows in its own transaction: %v", r, inTx, err)
		}
		if r%5 == 4 {
			err = tx.Rollback(ctx)
		} else {
			err = tx.Commit(ctx)
		}
		if err != nil {
			return fmt.Errorf("round %d end: %w", r, err)
		}
		rows, err := c.Query(ctx, "SELECT g FROM generate_series(1, $1::int) g", 100+r)
		if err != nil {
			return err
		}
		n, total := 0, 0
		for rows.Next() {
			var g int
			if err := rows.Scan(&g); err != nil {
				rows.Close()
				return err
			}
			n++
			total += g
		}
		rows.Close()
		if err := rows.Err(); err != nil || n != 100+r || total != n*(n+1)/2 {
			return fmt.Errorf("round %d: %d rows, sum %d: %v", r, n, total, err)
		}
		if r == 0 {
			// Every client connected and between transactions at once.
			if err := together(); err != nil {
				return err
			}
		}
	}
	var mine int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pooled_pgx WHERE client = $1", id).Scan(&mine); err != nil {
		return err
	}
	if want := rounds - rounds/5; mine != want {
		return fmt.Errorf("%d committed rows, want %d", mine, want)
	}
	return nil
}

// TestPooledSessionModePsql: in session mode two psql sessions one after
// the other get the same server connection (one backend pid), and the
// reset query (DISCARD ALL) keeps the first one's SET from the second.
func TestPooledSessionModePsql(t *testing.T) {
	needTool(t, psqlBin)
	p := startPooled(t, "session", 1, pgcluster.MD5User)
	ctx := ctxT(t, time.Minute)
	env := pgEnv(p.WriteAddr(), pgcluster.MD5User, "postgres")
	first := psql(ctx, env, "", "-c", "SET statement_timeout = '4321s'", "-c", "SELECT pg_backend_pid() || ' ' || current_setting('statement_timeout')")
	if first.err != nil {
		t.Fatalf("first session: %s", first)
	}
	second := psql(ctx, env, "", "-c", "SELECT pg_backend_pid() || ' ' || current_setting('statement_timeout')")
	if second.err != nil {
		t.Fatalf("second session: %s", second)
	}
	pid1, set1, _ := strings.Cut(strings.TrimSpace(first.stdout), " ")
	pid2, set2, _ := strings.Cut(strings.TrimSpace(second.stdout), " ")
	if set1 != "4321s" {
		t.Fatalf("first session: statement_timeout = %q, want 4321s", set1)
	}
	if pid1 == "" || pid1 != pid2 {
		t.Errorf("backend pids %q and %q: the sessions did not share the server connection", pid1, pid2)
	}
	if set2 != "0" {
		t.Errorf("second session sees statement_timeout = %q, want 0 (the first one's SET leaked)", set2)
	}
}

// barrier lets n goroutines wait for each other once: each calls arrive
// once, then wait.
type barrier struct {
	mu   sync.Mutex
	left int
	all  chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{left: n, all: make(chan struct{})} }

func (b *barrier) arrive() {
	b.mu.Lock()
	b.left--
	if b.left == 0 {
		close(b.all)
	}
	b.mu.Unlock()
}

// wait waits (at most d) until all have arrived.
func (b *barrier) wait(d time.Duration) error {
	select {
	case <-b.all:
		return nil
	case <-time.After(d):
		return fmt.Errorf("not every client reached the barrier within %v", d)
	}
}

// noPins fails t when the proxy pinned any transaction-mode client.
func noPins(t *testing.T, p *proxytest.Proxy) {
	t.Helper()
	_, metrics := p.Get(t, "/metrics")
	if pins := grepLines(metrics, "pgproxy_pool_pins_total{"); pins != "" {
		t.Errorf("clients were pinned to their servers:\n%s", pins)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
