package pgcluster

import (
	"context"
	"os"
	"testing"
	"time"
)

var cluster *Cluster

func TestMain(m *testing.M) { os.Exit(Main(m, Options{Replicas: 2}, &cluster)) }

func TestClusterReplicates(t *testing.T) {
	Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if rec, err := cluster.Primary().InRecovery(ctx); err != nil || rec {
		t.Fatalf("primary in recovery=%v err=%v", rec, err)
	}
	if err := cluster.Primary().Exec(ctx, "CREATE TABLE IF NOT EXISTS t_repl(v int); INSERT INTO t_repl VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicasCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range cluster.Replicas() {
		rec, err := r.InRecovery(ctx)
		if err != nil || !rec {
			t.Fatalf("%s in recovery=%v err=%v", r.Name, rec, err)
		}
		var v int
		if err := r.QueryRow(ctx, "SELECT max(v) FROM t_repl", &v); err != nil || v != 42 {
			t.Fatalf("%s: v=%d err=%v", r.Name, v, err)
		}
	}
}

func TestPauseReplayMakesLag(t *testing.T) {
	Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := cluster.Replicas()[0]
	if err := r.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.GenerateWAL(ctx, 1<<20); err != nil {
		t.Fatal(err)
	}
	short, c2 := context.WithTimeout(ctx, 2*time.Second)
	err := cluster.WaitReplicasCaughtUp(short)
	c2()
	if err == nil {
		t.Fatal("paused replica caught up")
	}
	if err := cluster.Reset(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKillAndRestart(t *testing.T) {
	Require(t, cluster)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := cluster.Replicas()[1]
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.InRecovery(ctx); err == nil {
		t.Fatal("killed replica still answers")
	}
	if err := cluster.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if rec, err := r.InRecovery(ctx); err != nil || !rec {
		t.Fatalf("restarted replica: rec=%v err=%v", rec, err)
	}
}
