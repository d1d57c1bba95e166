// Package pgcluster starts a real PostgreSQL primary with N streaming replicas
// from the machine's PostgreSQL binaries, for integration tests and
// `pgproxy demo`.
//
// Every cluster lives in its own temp directory on free loopback ports. When
// the process runs as root the server binaries run as the `postgres` OS user
// (initdb refuses root). A small watchdog process stops the servers and
// removes the directory if the owning process dies without calling Close (a
// test timeout, a panic, kill -9), so no test leaves a cluster behind.
//
// A Cluster is safe for concurrent use by the tests of one package; its
// topology helpers (Stop, Promote, ...) change shared state, so tests that
// use them should run serially or start their own cluster.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Roles the harness creates on every cluster, for authentication tests and
// the health monitor.
const (
	MD5User         = "md5_user"
	MD5Password     = "md5_pass"
	ScramUser       = "scram_user"
	ScramPassword   = "scram_pass"
	MonitorUser     = "pgproxy_monitor"
	MonitorPassword = "monitor_pass"
)

// Options configure a cluster. The zero value is a primary with 2 replicas.
type Options struct {
	// Replicas is the number of streaming replicas (default 2; -1 for none).
	Replicas int
	// MaxConnections per server (default 200).
	MaxConnections int
	// ExtraConf lines are appended to every server's postgresql.conf.
	ExtraConf []string
	// BinDir holds initdb, pg_ctl, pg_basebackup (default: $PGPROXY_PG_BIN,
	// then /usr/lib/postgresql/15/bin, then the directory of `postgres` on PATH).
	BinDir string
	// Logf receives progress lines (default: none).
	Logf func(format string, args ...any)
}

// Cluster is a running primary + replicas.
type Cluster struct {
	base     string
	bin      string
	asPG     bool
	logf     func(string, ...any)
	nodes    []*Node
	watchdog *exec.Cmd
	closeMu  sync.Mutex
	closed   bool
}

// Node is one PostgreSQL server of the cluster.
type Node struct {
	Name    string
	Port    int
	DataDir string
	LogFile string
	c       *Cluster
}

// Start initialises and starts a primary and opts.Replicas streaming replicas.
// On error everything started so far is stopped and removed.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Replicas == 0 {
		opts.Replicas = 2
	} else if opts.Replicas < 0 {
		opts.Replicas = 0
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 200
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	bin, err := findBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	cleanupStale()
	base, err := os.MkdirTemp("", fmt.Sprintf("pgproxy-pgc-%d-", os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("pgcluster: temp dir: %w", err)
	}
	cl := &Cluster{base: base, bin: bin, asPG: os.Geteuid() == 0, logf: opts.Logf}
	c = cl
	defer func() {
		if err != nil {
			_ = cl.Close() // c itself is nil here: every error path returns nil, err
			c = nil
		}
	}()
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	if c.asPG {
		if err := chownPostgres(base); err != nil {
			return nil, err
		}
	}
	if err := c.startWatchdog(); err != nil {
		return nil, err
	}
	ports, err := freePorts(1 + opts.Replicas)
	if err != nil {
		return nil, err
	}

	p := &Node{Name: "pg0", Port: ports[0], DataDir: filepath.Join(base, "pg0"), LogFile: filepath.Join(base, "pg0.log"), c: c}
	c.nodes = append(c.nodes, p)
	pwfile := filepath.Join(base, "pwfile")
	if err := os.WriteFile(pwfile, []byte("postgres\n"), 0o644); err != nil {
		return nil, err
	}
	if _, err := c.run(ctx, "initdb", "-D", p.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "-N"); err != nil {
		return nil, err
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + base + "'",
		"wal_level = replica",
		"max_wal_senders = 10",
		"wal_keep_size = '256MB'",
		"hot_standby = on",
		"max_connections = " + strconv.Itoa(opts.MaxConnections),
		"shared_buffers = '32MB'",
		"fsync = off",
		"full_page_writes = off",
		"wal_receiver_status_interval = '1s'",
		"log_min_messages = warning",
		"log_line_prefix = '%m [%p] %q%u@%d '",
	}
	conf = append(conf, opts.ExtraConf...)
	if err := appendFile(filepath.Join(p.DataDir, "postgresql.conf"), strings.Join(conf, "\n")+"\nport = "+strconv.Itoa(p.Port)+"\n"); err != nil {
		return nil, err
	}
	hba := strings.Join([]string{
		"# pgcluster test harness",
		"local all all trust",
		"host all " + ScramUser + " 127.0.0.1/32 scram-sha-256",
		"host all " + MD5User + " 127.0.0.1/32 md5",
		"host all " + MonitorUser + " 127.0.0.1/32 scram-sha-256",
		"host all all 127.0.0.1/32 trust",
		"host replication all 127.0.0.1/32 trust",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return nil, err
	}
	if c.asPG {
		if err := chownPostgres(filepath.Join(p.DataDir, "pg_hba.conf")); err != nil {
			return nil, err
		}
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	setup := []string{
		// One Exec per element, each on a connection of its own: the SET
		// must share one with its CREATE ROLE.
		"SET password_encryption = 'md5'; CREATE ROLE " + MD5User + " LOGIN SUPERUSER PASSWORD '" + MD5Password + "'",
		"CREATE ROLE " + ScramUser + " LOGIN SUPERUSER PASSWORD '" + ScramPassword + "'",
		"CREATE ROLE " + MonitorUser + " LOGIN PASSWORD '" + MonitorPassword + "'",
		"GRANT pg_monitor TO " + MonitorUser,
	}
	for _, q := range setup {
		if err := p.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("pgcluster: setup %q: %w", q, err)
		}
	}
	for i := 1; i <= opts.Replicas; i++ {
		r := &Node{Name: fmt.Sprintf("pg%d", i), Port: ports[i], DataDir: filepath.Join(base, fmt.Sprintf("pg%d", i)), LogFile: filepath.Join(base, fmt.Sprintf("pg%d.log", i)), c: c}
		c.nodes = append(c.nodes, r)
		if _, err := c.run(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres", "-D", r.DataDir, "-R", "-X", "stream", "-c", "fast"); err != nil {
			return nil, err
		}
		if err := appendFile(filepath.Join(r.DataDir, "postgresql.conf"), "port = "+strconv.Itoa(r.Port)+"\n"); err != nil {
			return nil, err
		}
		if err := r.Start(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.WaitReplicasCaughtUp(ctx); err != nil {
		return nil, err
	}
	c.logf("pgcluster: primary %s, replicas %v in %s", p.Addr(), c.replicaAddrs(), base)
	return c, nil
}

func (c *Cluster) replicaAddrs() []string {
	var out []string
	for _, r := range c.Replicas() {
		out = append(out, r.Addr())
	}
	return out
}

// Dir is the cluster's temp directory (data dirs, logs, unix sockets).
func (c *Cluster) Dir() string { return c.base }

// Primary is the node started as primary (it stays so unless a test promotes another).
func (c *Cluster) Primary() *Node { return c.nodes[0] }

// Replicas are the nodes started as streaming replicas.
func (c *Cluster) Replicas() []*Node { return c.nodes[1:] }

// Nodes are all servers, primary first.
func (c *Cluster) Nodes() []*Node { return c.nodes }

// Addrs are the host:port of every node, primary first.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Close stops every server and removes the cluster directory. Safe to call twice.
func (c *Cluster) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, n := range c.nodes {
		if n.running() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := n.Stop(ctx, "immediate"); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
	}
	if c.watchdog != nil && c.watchdog.Process != nil {
		_ = c.watchdog.Process.Kill()
		_ = c.watchdog.Wait()
	}
	if err := os.RemoveAll(c.base); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Addr is "127.0.0.1:port".
func (n *Node) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.Port)) }

// DSN connects as the superuser postgres (trust) to db.
func (n *Node) DSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", n.Port, db)
}

// Connect opens a pgx connection as postgres to database postgres.
func (n *Node) Connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, n.DSN("postgres"))
}

// Exec runs sql on database postgres of n in a fresh connection.
func (n *Node) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := n.Connect(ctx)
	if err != nil {
		return fmt.Errorf("pgcluster: %s: %w", n.Name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", n.Name, err)
	}
	return nil
}

// QueryRow runs sql and scans the single result row into dest.
func (n *Node) QueryRow(ctx context.Context, sql string, dest ...any) error {
	conn, err := n.Connect(ctx)
	if err != nil {
		return fmt.Errorf("pgcluster: %s: %w", n.Name, err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		return fmt.Errorf("pgcluster: %s: %w", n.Name, err)
	}
	return nil
}

// InRecovery reports pg_is_in_recovery().
func (n *Node) InRecovery(ctx context.Context) (bool, error) {
	var b bool
	err := n.QueryRow(ctx, "SELECT pg_is_in_recovery()", &b)
	return b, err
}

// PauseReplay pauses WAL replay on a replica (WAL is still received).
func (n *Node) PauseReplay(ctx context.Context) error {
	return n.Exec(ctx, "SELECT pg_wal_replay_pause()")
}

// ResumeReplay resumes WAL replay on a replica.
func (n *Node) ResumeReplay(ctx context.Context) error {
	return n.Exec(ctx, "SELECT pg_wal_replay_resume()")
}

// Start starts the server and waits until it accepts connections.
func (n *Node) Start(ctx context.Context) error {
	_, err := n.c.run(ctx, "pg_ctl", "-D", n.DataDir, "-l", n.LogFile, "-w", "-t", "60", "start")
	return err
}

// Stop stops the server with mode "smart", "fast" or "immediate".
func (n *Node) Stop(ctx context.Context, mode string) error {
	_, err := n.c.run(ctx, "pg_ctl", "-D", n.DataDir, "-m", mode, "-w", "-t", "60", "stop")
	return err
}

// Kill sends SIGKILL to the postmaster (its children exit on their own once
// they notice). Start works again once they have gone.
func (n *Node) Kill() error {
	pid, err := n.postmasterPID()
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("pgcluster: kill %s: %w", n.Name, err)
	}
	for i := 0; i < 100 && processAlive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Promote promotes a replica and waits until it accepts writes.
func (n *Node) Promote(ctx context.Context) error {
	_, err := n.c.run(ctx, "pg_ctl", "-D", n.DataDir, "-w", "-t", "60", "promote")
	return err
}

// Log returns the server log so far (for failure messages).
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogFile)
	return string(b)
}

func (n *Node) postmasterPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("pgcluster: %s not running: %w", n.Name, err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strconv.Atoi(strings.TrimSpace(string(line)))
}

func (n *Node) running() bool {
	pid, err := n.postmasterPID()
	return err == nil && processAlive(pid)
}

// GenerateWAL writes about size bytes of WAL on the primary.
func (c *Cluster) GenerateWAL(ctx context.Context, size int) error {
	rows := size/1100 + 1
	return c.Primary().Exec(ctx, fmt.Sprintf(
		"CREATE TABLE IF NOT EXISTS pgc_wal_filler(x text); INSERT INTO pgc_wal_filler SELECT repeat('x', 1000) FROM generate_series(1, %d)", rows))
}

// WaitReplicasCaughtUp waits until every running replica of the node that is
// currently primary has replayed the primary's current WAL position.
func (c *Cluster) WaitReplicasCaughtUp(ctx context.Context) error {
	var primary *Node
	for _, n := range c.nodes {
		if !n.running() {
			continue
		}
		if rec, err := n.InRecovery(ctx); err == nil && !rec {
			primary = n
			break
		}
	}
	if primary == nil {
		return errors.New("pgcluster: no running primary")
	}
	var target string
	if err := primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text", &target); err != nil {
		return err
	}
	for _, n := range c.nodes {
		if n == primary || !n.running() {
			continue
		}
		for {
			var caught bool
			err := n.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn() >= '"+target+"'::pg_lsn, false)", &caught)
			if err == nil && caught {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("pgcluster: %s did not catch up to %s: %w", n.Name, target, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// Reset brings the cluster back to its starting shape for the next test:
// every node running, replay resumed on replicas, replicas caught up.
// It does not undo a promotion (tests that promote start their own cluster).
func (c *Cluster) Reset(ctx context.Context) error {
	for _, n := range c.nodes {
		if !n.running() {
			if err := n.Start(ctx); err != nil {
				return err
			}
		}
	}
	for _, n := range c.Replicas() {
		if rec, err := n.InRecovery(ctx); err == nil && rec {
			if err := n.ResumeReplay(ctx); err != nil {
				return err
			}
		}
	}
	return c.WaitReplicasCaughtUp(ctx)
}

func (c *Cluster) run(ctx context.Context, tool string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, tool)
	var cmd *exec.Cmd
	if c.asPG {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.base
	// pg_ctl start leaves the postmaster running: keep it out of our process
	// group so a Ctrl-C to `pgproxy demo` reaches us first and we stop it cleanly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// pg_ctl's postmaster inherits stdout; do not wait for it to close.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return out.Bytes(), fmt.Errorf("pgcluster: %s %s: %w\n%s", tool, strings.Join(args, " "), err, out.String())
	}
	return out.Bytes(), nil
}

// startWatchdog starts a shell that waits for this process to exit and then
// stops every server under base and removes it. Close kills it first.
func (c *Cluster) startWatchdog() error {
	stop := fmt.Sprintf(`for d in %q/pg*/; do [ -f "$d/postmaster.pid" ] && %s %q -D "$d" -m immediate stop >/dev/null 2>&1; done; rm -rf %q`,
		c.base, c.pgctlPrefix(), filepath.Join(c.bin, "pg_ctl"), c.base)
	script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 1; done; %s`, os.Getpid(), stop)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgcluster: watchdog: %w", err)
	}
	c.watchdog = cmd
	return nil
}

func (c *Cluster) pgctlPrefix() string {
	if c.asPG {
		return "runuser -u postgres --"
	}
	return ""
}

// cleanupStale removes clusters left by processes that no longer exist (when
// even the watchdog could not run, e.g. the machine rebooted mid-test).
func cleanupStale() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgproxy-pgc-*"))
	for _, dir := range matches {
		parts := strings.SplitN(filepath.Base(dir), "-", 4)
		if len(parts) < 4 {
			continue
		}
		pid, err := strconv.Atoi(parts[2])
		if err != nil || processAlive(pid) {
			continue
		}
		nodes, _ := filepath.Glob(filepath.Join(dir, "pg*", "postmaster.pid"))
		for _, pidfile := range nodes {
			b, err := os.ReadFile(pidfile)
			if err != nil {
				continue
			}
			line, _, _ := bytes.Cut(b, []byte("\n"))
			if p, err := strconv.Atoi(strings.TrimSpace(string(line))); err == nil && processAlive(p) {
				_ = syscall.Kill(p, syscall.SIGQUIT)
			}
		}
		_ = os.RemoveAll(dir)
	}
}

func findBinDir(dir string) (string, error) {
	cands := []string{dir, os.Getenv("PGPROXY_PG_BIN"), "/usr/lib/postgresql/15/bin"}
	if p, err := exec.LookPath("postgres"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			cands = append(cands, filepath.Dir(r))
		}
	}
	for _, d := range cands {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("pgcluster: PostgreSQL server binaries not found (install postgresql-15 or set PGPROXY_PG_BIN)")
}

func chownPostgres(path string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("pgcluster: running as root needs the postgres OS user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pgcluster: free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	p, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
