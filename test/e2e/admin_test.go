package e2e

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// psql runs one command through the proxy and returns stdout, stderr. The
// password is PGPASSWORD of env; in a pooled run it defaults to the one the
// harness knows for user.
func psql(t *testing.T, addr, user, db, command string, env ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1",
		"postgres://"+user+"@"+addr+"/"+db+"?sslmode=disable", "-c", command)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if pw := proxytest.Password(user); pw != "" && proxytest.PoolMode() != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+pw)
	}
	cmd.Env = append(cmd.Env, env...) // a later PGPASSWORD wins
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func TestAdminConsoleThroughPsql(t *testing.T) {
	reset(t)
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatalf("psql is required: %v", err)
	}
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "admin:\n  users: [postgres, scram_user]\n"})
	out, _, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "SHOW BACKENDS")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cluster.Nodes() {
		if !strings.Contains(out, n.Addr()) {
			t.Errorf("SHOW BACKENDS lacks %s:\n%s", n.Addr(), out)
		}
	}
	if !strings.Contains(out, "primary") || !strings.Contains(out, "replica") {
		t.Errorf("SHOW BACKENDS without roles:\n%s", out)
	}
	// Password authentication happens at the primary, then the console answers.
	out, _, err = psql(t, p.ReadAddr(), pgcluster.ScramUser, "pgproxy", "SHOW CONFIG", "PGPASSWORD="+pgcluster.ScramPassword)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, pgcluster.MonitorPassword) || !strings.Contains(out, "routing.max_lag") && !strings.Contains(out, "max_lag") {
		t.Errorf("SHOW CONFIG leaks a secret or lacks keys:\n%s", out)
	}
	if _, errOut, err := psql(t, p.WriteAddr(), pgcluster.ScramUser, "pgproxy", "SHOW CONFIG", "PGPASSWORD=wrong"); err == nil || !strings.Contains(errOut, "password authentication failed") {
		t.Errorf("wrong password: err=%v %s", err, errOut)
	}
	if _, errOut, err := psql(t, p.WriteAddr(), pgcluster.MD5User, "pgproxy", "SHOW BACKENDS", "PGPASSWORD="+pgcluster.MD5Password); err == nil || !strings.Contains(errOut, "not allowed") {
		t.Errorf("non-admin user: err=%v %s", err, errOut)
	}
	if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "SHOW NONSENSE"); err == nil || !strings.Contains(errOut, "ERROR") {
		t.Errorf("unknown command: err=%v %s", err, errOut)
	}
	for _, cmd := range []string{"SHOW SESSIONS", "SHOW ROUTES"} {
		if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", cmd); err != nil {
			t.Errorf("%s: %v %s", cmd, err, errOut)
		}
	}
	// PAUSE a replica: new read sessions avoid it; RESUME brings it back.
	r1, r2 := cluster.Replicas()[0], cluster.Replicas()[1]
	if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "PAUSE "+r1.Addr()); err != nil {
		t.Fatal(err, errOut)
	}
	if ports := readPorts(t, p.ReadAddr(), 8); ports[r1.Port] != 0 || ports[r2.Port] != 8 {
		t.Fatalf("after PAUSE %s: %v", r1.Addr(), ports)
	}
	if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "RESUME "+r1.Addr()); err != nil {
		t.Fatal(err, errOut)
	}
	if ports := readPorts(t, p.ReadAddr(), 8); ports[r1.Port] == 0 {
		t.Fatalf("after RESUME: %v", ports)
	}
}

// TestReloadAddsReplica: a replica added by reload gets new read sessions
// while an open session stays up; an invalid reload changes nothing.
func TestReloadAddsReplica(t *testing.T) {
	reset(t)
	r1, r2 := cluster.Replicas()[0], cluster.Replicas()[1]
	p := proxytest.Start(t, cluster, &proxytest.Options{Mutate: func(c *configs.Config) {
		c.Backends = []configs.Backend{{Addr: cluster.Primary().Addr()}, {Addr: r1.Addr()}}
	}})
	open := connect(t, proxytest.DSN(p.ReadAddr(), "postgres", "postgres"))
	if ports := readPorts(t, p.ReadAddr(), 4); ports[r2.Port] != 0 {
		t.Fatalf("unconfigured replica got sessions: %v", ports)
	}
	// Invalid reload: rejected, routing unchanged.
	p.App.SetReloader(func() (*configs.Config, error) {
		return nil, errors.New(`config: routing.fallback: must be "primary" or "reject"`)
	})
	if err := p.App.ReloadFromSource(); err == nil {
		t.Fatal("invalid reload accepted")
	}
	if ports := readPorts(t, p.ReadAddr(), 4); ports[r1.Port] != 4 {
		t.Fatalf("after an invalid reload: %v", ports)
	}
	next := p.Config.Clone()
	next.Backends = append(next.Backends, configs.Backend{Addr: r2.Addr()})
	p.App.SetReloader(func() (*configs.Config, error) { return next, nil })
	if err := p.App.ReloadFromSource(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ports := readPorts(t, p.ReadAddr(), 4); ports[r2.Port] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the added replica never got a read session")
		}
	}
	var one int
	if err := open.QueryRow(ctxT(t, 5*time.Second), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("the session open across the reload broke: %v", err)
	}
}

// TestFailedLoginLoggedWithClientAddress: the backend sees only the proxy's
// address, so the proxy logs who failed to log in, without the password.
func TestFailedLoginLoggedWithClientAddress(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, nil)
	_, _, err := psql(t, p.WriteAddr(), pgcluster.ScramUser, "postgres", "SELECT 1", "PGPASSWORD=wrong-Secret-1")
	if err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range p.Logs.FilterMessage("client login failed").All() {
			f := e.ContextMap()
			if f["user"] != pgcluster.ScramUser || f["sqlstate"] != "28P01" || !strings.HasPrefix(f["client_addr"].(string), "127.0.0.1:") {
				t.Fatalf("log fields = %v", f)
			}
			for _, v := range f {
				if s, ok := v.(string); ok && strings.Contains(s, "wrong-Secret-1") {
					t.Fatalf("password logged: %v", f)
				}
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(`no "client login failed" log line`)
}

// TestPausePrimaryKeepsTheConsole: PAUSE of the primary must not lock the
// operator out of the console it takes to RESUME it; a write session is
// refused with a message that says the primary is paused; both are logged.
func TestPausePrimaryKeepsTheConsole(t *testing.T) {
	reset(t)
	p := proxytest.Start(t, cluster, &proxytest.Options{YAML: "admin:\n  users: [postgres]\n"})
	primary := cluster.Primary().Addr()
	if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "PAUSE "+primary); err != nil {
		t.Fatalf("PAUSE: %v %s", err, errOut)
	}
	_, errOut, err := psql(t, p.WriteAddr(), "postgres", "postgres", "SELECT 1")
	if err == nil || !strings.Contains(errOut, primary+" paused") || strings.Contains(errOut, "connection failed") {
		t.Errorf("write session while the primary is paused: err=%v %s", err, errOut)
	}
	out, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "SHOW BACKENDS")
	if err != nil {
		t.Fatalf("console unreachable while the primary is paused: %v %s", err, errOut)
	}
	if !strings.Contains(out, primary) {
		t.Errorf("SHOW BACKENDS: %s", out)
	}
	if _, st := p.Get(t, "/status"); !strings.Contains(st, `"paused": true`) {
		t.Errorf("/status does not show the pause: %s", st)
	}
	if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "pgproxy", "RESUME "+primary); err != nil {
		t.Fatalf("RESUME: %v %s", err, errOut)
	}
	if _, errOut, err := psql(t, p.WriteAddr(), "postgres", "postgres", "SELECT 1"); err != nil {
		t.Errorf("write session after RESUME: %v %s", err, errOut)
	}
	if len(p.Logs.FilterMessage("backend paused: no new sessions until RESUME").All()) != 1 ||
		len(p.Logs.FilterMessage("backend resumed").All()) != 1 {
		t.Error("PAUSE/RESUME not logged")
	}
}
