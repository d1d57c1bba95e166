package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/ofitec/pgproxy/test/pgcluster"
)

func main() {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 1})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	yaml := fmt.Sprintf("listen:\n  - addr: 127.0.0.1:25432\n    route: read\nbackends:\n  - addr: %s\n  - addr: %s\nhealth:\n  user: pgproxy_monitor\nbackend_tls: disable\nlog:\n  level: %s\nhttp:\n  addr: 127.0.0.1:25999\n", c.Addrs()[0], c.Addrs()[1], os.Getenv("LVL"))
	os.WriteFile("/tmp/probe.yaml", []byte(yaml), 0o644)
	cmd := exec.Command("/tmp/benchbin/pgproxy", "serve", "--config", "/tmp/probe.yaml")
	cmd.Env = append(os.Environ(), "PGPROXY_HEALTH_PASSWORD=monitor_pass")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Start()
	defer cmd.Process.Kill()
	time.Sleep(3 * time.Second)
	exec.Command("/usr/lib/postgresql/15/bin/pgbench", "-i", "-s", "1", "-h", "127.0.0.1", "-p", fmt.Sprint(c.Primary().Port), "-U", "postgres", "postgres").Run()
	c.WaitReplicasCaughtUp(ctx)
	fmt.Println("REPLICA", c.Replicas()[0].Port)
	time.Sleep(90 * time.Second)
	for _, port := range []int{c.Replicas()[0].Port, 25432, c.Replicas()[0].Port, 25432} {
		var ds []time.Duration
		for i := 0; i < 100; i++ {
			t0 := time.Now()
			conn, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
			if err != nil {
				fmt.Println(err)
				continue
			}
			t1 := time.Now()
			conn.Exec(ctx, "SELECT 1").ReadAll()
			conn.Close(ctx)
			ds = append(ds, t1.Sub(t0))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Printf("port %d: connect p10 %s p50 %s p90 %s max %s\n", port, ds[10], ds[50], ds[90], ds[len(ds)-1])
	}
}
